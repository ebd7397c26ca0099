"""The exporter's eBPF data plane: the colour in RFC 9343's Alternate-Marking option, counted at every hop.

The programs are ``bpf/altmark.bpf.c`` (read its header for the packet layout):
``altmark_mark`` on tc egress of the node's interfaces marks and counts the
packets of the flows this node is the ingress of, right after seg6
encapsulation, by inserting a Destination Options header with the option
(FlowMonID, L = colour) before the SRH; ``altmark_count`` on tc ingress counts,
by (FlowMonID, colour) read from the option, the packets of the flows this
node is a transit or the egress point of (the egress before decapsulation).
The customer's inner packet (DSCP, flow label, payload) is never changed.

Maps, pinned under ``/sys/fs/bpf/srv6pm-exporter/<node>/`` so that an exporter
restart keeps its counters:

* ``counters0`` / ``counters1``  per-CPU hashes FlowMonID -> (packets, bytes)
  of colour 0 and colour 1; only keys created here are counted;
* ``exact``  hash (source, destination) -> FlowMonID of the ingress flows
  between two single addresses (/128 each): one lookup per packet;
* ``sources`` / ``flows``  two LPM tries that classify the packets of the other
  ingress flows (wider prefixes) when ``exact`` misses: source prefix -> class,
  then (class, destination prefix) -> FlowMonID;
* ``colour``  one array slot: the colour marked now; :meth:`EbpfTable.set_colour`
  is that one update, atomic for every packet on every CPU.

Every change is incremental (a few map updates per added or removed flow),
so its cost does not depend on how many flows are installed, and neither does
the per-packet cost. A guard read is one batch lookup of one colour's map.

:attr:`Reading.generation` is the boot id and the kernel's id of the
counter maps: it changes exactly when one was created anew (a reboot,
a lost pin, an incompatible upgrade), which is when counters restarted.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from srv6pm import bpf
from srv6pm.netns import NetnsThread

from .dataplane import DataplaneError, Reading

__all__ = ["OBJECT", "PIN_ROOT", "EbpfTable", "Point", "pin_dir"]

log = logging.getLogger("srv6pm.exporter")

OBJECT = bpf.object_path(Path(__file__).parent / "bpf", "altmark")
PIN_ROOT = Path(bpf.BPFFS) / "srv6pm-exporter"
ROLES = ("ingress", "transit", "egress")
PINNED = ("counters0", "counters1", "exact", "sources", "flows", "colour")
_COUNTER_VALUE = struct.Struct("<QQ")
_SOURCE_KEY = struct.Struct("<I16s")
_FLOW_KEY = struct.Struct("<II16s")
_EXACT_KEY = struct.Struct("16s16s")
_U32 = struct.Struct("<I")
# tc filter slot of srv6pm's programs on every interface (handle, priority)
TC_HANDLE = 0x5A6D
TC_PRIORITY = 0x5A6D


def pin_dir(node: str) -> Path:
    """Where the maps of ``node``'s exporter are pinned."""
    return PIN_ROOT / node


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
        if not 1 <= self.flowmon_id <= 0xFFFFF:
            raise ValueError(f"flow {self.name!r}: the eBPF data plane needs a FlowMonID in 1..1048575, "
                             f"got {self.flowmon_id}")
        for field in ("src", "dst"):
            try:
                object.__setattr__(self, field, str(ipaddress.IPv6Network(getattr(self, field), strict=True)))
            except ValueError as exc:
                raise ValueError(f"flow {self.name!r}: {field}: {exc}") from None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "0"


def _source_key(prefix: str) -> bytes:
    net = ipaddress.IPv6Network(prefix)
    return _SOURCE_KEY.pack(net.prefixlen, net.network_address.packed)


def _exact(p: Point) -> bool:
    return p.src.endswith("/128") and p.dst.endswith("/128")


def _exact_key(p: Point) -> bytes:
    return _EXACT_KEY.pack(ipaddress.IPv6Address(p.src[:-4]).packed, ipaddress.IPv6Address(p.dst[:-4]).packed)


def _flow_key(cls: int, prefix: str) -> bytes:
    net = ipaddress.IPv6Network(prefix)
    return _FLOW_KEY.pack(32 + net.prefixlen, cls, net.network_address.packed)


