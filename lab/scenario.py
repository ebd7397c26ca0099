"""Lab scenarios: the YAML file that describes a network, its flows and its period.

The format is fixed by DESIGN.md ("The local lab")::

    period: 2                       # alternate-marking period, seconds
    dataplane: ebpf                 # optional: ebpf (default) or nftables, for every exporter and the collector
    nodes: [r1, r2, r3, r4]
    links: [[r1, r2], [r2, r3], [r3, r4], [r1, r4]]
    flows:
      - name: f1
        from: r1                    # ingress: encapsulates with the segment list
        to: r4                      # egress: decapsulates
        via: [r2, r3]               # segment list as node names (their SIDs)
        rate: 500                   # test packets per second
        dscp: 46                    # optional: the test traffic's DSCP, 0..63 (default 0)
    stamp:                          # optional: STAMP sessions
      - name: s1
        from: r1                    # Session-Sender
        to: r4                      # Session-Reflector
        via: [r2, r3]               # forward segment list
        return_via: [r3, r2]        # backward segment list (Return Path TLV)
        rate: 10                    # test packets per second
        liveness: true              # optional: watch the path (or {down_after: N, up_after: M})
        direct_measurement: true    # optional: RFC 8972 Direct Measurement, lost packets per direction
        dscp: 46                    # optional: send with this DSCP, the Class of Service TLV asks it back
        ssid: 7                     # optional: RFC 8972 Session-Sender Identifier, 1..65535
        stop_if_ssid_ignored: true  # optional (with ssid): stop when the reflector returns SSID 0

:func:`load` parses and validates a file completely before anything is built:
every problem is reported as one :class:`ScenarioError` whose message names
the file, the field and what is wrong, for example
``example.yaml: flows[1].via[0]: unknown node 'r9' (nodes: r1, r2, r3, r4)``.
Unknown keys are errors too, so that a misspelt option is never silently ignored.
The rules shared with the collector's configuration (links, node references,
paths, STAMP sessions, the data plane) are those of :mod:`srv6pm.netspec`; a
scenario adds that node names are usable as namespace names and that every path
follows the links. The lab gives ``dataplane`` to the collector configuration it
writes and to every exporter it starts (``--dataplane``); each flow's test
traffic leaves with its ``dscp``. A session's RFC 8972 settings, named and
judged as the southbound ``StampSession`` fields (the collector
configuration's rules, :meth:`srv6pm.netspec.Validator.rfc8972`), go to the
session in the collector configuration (:mod:`srv6pm.lab.control`):
``direct_measurement`` (default false) puts the Direct Measurement TLV on its
test packets, so that its delay results say how many lost test packets were
lost forward and backward; ``dscp`` sends them with that DSCP and asks for it
back (Class of Service TLV); ``ssid`` names the session to the reflector,
``stop_if_ssid_ignored`` stops it when the reflector answers without one.
"""

from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass, fields
from pathlib import Path
from typing import Any

from srv6pm.errors import InputError
from srv6pm import netspec, yamlfile
from srv6pm.netspec import DEFAULT_DATAPLANE, MAX_SEGMENTS, Link  # noqa: F401 -- MAX_SEGMENTS re-exported
from srv6pm.quote import quote

from .traffic import MAX_DSCP


__all__ = ["Flow", "Link", "Scenario", "ScenarioError", "StampSession", "load", "parse"]

# Node names become network-namespace names and, inside the neighbour's
# namespace, interface names, which Linux limits to 15 bytes.
_NODE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,14}$")
_RESERVED_NODE_NAMES = {"lo", "host", "all", "default"}

MAX_RATE = 100_000  # test packets per second per flow
MIN_PERIOD = 0.5
MAX_PERIOD = 3600.0
MAX_NODES = 64


class ScenarioError(InputError, ValueError):
    """A scenario file is unreadable or invalid; ``str()`` is a one-line message."""


@dataclass(frozen=True)
class Flow:
    """A monitored SRv6 flow: ``src`` encapsulates with ``via`` + ``dst``, ``dst`` decapsulates."""

    name: str
    src: str
    dst: str
    via: tuple[str, ...]
    rate: float  # test packets per second
    dscp: int = 0  # the test traffic's DSCP (IPv6 traffic class = dscp << 2)

    @property
    def segments(self) -> tuple[str, ...]:
        """The nodes whose SIDs form the segment list, the egress last."""
        return (*self.via, self.dst)


