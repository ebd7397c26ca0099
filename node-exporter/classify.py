"""What the eBPF maps of one node hold, in memory, and the map operations each change of it takes.

:class:`Model` keeps the points (flows counted at this node) with indices
that make every check one lookup: by (name, role), by FlowMonID, by ingress
match, and the source prefixes of the ingress flows that the tries classify,
in address order (they must be equal or disjoint, so a new one is checked
against its two neighbours). :meth:`Model.change` validates a whole change
(removals first, then additions) and returns a :class:`Change`: the map
operations it takes, a few per point whatever the number installed, and a way
back. A check that fails raises ``ValueError`` and leaves the model as it was.

The map layouts are those of ``bpf/altmark.bpf.c`` (see :mod:`.ebpf`):
``counters0``/``counters1`` FlowMonID -> (packets, bytes); ``exact``
(source, destination) -> FlowMonID for /128 to /128 ingress flows;
``sources`` source prefix -> class and ``flows`` (class, destination
prefix) -> FlowMonID for the other ingress flows.
"""

from __future__ import annotations

import bisect
import ipaddress
import struct
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable

from srv6pm.southbound.validate import FLOWMON_ID_MAX, ROLE_NAMES

__all__ = ["BPF_ANY", "BPF_NOEXIST", "Change", "Model", "Op", "Point", "ROLES", "U32"]

ROLES = tuple(ROLE_NAMES.values())
BPF_ANY = 0
BPF_NOEXIST = 1
COUNTER_VALUE = struct.Struct("<QQ")
U32 = struct.Struct("<I")
_SOURCE_KEY = struct.Struct("<I16s")
_FLOW_KEY = struct.Struct("<II16s")
_EXACT_KEY = struct.Struct("16s16s")
_ZERO = COUNTER_VALUE.pack(0, 0)


@dataclass(frozen=True)
class Point:
    """One flow counted at this node: its role, FlowMonID, and (ingress only) its inner match."""

    name: str
    role: str
    flowmon_id: int
    position: int = 0
    src: str = "::/0"
    dst: str = "::/0"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"flow {self.name!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if not 1 <= self.flowmon_id <= FLOWMON_ID_MAX:
            raise ValueError(f"flow {self.name!r}: the eBPF data plane needs a FlowMonID in 1..{FLOWMON_ID_MAX}, "
                             f"got {self.flowmon_id}")
        for name in ("src", "dst"):
            try:
                object.__setattr__(self, name, str(ipaddress.IPv6Network(getattr(self, name), strict=True)))
            except ValueError as exc:
                raise ValueError(f"flow {self.name!r}: {name}: {exc}") from None

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.role)

    @property
    def exact(self) -> bool:
        """Between two single addresses: classified by one hash lookup (``exact``), not by the tries."""
        return self.src.endswith("/128") and self.dst.endswith("/128")


@dataclass(frozen=True)
class Op:
    """One map operation: ``update`` (with ``flags``) or ``delete`` of ``key``; ``value`` is what the key holds
    after an update, or held before a delete (so that every operation can be undone)."""

    verb: str
    map: str
    key: bytes
    value: bytes
    flags: int = BPF_ANY

    def inverse(self) -> "Op":
        if self.verb == "update":
            return Op("delete", self.map, self.key, self.value)
        return Op("update", self.map, self.key, self.value)


@dataclass
class Change:
    """The map operations of one validated change, and :meth:`revert` to put the model back if they fail."""

    ops: list[Op] = field(default_factory=list)
    _undo: list[Callable[[], object]] = field(default_factory=list, repr=False)

    def revert(self) -> None:
        while self._undo:
            self._undo.pop()()


def _id(p: Point) -> bytes:
    return U32.pack(p.flowmon_id)


def _source_key(net: ipaddress.IPv6Network) -> bytes:
    return _SOURCE_KEY.pack(net.prefixlen, net.network_address.packed)


def _flow_key(cls: int, prefix: str) -> bytes:
    net = ipaddress.IPv6Network(prefix)
    return _FLOW_KEY.pack(32 + net.prefixlen, cls, net.network_address.packed)


def _exact_key(p: Point) -> bytes:
    return _EXACT_KEY.pack(ipaddress.IPv6Address(p.src[:-4]).packed, ipaddress.IPv6Address(p.dst[:-4]).packed)


@dataclass
class _Source:
    """A source prefix of the tries: its class, how many ingress flows use it, and one of them (for errors)."""

    net: ipaddress.IPv6Network
    cls: int
    users: int
    name: str