class EbpfTable:
    """The eBPF counting state of one node, in the namespace ``netns`` (None: the current one).

    Loads the programs (pinning or reusing the maps of ``node``) and attaches
    them to every interface of the namespace except ``lo`` (unless ``attach`` is
    false: then only :meth:`program_fd`'s callers run them, e.g. in
    ``BPF_PROG_TEST_RUN``). Raises :class:`~srv6pm.bpf.BpfUnavailable` when
    the machine cannot run them (checked first), and
    :class:`~.dataplane.DataplaneError` when loading them fails. Not thread safe by itself (the exporter
    serialises calls with its lock).
    """

    def __init__(self, node: str, netns: str | None = None, *, obj_path: str | Path = OBJECT,
                 pin_root: Path = PIN_ROOT, attach: bool = True):
        bpf.check_support(obj_path)
        self.node = node
        self.netns = netns
        self._pins = pin_root / node
        try:
            self._obj = bpf.BpfObject(obj_path, pin_dir=self._pins, pin=PINNED)
        except bpf.BpfError as exc:
            raise DataplaneError(f"the eBPF data plane of {node}: {exc}") from exc
        self._counters = (self._obj.map("counters0"), self._obj.map("counters1"))
        self._sources_map = self._obj.map("sources")
        self._flows_map = self._obj.map("flows")
        self._exact_map = self._obj.map("exact")
        self._colour_map = self._obj.map("colour")
        self.generation = ".".join([_boot_id(), *(str(bpf.map_id(m.fd)) for m in self._counters)])
        self._thread = NetnsThread(netns, thread_name=f"bpf-{node}")
        self._attached: set[int] = set()
        self._points: dict[tuple[str, str], Point] = {}  # (name, role) -> point
        self._by_id: dict[int, Point] = {}
        self._classes: dict[str, tuple[int, int]] = {}  # source prefix -> (class, flows using it)
        self._next_class = 1
        self._colour: int | None = None
        self._stale_counters = True  # counters of flows an earlier run had: dropped at the first install
        self._forget_strangers()
        if attach:
            self.attach()

    # -- attachment ------------------------------------------------------------------
    def attach(self) -> None:
        """Attach both programs to every interface of the namespace not attached yet (lo excepted)."""
        mark, count = self._obj.program_fd("altmark_mark"), self._obj.program_fd("altmark_count")

        def run() -> list[int]:
            done = []
            for index, name in socket.if_nameindex():
                if name == "lo" or index in self._attached:
                    continue
                bpf.tc_attach(index, "egress", mark, handle=TC_HANDLE, priority=TC_PRIORITY)
                bpf.tc_attach(index, "ingress", count, handle=TC_HANDLE, priority=TC_PRIORITY)
                done.append(index)
            return done

        try:
            self._attached.update(self._thread.call(run))
        except bpf.BpfError as exc:
            raise DataplaneError(f"{self._where()}: {exc}") from exc

    def _where(self) -> str:
        return f"netns {self.netns!r}" if self.netns else "current netns"

    def _forget_strangers(self) -> None:
        """Empty the classification tries: this object installs its flows again (counters are kept)."""
        for key, _ in self._exact_map.lookup_batch():
            self._exact_map.delete(key)
        for m in (self._sources_map, self._flows_map):
            for key in m.keys():
                m.delete(key)

    # -- flows -----------------------------------------------------------------------
    def install(self, points: Iterable[Point], colour: int) -> None:
        """Count exactly ``points`` from now on and mark with ``colour``; counters of kept points are kept.

        Only the difference to what is installed is applied. Raises
        ``ValueError`` for two points with one FlowMonID, a name listed twice
        in a role, or ingress flows whose source prefixes nest (the
        classification needs equal or disjoint source prefixes).
        """
        wanted: dict[tuple[str, str], Point] = {}
        ids: dict[int, Point] = {}
        for p in points:
            if (p.name, p.role) in wanted:
                raise ValueError(f"duplicate {p.role} flow name {p.name!r}")
            if p.flowmon_id in ids:
                other = ids[p.flowmon_id]
                raise ValueError(f"flows {other.name!r} ({other.role}) and {p.name!r} ({p.role}) have the same "
                                 f"FlowMonID {p.flowmon_id}")
            wanted[(p.name, p.role)] = p
            ids[p.flowmon_id] = p
        limit = self._flows_map.max_entries
        if len(wanted) > limit:
            raise ValueError(f"{len(wanted)} flows: the ebpf data plane counts at most {limit} flows per node")
        ingress = [p for p in wanted.values() if p.role == "ingress"]
        _check_sources([p for p in ingress if not _exact(p)])
        matches: dict[tuple[str, str], str] = {}
        for p in ingress:
            if (p.src, p.dst) in matches:
                raise ValueError(f"ingress flows {matches[(p.src, p.dst)]!r} and {p.name!r} have the same match "
                                 f"{p.src} . {p.dst}")
            matches[(p.src, p.dst)] = p.name
        try:
            if self._stale_counters:
                for m in self._counters:
                    keys, _, count = m.dump()
                    for (flowmon_id,) in _U32.iter_unpack(keys[:count * _U32.size]):
                        if flowmon_id not in ids:
                            m.delete(_U32.pack(flowmon_id))
                self._stale_counters = False
            for key, old in list(self._points.items()):
                if wanted.get(key) != old:
                    self._remove(old)
            for key, p in wanted.items():
                if key not in self._points:
                    self._add(p)
            self.set_colour(colour)
        except bpf.BpfError as exc:
            raise DataplaneError(f"{self._where()}: {exc}") from exc

    def _add(self, p: Point) -> None:
        zero = _COUNTER_VALUE.pack(0, 0)
        for m in self._counters:  # a counter that exists already (pinned, before a restart) keeps its value
            m.update(_U32.pack(p.flowmon_id), zero, bpf.BPF_NOEXIST)
        if p.role == "ingress" and _exact(p):
            self._exact_map.update(_exact_key(p), _U32.pack(p.flowmon_id))
        elif p.role == "ingress":
            cls, users = self._classes.get(p.src, (0, 0))
            if not cls:
                cls = self._next_class
                self._next_class += 1
                self._sources_map.update(_source_key(p.src), _U32.pack(cls))
            self._classes[p.src] = (cls, users + 1)
            self._flows_map.update(_flow_key(cls, p.dst), _U32.pack(p.flowmon_id))
        self._points[(p.name, p.role)] = p
        self._by_id[p.flowmon_id] = p

    def _remove(self, p: Point) -> None:
        if p.role == "ingress" and _exact(p):
            self._exact_map.delete(_exact_key(p))
        elif p.role == "ingress":
            cls, users = self._classes[p.src]
            self._flows_map.delete(_flow_key(cls, p.dst))
            if users == 1:
                self._sources_map.delete(_source_key(p.src))
                del self._classes[p.src]
            else:
                self._classes[p.src] = (cls, users - 1)
        for m in self._counters:
            m.delete(_U32.pack(p.flowmon_id))
        del self._points[(p.name, p.role)]
        self._by_id.pop(p.flowmon_id, None)

    @property
    def colour(self) -> int | None:
        return self._colour

    def set_colour(self, colour: int) -> None:
        """Mark with ``colour`` from the next packet on, on every CPU (one map update)."""
        if isinstance(colour, bool) or colour not in (0, 1):
            raise ValueError(f"colour must be 0 or 1, got {colour!r}")
        self._colour_map.update(_U32.pack(0), _U32.pack(colour))
        self._colour = colour

    def program_fd(self, name: str) -> int:
        """The descriptor of the loaded program ``altmark_mark`` or ``altmark_count``."""
        return self._obj.program_fd(name)

    def points(self) -> list[Point]:
        return list(self._points.values())

    # -- reading ---------------------------------------------------------------------
    def read_all(self, colour: int) -> dict[str, Reading]:
        """Role -> the counters of ``colour`` of every installed flow of that role, from one batch lookup."""
        counts: dict[str, dict[str, tuple[int, int]]] = {role: {} for role in ROLES}
        ncpu = bpf.possible_cpus()
        try:
            keys, values, count = self._counters[colour].dump()
        except bpf.BpfError as exc:
            raise DataplaneError(f"{self._where()}: {exc}") from exc
        per_key = struct.Struct("<" + "QQ" * ncpu)
        by_id = self._by_id
        for (flowmon_id,), value in zip(_U32.iter_unpack(keys[:count * 4]),
                                         per_key.iter_unpack(values[:count * per_key.size])):
            p = by_id.get(flowmon_id)
            if p is not None:
                counts[p.role][p.name] = (sum(value[0::2]), sum(value[1::2]))
        return {role: Reading(role, colour, counts[role], self.generation) for role in ROLES}

    def read(self, role: str, colour: int) -> Reading:
        """The counters of one role and colour (see :meth:`read_all`)."""
        return self.read_all(colour)[role]

    # -- lifecycle -------------------------------------------------------------------
    def detach(self) -> None:
        """Take the programs off every interface (counting and marking stop; maps stay pinned)."""
        def run() -> None:
            for index, _ in socket.if_nameindex():
                bpf.tc_detach(index, "egress", handle=TC_HANDLE, priority=TC_PRIORITY)
                bpf.tc_detach(index, "ingress", handle=TC_HANDLE, priority=TC_PRIORITY)
        self._thread.call(run)
        self._attached.clear()

    def remove(self) -> None:
        """Detach, close and unpin: the node's counters are gone; idempotent."""
        try:
            self.detach()
        finally:
            self.close()
            bpf.unpin(self._pins)

    def close(self) -> None:
        """Close descriptors; the attached programs and the pinned maps stay in the kernel."""
        self._obj.close()
        self._thread.close()


def _check_sources(ingress: list[Point]) -> None:
    """Refuse nested (but not equal) source prefixes among ingress flows: the source class would be ambiguous.

    Prefixes either nest or are disjoint, so one sweep in address order finds any nesting: O(n log n).
    """
    nets = sorted({ipaddress.IPv6Network(p.src) for p in ingress},
                  key=lambda n: (int(n.network_address), n.prefixlen))
    for outer, inner in zip(nets, nets[1:]):
        if int(inner.network_address) <= int(outer.broadcast_address):
            names = sorted(p.name for p in ingress if ipaddress.IPv6Network(p.src) in (outer, inner))
            raise ValueError(f"ingress flows {', '.join(map(repr, names))}: source prefixes {outer} and {inner} "
                             "nest; the eBPF data plane needs equal or disjoint source prefixes")