@dataclass(frozen=True)
class StampSession(netspec.StampSession):
    """A scenario's STAMP session: the shared fields (:class:`srv6pm.netspec.StampSession`) and its RFC 8972
    settings (southbound fields)."""

    _: KW_ONLY
    direct_measurement: bool = False  # the Direct Measurement TLV on every test packet
    dscp: int | None = None  # send with this DSCP and ask for it back; None: not asked for
    ssid: int = 0  # the Session-Sender Identifier; 0: none
    stop_if_ssid_ignored: bool = False  # stop when the reflector answers with SSID 0

    def rfc8972(self) -> dict:
        """The settings given (not at their defaults), as the collector configuration's keys."""
        out: dict = {"direct_measurement": True} if self.direct_measurement else {}
        if self.dscp is not None:
            out["dscp"] = self.dscp
        if self.ssid:
            out["ssid"] = self.ssid
        if self.stop_if_ssid_ignored:
            out["stop_if_ssid_ignored"] = True
        return out


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. ``source`` is the file it came from (for messages)."""

    source: str
    period: float
    nodes: tuple[str, ...]
    links: tuple[Link, ...]
    flows: tuple[Flow, ...]
    stamp: tuple[StampSession, ...] = ()
    dataplane: str = DEFAULT_DATAPLANE  # the exporters' counting back-end (srv6pm.netspec.DATAPLANES)

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


class _Validator(netspec.Validator):
    """The shared network rules (:mod:`srv6pm.netspec`), raising ScenarioError; paths must follow the links."""

    def __init__(self, source: str):
        super().__init__(source, ScenarioError)

    def scenario(self, doc: Any) -> Scenario:
        if doc is None:
            raise self.fail("", "empty file")
        doc = self.mapping(doc, "", {"period", "dataplane", "nodes", "links", "flows", "stamp"},
                           {"period", "nodes", "links", "flows"})
        period = self.number(doc["period"], "period", MIN_PERIOD, MAX_PERIOD)
        dataplane = self.dataplane(doc)
        nodes = self.nodes(doc["nodes"])
        links = self.links(doc["links"], nodes)
        adjacency = netspec.adjacency(nodes, links)
        flows = self.flows(doc["flows"], nodes, adjacency, dataplane)
        stamp = self.stamp(doc.get("stamp", []), nodes, adjacency)
        return Scenario(self.source, period, nodes, links, flows, stamp, dataplane)

    def nodes(self, value: Any) -> tuple[str, ...]:
        """Node names that are also usable as namespace and interface names."""
        seen: set[str] = set()
        for i, name in enumerate(self.node_list(value, MAX_NODES, "node names")):
            field = f"nodes[{i}]"
            self.name_text(name, field, "node")
            if not isinstance(name, str) or not _NODE_NAME.match(name):
                raise self.fail(field, f"{quote(name)} is not a valid node name "
                                "(lower-case letter, then up to 14 of a-z, 0-9, _)")
            if name in _RESERVED_NODE_NAMES:
                raise self.fail(field, f"{quote(name)} is reserved")
            self.unique(name, field, seen, "node")
        return tuple(value)

    def flows(self, value: Any, nodes: tuple[str, ...], adjacency: dict[str, set[str]],
              dataplane: str) -> tuple[Flow, ...]:
        flows: list[Flow] = []
        names: set[str] = set()
        for i, item in enumerate(self.sequence(value, "flows")):
            field = f"flows[{i}]"
            item = self.mapping(item, field, {"name", "from", "to", "via", "rate", "dscp"},
                                {"name", "from", "to", "rate"})
            name, src, dst = self.endpoints(item, field, "flow", names, nodes)
            via = self.path(item.get("via", []), f"{field}.via", src, dst, nodes, adjacency)
            if dataplane == "ebpf":
                self.counted_once(src, via, dst, f"{field}.via")
            rate = self.number(item["rate"], f"{field}.rate", 0.001, MAX_RATE)
            dscp = self.integer(item.get("dscp", 0), f"{field}.dscp", 0, MAX_DSCP)
            flows.append(Flow(name, src, dst, via, rate, dscp))
        return tuple(flows)

    def stamp(self, value: Any, nodes: tuple[str, ...], adjacency: dict[str, set[str]]) -> tuple[StampSession, ...]:
        names: set[str] = set()
        sessions = []
        for i, item in enumerate(self.sequence(value, "stamp")):
            field = f"stamp[{i}]"
            shared, item = self.stamp_session(item, field, names, nodes, adjacency, more=netspec.RFC8972_SETTINGS)
            sessions.append(StampSession(**{f.name: getattr(shared, f.name) for f in fields(shared)},
                                         **self.rfc8972(item, field)))
        return tuple(sessions)
