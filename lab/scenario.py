"""Lab scenarios: the YAML file that describes a network, its flows and its period.

The format is fixed by DESIGN.md ("The local lab")::

    period: 2                       # alternate-marking period, seconds
    nodes: [r1, r2, r3, r4]
    links: [[r1, r2], [r2, r3], [r3, r4], [r1, r4]]
    flows:
      - name: f1
        from: r1                    # ingress: encapsulates with the segment list
        to: r4                      # egress: decapsulates
        via: [r2, r3]               # segment list as node names (their SIDs)
        rate: 500                   # test packets per second

:func:`load` parses and validates a file completely before anything is built:
every problem is reported as one :class:`ScenarioError` whose message names
the file, the field and what is wrong, for example
``example.yaml: flows[1].via[0]: unknown node 'r9' (nodes: r1, r2, r3, r4)``.
Unknown keys are errors too, so that a misspelt option is never silently ignored.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srv6pm import yamlfile


__all__ = ["Flow", "Link", "Scenario", "ScenarioError", "StampSession", "load", "parse"]

# Node names become network-namespace names and, inside the neighbour's
# namespace, interface names, which Linux limits to 15 bytes.
_NODE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,14}$")
_FLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RESERVED_NODE_NAMES = {"lo", "host", "all", "default"}

MAX_RATE = 100_000  # test packets per second per flow
MAX_STAMP_RATE = 1000  # STAMP test packets per second per session
MAX_DELAY_MS = 10_000
MIN_PERIOD = 0.5
MAX_PERIOD = 3600.0
MAX_NODES = 64
MAX_SEGMENTS = 16


class ScenarioError(ValueError):
    """A scenario file is unreadable or invalid; ``str()`` is a one-line message."""


@dataclass(frozen=True)
class Link:
    """An undirected link between two distinct nodes; ``delay_ms`` is added in each direction."""

    a: str
    b: str
    delay_ms: float = 0.0


@dataclass(frozen=True)
class Flow:
    """A monitored SRv6 flow: ``src`` encapsulates with ``via`` + ``dst``, ``dst`` decapsulates."""

    name: str
    src: str
    dst: str
    via: tuple[str, ...]
    rate: float  # test packets per second

    @property
    def segments(self) -> tuple[str, ...]:
        """The nodes whose SIDs form the segment list, the egress last."""
        return (*self.via, self.dst)


@dataclass(frozen=True)
class StampSession:
    """A STAMP session: ``src`` sends along ``via`` to ``dst``, which reflects along ``return_via``."""

    name: str
    src: str
    dst: str
    via: tuple[str, ...]
    return_via: tuple[str, ...]
    rate: float  # test packets per second


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. ``source`` is the file it came from (for messages)."""

    source: str
    period: float
    nodes: tuple[str, ...]
    links: tuple[Link, ...]
    flows: tuple[Flow, ...]
    stamp: tuple[StampSession, ...] = ()

    def neighbours(self, node: str) -> list[str]:
        """The nodes linked to ``node``, in link order."""
        out = []
        for link in self.links:
            if link.a == node:
                out.append(link.b)
            elif link.b == node:
                out.append(link.a)
        return out


def load(path: str | Path) -> Scenario:
    """Read and validate the scenario file at ``path``."""
    return parse(yamlfile.read(path, ScenarioError), source=str(path))


