"""The network description shared by the lab's scenarios and the collector's configuration.

A lab scenario (:mod:`srv6pm.lab.scenario`) and the collector's configuration
(:mod:`srv6pm.collector.config`) describe a network in YAML the same way:
named nodes, undirected links between them (``[a, b]`` or
``{ends: [a, b], delay_ms: N}``), and flows and STAMP sessions that go
``from`` one node ``to`` another through a ``via`` list of nodes. This module
holds what the two share: the :class:`Link` and :class:`StampSession` value
types, the limits, and :class:`Validator`, which applies the rules to a parsed
YAML document.

The rules:

* a flow, session or (collector) node name matches :data:`NAME`: a letter or
  digit, then up to 63 letters, digits, ``_``, ``.`` or ``-``; names are unique
  within their list;
* a node reference names a node of the file's node list;
* a link joins two different known nodes, at most one link joins a pair, and
  its ``delay_ms`` is between 0 and :data:`MAX_DELAY_MS`;
* a flow or session goes from a node to a different node; its path (``via``,
  ``return_via``) lists at most ``MAX_SEGMENTS - 1`` known nodes, no node
  directly following itself (counting ``from`` and ``to``), and, where the
  caller gives the links' adjacency, each hop reachable over the links;
* a STAMP session sends between :data:`MIN_STAMP_RATE` and
  :data:`MAX_STAMP_RATE` test packets per second (the rule is the southbound
  API's, :func:`srv6pm.southbound.validate.stamp_rate`); its optional ``liveness``
  is ``true``/``false`` or a mapping with ``down_after`` and/or ``up_after``
  (the counts' rule is the southbound API's, :func:`srv6pm.southbound.validate.liveness_setting`);
* the data plane (top-level ``dataplane``) is one of :data:`DATAPLANES`,
  :data:`DEFAULT_DATAPLANE` when not given; with ``ebpf`` no node is twice on
  a flow's path (``from``, ``via``, ``to``), since each counts it at one position.

Contract of :class:`Validator`: every check takes a value as YAML gave it and
the field path that names it in the file (``flows[0].via[1]``), and either
returns the value (a tuple for a list) or raises the caller's error class with
one line ``<source>: <field>: <what is wrong>``. Checks never print, log or
touch the network; the first problem found is the one reported.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import KW_ONLY, dataclass
from typing import Any

from srv6pm.quote import quote

__all__ = ["DATAPLANES", "DEFAULT_DATAPLANE", "MAX_DELAY_MS", "MAX_SEGMENTS", "MAX_STAMP_RATE", "MIN_STAMP_RATE",
           "NAME", "RFC8972_SETTINGS", "Link", "StampSession", "Validator", "adjacency", "key_text", "kind",
           "number_text", "reachable"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""The rule of every name (node, flow, session, policy, reflector node): match it with ``fullmatch``."""
MAX_SEGMENTS = 16  # SIDs in a segment list, the egress' included
MAX_DELAY_MS = 10_000
MIN_STAMP_RATE = 0.01  # STAMP test packets per second per session
MAX_STAMP_RATE = 1000
DATAPLANES = ("ebpf", "nftables")
"""The exporters' counting back-ends: RFC 9343 FlowMonID at every node (ebpf), or DSCP colours at the ends (nftables)."""
DEFAULT_DATAPLANE = "ebpf"
_UINT32 = 2**32 - 1
RFC8972_SETTINGS = frozenset({"direct_measurement", "dscp", "ssid", "stop_if_ssid_ignored"})
"""A STAMP session's optional RFC 8972 keys (:meth:`Validator.rfc8972`), named as the southbound fields."""


@dataclass(frozen=True)
class Link:
    """An undirected link between two distinct nodes; ``delay_ms`` is added in each direction."""

    a: str
    b: str
    delay_ms: float = 0.0


@dataclass(frozen=True)
class StampSession:
    """A STAMP session: ``src`` sends along ``via`` to ``dst``, which reflects along ``return_via``."""

    name: str
    src: str
    dst: str
    via: tuple[str, ...]
    return_via: tuple[str, ...]
    rate: float  # test packets per second
    _: KW_ONLY
    liveness: tuple[int, int] | None = None  # watch the path: (down_after, up_after); None: not watched


def key_text(key: Any) -> str:
    """A mapping's key as a field name in messages: as written when it is a plain name, else quoted (cut to a
    readable length, control characters escaped)."""
    if isinstance(key, str) and len(key) <= 64 and _PLAIN_KEY.fullmatch(key):
        return key
    return quote(key)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def number_text(value: int | float) -> str:
    """A number as messages show it: a float as ``{:g}`` shows it, a whole number as :func:`quote` does (one of
    any length, which ``{:g}`` cannot convert)."""
    return f"{value:g}" if isinstance(value, float) else quote(value)