class Model:
    """The points of one node and their indices; at most ``limit`` points (the maps' size)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.points: dict[tuple[str, str], Point] = {}
        self.by_id: dict[int, Point] = {}
        self._matches: dict[tuple[str, str], str] = {}  # ingress (src, dst) -> flow name
        self._sources: dict[str, _Source] = {}  # source prefix of a classified ingress flow -> its class
        self._starts: list[int] = []  # the network addresses of those prefixes, sorted (they are disjoint)
        self._by_start: dict[int, _Source] = {}
        self._next_class = 1

    def change(self, add: Iterable[Point] = (), remove: Iterable[tuple[str, str]] = ()) -> Change:
        """Remove the points named (name, role) in ``remove`` (absent ones are ignored), then add ``add``.

        Returns the :class:`Change`; ``ValueError`` (nothing changed) for a
        point whose name and role, FlowMonID or ingress match is taken, an
        ingress source prefix that nests in another one or holds one, or
        more points than ``limit``.
        """
        change = Change()
        try:
            for key in remove:
                p = self.points.get(key)
                if p is not None:
                    self._remove(p, change)
            for p in add:
                self._add(p, change)
            if len(self.points) > self.limit:
                raise ValueError(f"{len(self.points)} flows: the ebpf data plane counts at most {self.limit} flows "
                                 "per node")
        except ValueError:
            change.revert()
            raise
        return change

    # -- one point -------------------------------------------------------------------
    @property
    def ingress_points(self) -> int:
        """How many of the points are ingress points (each has its own match)."""
        return len(self._matches)

    def _add(self, p: Point, change: Change) -> None:
        if p.key in self.points:
            raise ValueError(f"duplicate {p.role} flow name {p.name!r}")
        other = self.by_id.get(p.flowmon_id)
        if other is not None:
            raise ValueError(f"flows {other.name!r} ({other.role}) and {p.name!r} ({p.role}) have the same "
                             f"FlowMonID {p.flowmon_id}")
        ops = change.ops
        if p.role == "ingress":
            match = (p.src, p.dst)
            if match in self._matches:
                raise ValueError(f"ingress flows {self._matches[match]!r} and {p.name!r} have the same match "
                                 f"{p.src} . {p.dst}")
        # The counters first: an ingress packet is marked from the moment its match is in the maps, and one
        # marked before its counter exists would be counted downstream but not here (a loss the wrong way).
        # A counter that exists (pinned before a restart) keeps its value.
        for m in ("counters0", "counters1"):
            ops.append(Op("update", m, _id(p), _ZERO, BPF_NOEXIST))
        if p.role == "ingress":
            if p.exact:
                ops.append(Op("update", "exact", _exact_key(p), _id(p)))
            else:
                source = self._sources.get(p.src) or self._new_source(p, change)
                source.users += 1
                change._undo.append(lambda: setattr(source, "users", source.users - 1))
                ops.append(Op("update", "flows", _flow_key(source.cls, p.dst), _id(p)))
            self._matches[match] = p.name
            change._undo.append(lambda: self._matches.pop(match))
        self.points[p.key] = p
        self.by_id[p.flowmon_id] = p
        change._undo.append(lambda: (self.points.pop(p.key), self.by_id.pop(p.flowmon_id)))

    def _remove(self, p: Point, change: Change) -> None:
        ops = change.ops
        if p.role == "ingress":
            match = (p.src, p.dst)
            if p.exact:
                ops.append(Op("delete", "exact", _exact_key(p), _id(p)))
            else:
                source = self._sources[p.src]
                ops.append(Op("delete", "flows", _flow_key(source.cls, p.dst), _id(p)))
                source.users -= 1
                change._undo.append(lambda: setattr(source, "users", source.users + 1))
                if source.users == 0:
                    self._drop_source(source, change)
            del self._matches[match]
            change._undo.append(partial(self._matches.__setitem__, match, p.name))
        for m in ("counters0", "counters1"):
            ops.append(Op("delete", m, _id(p), _ZERO))
        del self.points[p.key]
        del self.by_id[p.flowmon_id]

        def restore() -> None:
            self.points[p.key] = p
            self.by_id[p.flowmon_id] = p
        change._undo.append(restore)

    # -- source prefixes -------------------------------------------------------------
    def _new_source(self, p: Point, change: Change) -> _Source:
        net = ipaddress.IPv6Network(p.src)
        self._check_disjoint(p, net)
        source = _Source(net, self._next_class, 0, p.name)
        self._next_class += 1  # class numbers are never reused: a skipped one costs nothing
        self._insert(source)
        change._undo.append(lambda: self._unlink(source))
        change.ops.append(Op("update", "sources", _source_key(net), U32.pack(source.cls)))
        return source

    def _drop_source(self, source: _Source, change: Change) -> None:
        self._unlink(source)
        change._undo.append(lambda: self._insert(source))
        change.ops.append(Op("delete", "sources", _source_key(source.net), U32.pack(source.cls)))

    def _check_disjoint(self, p: Point, net: ipaddress.IPv6Network) -> None:
        """``ValueError`` if ``net`` holds or is held by a source prefix in use (they are disjoint, so only the
        one starting before it and those starting inside it can overlap)."""
        lo, hi = int(net.network_address), int(net.broadcast_address)
        i = bisect.bisect_right(self._starts, lo)
        suspects = self._starts[i - 1:i] if i else []
        j = i
        while j < len(self._starts) and self._starts[j] <= hi:
            suspects.append(self._starts[j])
            j += 1
        for start in suspects:
            other = self._by_start[start]
            if start <= hi and int(other.net.broadcast_address) >= lo:
                outer, inner = (other.net, net) if other.net.prefixlen <= net.prefixlen else (net, other.net)
                raise ValueError(f"ingress flows {other.name!r}, {p.name!r}: source prefixes {outer} and {inner} "
                                 "nest; the eBPF data plane needs equal or disjoint source prefixes")

    def _insert(self, source: _Source) -> None:
        start = int(source.net.network_address)
        bisect.insort(self._starts, start)
        self._by_start[start] = source
        self._sources[str(source.net)] = source

    def _unlink(self, source: _Source) -> None:
        start = int(source.net.network_address)
        del self._starts[bisect.bisect_left(self._starts, start)]
        del self._by_start[start]
        del self._sources[str(source.net)]