def parse(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate scenario YAML ``text``; ``source`` names it in errors."""
    return _Validator(source).scenario(yamlfile.parse(text, source, ScenarioError))


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, message: str) -> ScenarioError:
        prefix = f"{self.source}: {field}: " if field else f"{self.source}: "
        return ScenarioError(prefix + message)

    def mapping(self, value: Any, field: str, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, f"must be a mapping, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                where = f"{field}." if field else ""
                raise self.fail(f"{where}{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required):
            if key not in value:
                where = f"{field}." if field else ""
                raise self.fail(f"{where}{key}", "missing")
        return value

    def number(self, value: Any, field: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(field, f"must be a number, got {_kind(value)}")
        if not low <= value <= high:
            raise self.fail(field, f"must be between {low:g} and {high:g}, got {value:g}")
        return float(value)

    def node_ref(self, value: Any, field: str, nodes: tuple[str, ...]) -> str:
        if not isinstance(value, str):
            raise self.fail(field, f"must be a node name, got {_kind(value)}")
        if value not in nodes:
            raise self.fail(field, f"unknown node {value!r} (nodes: {', '.join(nodes)})")
        return value

    def scenario(self, doc: Any) -> Scenario:
        if doc is None:
            raise self.fail("", "empty file")
        doc = self.mapping(doc, "", {"period", "nodes", "links", "flows", "stamp"},
                           {"period", "nodes", "links", "flows"})
        period = self.number(doc["period"], "period", MIN_PERIOD, MAX_PERIOD)
        nodes = self.nodes(doc["nodes"])
        links = self.links(doc["links"], nodes)
        flows = self.flows(doc["flows"], nodes, links)
        stamp = self.stamp(doc.get("stamp", []), nodes, links)
        return Scenario(self.source, period, nodes, links, flows, stamp)

    def nodes(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail("nodes", "must be a non-empty list of node names")
        if len(value) > MAX_NODES:
            raise self.fail("nodes", f"at most {MAX_NODES} nodes, got {len(value)}")
        seen: list[str] = []
        for i, name in enumerate(value):
            field = f"nodes[{i}]"
            if not isinstance(name, str) or not _NODE_NAME.match(name):
                raise self.fail(field, f"{name!r} is not a valid node name "
                                "(lower-case letter, then up to 14 of a-z, 0-9, _)")
            if name in _RESERVED_NODE_NAMES:
                raise self.fail(field, f"{name!r} is reserved")
            if name in seen:
                raise self.fail(field, f"duplicate node {name!r}")
            seen.append(name)
        return tuple(seen)

    def links(self, value: Any, nodes: tuple[str, ...]) -> tuple[Link, ...]:
        if not isinstance(value, list):
            raise self.fail("links", f"must be a list of [node, node] pairs, got {_kind(value)}")
        links: list[Link] = []
        seen: set[frozenset[str]] = set()
        for i, item in enumerate(value):
            field = f"links[{i}]"
            delay_ms = 0.0
            ends_field = field
            if isinstance(item, dict):
                item = self.mapping(item, field, {"ends", "delay_ms"}, {"ends"})
                if "delay_ms" in item:
                    delay_ms = self.number(item["delay_ms"], f"{field}.delay_ms", 0, MAX_DELAY_MS)
                ends_field = f"{field}.ends"
                item = item["ends"]
            if not isinstance(item, list) or len(item) != 2:
                raise self.fail(ends_field, "must be a pair [node, node] (or {ends: [node, node], delay_ms: N})")
            a = self.node_ref(item[0], f"{ends_field}[0]", nodes)
            b = self.node_ref(item[1], f"{ends_field}[1]", nodes)
            if a == b:
                raise self.fail(field, f"links {a!r} to itself")
            if frozenset((a, b)) in seen:
                raise self.fail(field, f"duplicate link between {a!r} and {b!r}")
            seen.add(frozenset((a, b)))
            links.append(Link(a, b, delay_ms))
        return tuple(links)

    def flows(self, value: Any, nodes: tuple[str, ...], links: tuple[Link, ...]) -> tuple[Flow, ...]:
        if not isinstance(value, list):
            raise self.fail("flows", f"must be a list, got {_kind(value)}")
        adjacency = _adjacency(nodes, links)
        flows: list[Flow] = []
        names: set[str] = set()
        for i, item in enumerate(value):
            field = f"flows[{i}]"
            item = self.mapping(item, field, {"name", "from", "to", "via", "rate"}, {"name", "from", "to", "rate"})
            name, src, dst = self.endpoints(item, field, "flow", names, nodes)
            via = self.path(item.get("via", []), f"{field}.via", src, dst, nodes, adjacency)
            rate = self.number(item["rate"], f"{field}.rate", 0.001, MAX_RATE)
            flows.append(Flow(name, src, dst, via, rate))
        return tuple(flows)

    def endpoints(self, item: dict, field: str, kind: str, names: set[str],
                  nodes: tuple[str, ...]) -> tuple[str, str, str]:
        """The unique ``name`` and the distinct ``from`` and ``to`` nodes of a flow or session."""
        name = item["name"]
        if not isinstance(name, str) or not _FLOW_NAME.match(name):
            raise self.fail(f"{field}.name", f"{name!r} is not a valid {kind} name "
                            "(letters, digits, '_', '.', '-'; at most 64)")
        if name in names:
            raise self.fail(f"{field}.name", f"duplicate {kind} name {name!r}")
        names.add(name)
        src = self.node_ref(item["from"], f"{field}.from", nodes)
        dst = self.node_ref(item["to"], f"{field}.to", nodes)
        if src == dst:
            raise self.fail(f"{field}.to", f"same node as 'from' ({src!r})")
        return name, src, dst

    def path(self, value: Any, field: str, src: str, dst: str, nodes: tuple[str, ...],
             adjacency: dict[str, set[str]]) -> tuple[str, ...]:
        """A segment list of node names from ``src`` to ``dst``, each hop reachable over the links."""
        if not isinstance(value, list):
            raise self.fail(field, f"must be a list of node names, got {_kind(value)}")
        if len(value) + 1 > MAX_SEGMENTS:
            raise self.fail(field, f"at most {MAX_SEGMENTS - 1} segments")
        via = tuple(self.node_ref(v, f"{field}[{j}]", nodes) for j, v in enumerate(value))
        hops = (src, *via, dst)
        for j in range(len(hops) - 1):
            if hops[j] == hops[j + 1]:
                raise self.fail(field, f"node {hops[j]!r} follows itself in the path")
            if not _reachable(adjacency, hops[j], hops[j + 1]):
                raise self.fail(field, f"no path from {hops[j]!r} to {hops[j + 1]!r} over the links")
        return via

    def stamp(self, value: Any, nodes: tuple[str, ...], links: tuple[Link, ...]) -> tuple[StampSession, ...]:
        if not isinstance(value, list):
            raise self.fail("stamp", f"must be a list, got {_kind(value)}")
        adjacency = _adjacency(nodes, links)
        sessions: list[StampSession] = []
        names: set[str] = set()
        for i, item in enumerate(value):
            field = f"stamp[{i}]"
            item = self.mapping(item, field, {"name", "from", "to", "via", "return_via", "rate"},
                                {"name", "from", "to", "rate"})
            name, src, dst = self.endpoints(item, field, "session", names, nodes)
            via = self.path(item.get("via", []), f"{field}.via", src, dst, nodes, adjacency)
            return_via = self.path(item.get("return_via", []), f"{field}.return_via", dst, src, nodes, adjacency)
            rate = self.number(item["rate"], f"{field}.rate", 0.01, MAX_STAMP_RATE)
            sessions.append(StampSession(name, src, dst, via, return_via, rate))
        return tuple(sessions)


def _adjacency(nodes: tuple[str, ...], links: tuple[Link, ...]) -> dict[str, set[str]]:
    adjacency: dict[str, set[str]] = {n: set() for n in nodes}
    for link in links:
        adjacency[link.a].add(link.b)
        adjacency[link.b].add(link.a)
    return adjacency


def _reachable(adjacency: dict[str, set[str]], a: str, b: str) -> bool:
    seen = {a}
    todo = deque([a])
    while todo:
        n = todo.popleft()
        if n == b:
            return True
        for m in adjacency[n] - seen:
            seen.add(m)
            todo.append(m)
    return False


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false"}.get(type(value), type(value).__name__)