def kind(value: Any) -> str:
    """How a YAML value is named in messages: ``a mapping``, ``a list``, ``text``, ``nothing``, ..."""
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false"}.get(type(value), type(value).__name__)


def adjacency(nodes: tuple[str, ...], links: tuple[Link, ...]) -> dict[str, set[str]]:
    """Each node's neighbours over ``links`` (every node of ``nodes`` is a key)."""
    out: dict[str, set[str]] = {n: set() for n in nodes}
    for link in links:
        out[link.a].add(link.b)
        out[link.b].add(link.a)
    return out


def reachable(adjacency: dict[str, set[str]], a: str, b: str) -> bool:
    """Whether some chain of links leads from node ``a`` to node ``b``."""
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


class Validator:
    """The shared checks for the file called ``source``; problems raise ``error`` (a ValueError subclass)."""

    def __init__(self, source: str, error: type[ValueError]):
        self.source = source
        self.error = error

    def fail(self, field: str, message: str) -> ValueError:
        """The error (to raise) ``<source>: <field>: <message>``, or ``<source>: <message>`` without a field."""
        prefix = f"{self.source}: {field}: " if field else f"{self.source}: "
        return self.error(prefix + message)

    def checked(self, check, message, field: str, names: dict[str, str]):
        """``check(message)`` (a :mod:`srv6pm.southbound.validate` function), with its
        :class:`~srv6pm.southbound.validate.InvalidArgument` raised as this file's error on the file's field.

        This is how every configuration file hands its objects to the one home of their rules: the
        file's reader builds the southbound message from what YAML gave, leaving unset what the file
        does not say (the defaults are the rule's), and reports the rule's verdict in the file's terms.
        ``names`` maps a proto field (``segments`` also covers ``segments[i]``) to the file's field
        path; a field not in ``names`` is reported at ``field``.
        """
        from srv6pm.southbound import validate  # it imports this module's limits

        try:
            return check(message)
        except validate.InvalidArgument as exc:
            proto_field = exc.field or ""
            base, _, index = proto_field.partition("[")
            where = names.get(proto_field) or (names[base] + ("[" + index if index else "")
                                                if base in names else field)
            raise self.fail(where, exc.message) from None

    def given(self, check, value, given: bool, field: str):
        """``value``; when the file ``given`` it, first judged by the rule ``check`` (a
        :mod:`srv6pm.southbound.validate` function of the value) and reported at ``field``.

        For the fields whose 0 means "the default" in a message: a file that leaves them out gets
        the default, one that says 0 (or anything out of range) gets the rule's error.
        """
        return self.checked(check, value, field, {}) if given else value

    # ------------------------------------------------------------ values

    def mapping(self, value: Any, field: str, allowed: set[str], required: set[str]) -> dict:
        """``value`` as a mapping with only ``allowed`` keys and all ``required`` ones."""
        if not isinstance(value, dict):
            raise self.fail(field, f"must be a mapping, got {kind(value)}")
        where = f"{field}." if field else ""
        for key in value:
            if key not in allowed:
                raise self.fail(f"{where}{key_text(key)}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required):
            if key not in value:
                raise self.fail(f"{where}{key}", "missing")
        return value

    def sequence(self, value: Any, field: str, what: str = "a list") -> list:
        """``value`` as a list; ``what`` says what it should have been."""
        if not isinstance(value, list):
            raise self.fail(field, f"must be {what}, got {kind(value)}")
        return value

    def text(self, value: Any, field: str, what: str = "text") -> str:
        """``value`` as a string; ``what`` says what it should have been."""
        if not isinstance(value, str):
            raise self.fail(field, f"must be {what}, got {kind(value)}")
        return value

    def number(self, value: Any, field: str, low: float, high: float) -> float:
        """``value`` as a float between ``low`` and ``high`` inclusive (true/false is not a number)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(field, f"must be a number, got {kind(value)}" + (
                f" {quote(value)} (YAML reads 1e3 as text: write 1.0e3 or 1000)" if isinstance(value, str) else ""))
        if not low <= value <= high:
            raise self.fail(field, f"must be between {low:g} and {high:g}, got {number_text(value)}")
        try:
            return float(value)
        except OverflowError:  # a whole number beyond a float's range, and the range unbounded
            return math.inf if value > 0 else -math.inf

    def real(self, value: Any, field: str) -> int | float:
        """``value``, a number as written (true/false is not one, nor a whole number too large for a float): the
        type check of a field whose range is the southbound rule's (:mod:`srv6pm.southbound.validate`), which
        then judges it and quotes it as written."""
        number = self.number(value, field, -math.inf, math.inf)
        if math.isinf(number) and not isinstance(value, float):
            raise self.fail(field, f"{quote(value)} is too large a number")
        return value

    def integer(self, value: Any, field: str, low: int, high: int) -> int:
        """``value`` as an int between ``low`` and ``high`` inclusive (no fractions, true/false is not a number)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, f"must be a whole number from {low} to {high}, got {kind(value)}"
                            + (f" {quote(value)}" if isinstance(value, (float, str)) else ""))
        if not low <= value <= high:
            raise self.fail(field, f"must be a whole number from {low} to {high}, got {quote(value)}")
        return value

    def whole(self, value: Any, field: str) -> int:
        """``value`` as a whole number from 0 that fits a message's 32 bits: the type check of a field whose
        range is the southbound rule's (:mod:`srv6pm.southbound.validate`), which then judges it."""
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT32:
            raise self.fail(field, f"must be a whole number (0 or more), got {kind(value)}"
                            + (f" {quote(value)}" if isinstance(value, (int, float, str)) else ""))
        return value

    def choice(self, value: Any, field: str, choices: tuple[str, ...]) -> str:
        """``value`` as one of the strings ``choices``."""
        if not isinstance(value, str) or value not in choices:
            raise self.fail(field, f"{quote(value)} is not one of {', '.join(choices)}")
        return value

    def dataplane(self, doc: dict) -> str:
        """The document's top-level ``dataplane`` (:data:`DATAPLANES`), :data:`DEFAULT_DATAPLANE` if absent."""
        return self.choice(doc.get("dataplane", DEFAULT_DATAPLANE), "dataplane", DATAPLANES)

    def name(self, value: Any, field: str, what: str) -> str:
        """``value`` as a :data:`NAME`; ``what`` (``flow``, ``session``, ``node``) is said in the message."""
        self.name_text(value, field, what)
        if not isinstance(value, str) or not NAME.fullmatch(value):
            raise self.fail(field, f"{quote(value)} is not a valid {what} name (letters, digits, '_', '.', '-'; at most 64)")
        return value

    def name_text(self, value: Any, field: str, what: str) -> None:
        """An error if ``value``, given as a ``what`` name, is a number, true/false or nothing: what YAML makes of
        an unquoted ``on``, ``no`` or ``010`` (the message says so)."""
        if isinstance(value, (bool, int, float)) or value is None:
            raise self.fail(field, f"a {what} name must be text, got {kind(value)} {quote(value)} (YAML reads an "
                                   "unquoted yes/no/on/off as true/false and 010 as the number 8: quote the name)")

    def unique(self, value: str, field: str, seen: set[str], what: str) -> str:
        """``value``, added to ``seen``; an error ``duplicate <what> 'value'`` if it was there already."""
        if value in seen:
            raise self.fail(field, f"duplicate {what} {quote(value)}")
        seen.add(value)
        return value

    # ------------------------------------------------------------ the network

    def node_list(self, value: Any, most: int, what: str) -> list:
        """The file's ``nodes``: a non-empty list (of ``what``) of at most ``most`` items."""
        if not isinstance(value, list) or not value:
            raise self.fail("nodes", f"must be a non-empty list of {what}")
        if len(value) > most:
            raise self.fail("nodes", f"at most {most} nodes, got {len(value)}")
        return value

    def node_ref(self, value: Any, field: str, nodes: tuple[str, ...]) -> str:
        """``value`` as the name of one of ``nodes``."""
        if not isinstance(value, str):
            raise self.fail(field, f"must be a node name, got {kind(value)}")
        if value not in nodes:
            raise self.fail(field, f"unknown node {quote(value)} (nodes: {', '.join(nodes)})")
        return value

    def links(self, value: Any, nodes: tuple[str, ...]) -> tuple[Link, ...]:
        """The file's ``links``: ``[a, b]`` or ``{ends: [a, b], delay_ms: N}`` items, one per pair of nodes."""
        value = self.sequence(value, "links", "a list of [node, node] pairs")
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
                raise self.fail(field, f"links {quote(a)} to itself")
            if frozenset((a, b)) in seen:
                raise self.fail(field, f"duplicate link between {quote(a)} and {quote(b)}")
            seen.add(frozenset((a, b)))
            links.append(Link(a, b, delay_ms))
        return tuple(links)

    def endpoints(self, item: dict, field: str, what: str, names: set[str],
                  nodes: tuple[str, ...]) -> tuple[str, str, str]:
        """The unique ``name`` (added to ``names``) and the distinct ``from`` and ``to`` nodes of a flow or session."""
        name = self.unique(self.name(item["name"], f"{field}.name", what), f"{field}.name", names, f"{what} name")
        src = self.node_ref(item["from"], f"{field}.from", nodes)
        dst = self.node_ref(item["to"], f"{field}.to", nodes)
        if src == dst:
            raise self.fail(f"{field}.to", f"same node as 'from' ({quote(src)})")
        return name, src, dst

    def path(self, value: Any, field: str, src: str, dst: str, nodes: tuple[str, ...],
             adjacency: dict[str, set[str]] | None = None, what: str = "segments") -> tuple[str, ...]:
        """The node names of a path from ``src`` through ``value`` to ``dst``.

        With ``adjacency`` (see :func:`adjacency`) every hop must be reachable
        over the links. ``what`` names the items in the too-long message.
        """
        value = self.sequence(value, field, "a list of node names")
        if len(value) + 1 > MAX_SEGMENTS:
            raise self.fail(field, f"at most {MAX_SEGMENTS - 1} {what}")
        via = tuple(self.node_ref(v, f"{field}[{j}]", nodes) for j, v in enumerate(value))
        hops = (src, *via, dst)
        for j in range(len(hops) - 1):
            if hops[j] == hops[j + 1]:
                raise self.fail(field, f"node {quote(hops[j])} follows itself in the path")
            if adjacency is not None and not reachable(adjacency, hops[j], hops[j + 1]):
                raise self.fail(field, f"no path from {quote(hops[j])} to {quote(hops[j + 1])} over the links")
        return via

    def counted_once(self, src: str, via: tuple[str, ...], dst: str, field: str) -> None:
        """With the ebpf data plane a node counts a flow at one position: no node twice on its path."""
        seen: set[str] = set()
        for node in (src, *via, dst):
            if node in seen:
                raise self.fail(field, f"node {quote(node)} is on the path twice; with dataplane ebpf each node counts "
                                "a flow at one position (dataplane: nftables counts only at from and to)")
            seen.add(node)

    def stamp_session(self, item: Any, field: str, names: set[str], nodes: tuple[str, ...],
                      adjacency: dict[str, set[str]] | None = None, more: frozenset[str] = frozenset(),
                      what: str = "segments") -> tuple[StampSession, dict]:
        """A STAMP session's name, ends, paths and rate, and the item as a mapping.

        ``more`` are the caller's further allowed keys (left in the returned
        mapping for the caller to check); ``adjacency`` and ``what`` go to :meth:`path`.
        """
        item = self.mapping(item, field, {"name", "from", "to", "via", "return_via", "rate", "liveness"} | more,
                            {"name", "from", "to", "rate"})
        name, src, dst = self.endpoints(item, field, "session", names, nodes)
        via = self.path(item.get("via", []), f"{field}.via", src, dst, nodes, adjacency, what)
        return_via = self.path(item.get("return_via", []), f"{field}.return_via", dst, src, nodes, adjacency, what)
        from srv6pm.southbound import validate  # it imports this module's limits

        rate = item["rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise self.fail(f"{field}.rate", f"must be a number, got {kind(rate)}")
        rate = self.checked(validate.stamp_rate, rate, f"{field}.rate", {})
        liveness = self.liveness(item.get("liveness", False), f"{field}.liveness")
        return StampSession(name, src, dst, via, return_via, rate, liveness=liveness), item

    def rfc8972(self, item: dict, field: str) -> dict[str, Any]:
        """A STAMP session's RFC 8972 settings (:data:`RFC8972_SETTINGS`) in ``item``, as the southbound
        ``StampSession`` fields: ``direct_measurement``, ``ssid`` (0: none), ``stop_if_ssid_ignored`` and,
        when given, ``dscp``; judged by :func:`srv6pm.southbound.validate.rfc8972_settings`."""
        from srv6pm.southbound import validate  # it imports this module's limits

        out: dict[str, Any] = {}
        for flag in ("direct_measurement", "stop_if_ssid_ignored"):
            value = item.get(flag, False)
            if not isinstance(value, bool):
                raise self.fail(f"{field}.{flag}", f"must be true or false, got {kind(value)}")
            out[flag] = value
        # 0 is the message's "no SSID": a file that names one gives 1 or more
        out["ssid"] = self.integer(item["ssid"], f"{field}.ssid", 1, validate.SSID_MAX) if "ssid" in item else 0
        if item.get("dscp") is not None:
            out["dscp"] = self.whole(item["dscp"], f"{field}.dscp")
        try:
            validate.rfc8972_settings(out.get("dscp"), out["ssid"], out["stop_if_ssid_ignored"])
        except validate.InvalidArgument as exc:
            raise self.fail(f"{field}.{exc.field}", exc.message) from None
        return out

    def liveness(self, value: Any, field: str) -> tuple[int, int] | None:
        """A session's ``liveness`` (:func:`srv6pm.southbound.validate.liveness_setting`)."""
        from srv6pm.southbound import validate  # it imports this module's limits

        try:
            return validate.liveness_setting(value)
        except validate.InvalidArgument as exc:
            raise self.fail(f"{field}.{exc.field}" if exc.field else field, exc.message) from None
