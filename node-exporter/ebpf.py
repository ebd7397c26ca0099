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

import logging
import operator
import socket
import struct
import sys
from pathlib import Path
from typing import Callable, Iterable

from srv6pm import bpf
from srv6pm.netns import NetnsThread

from .classify import ROLES, U32, Model, Op, Point
from .dataplane import DataplaneError, Reading, check_colour

__all__ = ["OBJECT", "PIN_ROOT", "EbpfTable", "Point", "pin_dir"]

log = logging.getLogger("srv6pm.exporter")

OBJECT = bpf.object_path(Path(__file__).parent / "bpf", "altmark")
PIN_ROOT = Path(bpf.BPFFS) / "srv6pm-exporter"
PINNED = ("counters0", "counters1", "exact", "sources", "flows", "colour")
_U32 = U32
# tc filter slot of srv6pm's programs on every interface (handle, priority)
TC_HANDLE = 0x5A6D
TC_PRIORITY = 0x5A6D
HOOKS = ("auto", "tcx", "tc")
PROGRAMS = {"egress": "altmark_mark", "ingress": "altmark_count"}  # hook direction -> its program


_LITTLE = sys.byteorder == "little"  # the kernel's map values are in the host's order, which "<" assumes


def _per_cpu_sums(values: bytes, count: int, ncpu: int) -> tuple[list[int], list[int]]:
    """(packets, bytes) of each of the ``count`` per-CPU values (``ncpu`` pairs of little-endian u64 each),
    summed over the CPUs: one slice and one ``map(add)`` per CPU and column, no Python loop per flow."""
    width = 2 * ncpu
    if _LITTLE:
        words = memoryview(values)[:count * width * 8].cast("Q").tolist()
    else:
        words = list(struct.unpack(f"<{count * width}Q", values[:count * width * 8]))
    columns = []
    for field in (0, 1):
        total = words[field::width]
        for cpu in range(1, ncpu):
            total = list(map(operator.add, total, words[field + 2 * cpu::width]))
        columns.append(total)
    return columns[0], columns[1]


def pin_dir(node: str) -> Path:
    """Where the maps of ``node``'s exporter are pinned."""
    return PIN_ROOT / node


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "0"


class EbpfTable:
    """The eBPF counting state of one node, in the namespace ``netns`` (None: the current one).

    Loads the programs (pinning or reusing the maps of ``node``) and attaches
    them to every interface of the namespace except ``lo`` (unless ``attach`` is
    false: then only :meth:`program_fd`'s callers run them, e.g. in
    ``BPF_PROG_TEST_RUN``). ``hook`` says how: ``tcx`` (kernel 6.6 and later: a
    BPF link per interface and direction, pinned beside the maps as
    ``tcx-<ifindex>-<direction>``; no qdisc and no classifier in the packet's
    path), ``tc`` (a clsact qdisc and a cls_bpf filter in direct-action mode, at
    (:data:`TC_HANDLE`, :data:`TC_PRIORITY`): every kernel), or ``auto`` (tcx
    when the kernel has it, asked once at the first attach, tc otherwise; the
    choice is logged). Raises :class:`~srv6pm.bpf.BpfUnavailable` when
    the machine cannot run them (checked first), and
    :class:`~.dataplane.DataplaneError` when loading them fails. Not thread safe by itself (the exporter
    serialises calls with its lock).
    """

    def __init__(self, node: str, netns: str | None = None, *, obj_path: str | Path = OBJECT,
                 pin_root: Path = PIN_ROOT, attach: bool = True, hook: str = "auto"):
        if hook not in HOOKS:
            raise ValueError(f"hook must be one of {', '.join(HOOKS)}, got {hook!r}")
        bpf.check_support(obj_path)
        self.hook = hook
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
        self._on: set[str] = set()  # the hook directions whose program is on the attached interfaces
        self._maps = {"counters0": self._counters[0], "counters1": self._counters[1], "exact": self._exact_map,
                      "sources": self._sources_map, "flows": self._flows_map}
        self._model = Model(self._flows_map.max_entries)
        self._names_by_role: dict[str, dict[int, str]] | None = None  # see _names
        self._order: list[tuple[bytes, dict] | None] = [None, None]  # per colour: see _key_names
        self._colour: int | None = None
        self._stale_counters = True  # counters of flows an earlier run had: dropped at the first install
        self.counting_gap = False  # see attach; the exporter clears it once it has acted on it
        self._forget_strangers()
        if attach:
            self.attach()

    # -- attachment ------------------------------------------------------------------
    def attach(self) -> None:
        """Attach the programs to every interface of the namespace not attached yet (lo excepted).

        Only the programs the installed points need: ``altmark_mark`` (tc
        egress) when there is an ingress point, ``altmark_count`` (tc ingress)
        when there is a transit or an egress point; both while nothing is
        installed (a restarted exporter keeps its predecessor's counting going
        until its first install). :meth:`change` attaches and detaches them
        as points come and go. With tcx, a tc filter an earlier exporter left
        in srv6pm's slot is deleted first, so that no packet is counted twice;
        the packets that pass between the filter's deletion and the link's
        attachment (microseconds) are counted by neither, so then
        ``counting_gap`` becomes True: the counts of the periods in flight are
        short, and their next readings can only be baselines."""
        def run() -> list[int]:
            if self.hook == "auto":
                self.hook = "tcx" if bpf.tcx_supported() else "tc"
                log.info("eBPF data plane: programs on the %s hooks (%s)", self.hook,
                         "kernel 6.6 or later: BPF links, no qdisc" if self.hook == "tcx"
                         else "this kernel has no tcx: clsact qdisc, cls_bpf filter", extra={"node": self.node})
            elif self.hook == "tcx" and not bpf.tcx_supported():
                raise bpf.BpfError("this kernel has no tcx hooks (Linux 6.6 or later has them): attach with "
                                   "hook tc (clsact qdisc) instead")
            fresh = [index for index, name in socket.if_nameindex() if name != "lo" and index not in self._attached]
            wanted = self._wanted()
            for index in fresh:
                for direction in wanted:
                    self._hook_on(index, direction)
            self._on = wanted
            return fresh

        try:
            self._attached.update(self._thread.call(run))
        except bpf.BpfError as exc:
            raise DataplaneError(f"{self._where()}: {exc}") from exc

    def _wanted(self) -> set[str]:
        """The hook directions the installed points need (both when none is installed)."""
        ingress = self._model.ingress_points
        others = len(self._model.points) - ingress
        if not ingress and not others:
            return set(PROGRAMS)
        return ({"egress"} if ingress else set()) | ({"ingress"} if others else set())

    def _hook_on(self, index: int, direction: str) -> None:
        fd = self._obj.program_fd(PROGRAMS[direction])
        if self.hook == "tcx":
            if bpf.tc_detach(index, direction, handle=TC_HANDLE, priority=TC_PRIORITY):
                self.counting_gap = True  # (see attach)
            bpf.tcx_attach(index, direction, fd, self._link_pin(index, direction))
        else:
            bpf.tc_attach(index, direction, fd, handle=TC_HANDLE, priority=TC_PRIORITY)

    def _hook_off(self, index: int, direction: str) -> None:
        bpf.tc_detach(index, direction, handle=TC_HANDLE, priority=TC_PRIORITY)
        bpf.tcx_detach(self._link_pin(index, direction))

    def _link_pin(self, index: int, direction: str) -> Path:
        """Where the tcx link of interface ``index``'s ``direction`` hook is pinned."""
        return self._pins / f"tcx-{index}-{direction}"

    def _sync_hooks(self) -> None:
        """After a change of the points: the programs they need on, the others off, on the attached interfaces."""
        wanted = self._wanted()
        if not self._attached or wanted == self._on:
            return

        def run() -> None:
            for index in sorted(self._attached):
                for direction in wanted - self._on:
                    self._hook_on(index, direction)
                for direction in self._on - wanted:
                    self._hook_off(index, direction)
        try:
            self._thread.call(run)
        except bpf.BpfError as exc:
            raise DataplaneError(f"{self._where()}: {exc}") from exc
        self._on = wanted

    def _where(self) -> str:
        return f"netns {self.netns!r}" if self.netns else "current netns"

    def _forget_strangers(self) -> None:
        """Empty the classification tries: this object installs its flows again (counters are kept).
        ``was_marking`` says whether they held an earlier run's ingress flows, marked until now."""
        stale = [(self._exact_map, key) for key, _ in self._exact_map.lookup_batch()]
        stale += [(m, key) for m in (self._sources_map, self._flows_map) for key in m.keys()]
        for m, key in stale:
            m.delete(key)
        self.was_marking = bool(stale)

    # -- flows -----------------------------------------------------------------------
    def install(self, points: Iterable[Point], colour: int) -> None:
        """Count exactly ``points`` from now on and mark with ``colour``; counters of kept points are kept.

        Only the difference to what is installed is applied (:meth:`change`).
        Raises ``ValueError`` for a name listed twice in a role and for what
        :meth:`change` refuses; then nothing changed but the colour, which is
        set first (so the first packet a new match marks has it).
        """
        wanted: dict[tuple[str, str], Point] = {}
        for p in points:
            if p.key in wanted:
                raise ValueError(f"duplicate {p.role} flow name {p.name!r}")
            wanted[p.key] = p
        current = self._model.points
        self.set_colour(colour)
        self.change(add=[p for key, p in wanted.items() if current.get(key) != p],
                    remove=[key for key, old in current.items() if wanted.get(key) != old])

    def change(self, add: Iterable[Point] = (), remove: Iterable[tuple[str, str]] = ()) -> None:
        """Stop counting the points named (name, role) in ``remove``, then count ``add``; the others are untouched.

        A few map updates per point, whatever the number installed. Raises
        ``ValueError`` for two points with one FlowMonID, one name twice in a
        role, two ingress flows with one match, ingress flows whose source
        prefixes nest (the classification needs equal or disjoint source
        prefixes) or more flows than the maps hold: then nothing changed.
        :class:`DataplaneError` if the kernel refuses a map update; the
        updates made are undone first (the counters of a point whose removal
        was undone restart from zero, which a reading sees as a counter that
        went backwards, never as loss).
        """
        change = self._model.change(add, remove)
        self._names_by_role = None  # the read path's index of the points, made again at the next read
        self._order = [None, None]
        done: list[Op] = []
        try:
            if self._stale_counters:
                self._drop_stale_counters()
            for op in change.ops:
                if self._run(op):
                    done.append(op)
        except bpf.BpfError as exc:
            for op in reversed(done):
                try:
                    self._run(op.inverse())
                except bpf.BpfError:
                    log.warning("undoing a map update failed", extra={"node": self.node, "map": op.map})
            change.revert()
            raise DataplaneError(f"{self._where()}: {exc}") from exc
        self._sync_hooks()

    def _run(self, op: Op) -> bool:
        """Do one map operation; False if it changed nothing (the key was there, or was not)."""
        m = self._maps[op.map]
        if op.verb == "update":
            return m.update(op.key, op.value, op.flags)
        return m.delete(op.key)

    def _drop_stale_counters(self) -> None:
        """Delete the counters of FlowMonIDs an earlier run had and this one does not (once, at the first change)."""
        ids = self._model.by_id
        for m in self._counters:
            keys, _, count = m.dump()
            for (flowmon_id,) in _U32.iter_unpack(keys[:count * _U32.size]):
                if flowmon_id not in ids:
                    m.delete(_U32.pack(flowmon_id))
        self._stale_counters = False

    @property
    def colour(self) -> int | None:
        return self._colour

    def set_colour(self, colour: int) -> None:
        """Mark with ``colour`` from the next packet on, on every CPU (one map update); ``ValueError`` for a
        colour that is not 0 or 1, :class:`DataplaneError` if the kernel refuses."""
        colour = check_colour(colour)
        try:
            self._colour_map.update(_U32.pack(0), _U32.pack(colour))
        except bpf.BpfError as exc:
            raise DataplaneError(f"{self._where()}: {exc}") from exc
        self._colour = colour

    def program_fd(self, name: str) -> int:
        """The descriptor of the loaded program ``altmark_mark`` or ``altmark_count``."""
        return self._obj.program_fd(name)

    def points(self) -> list[Point]:
        return list(self._model.points.values())

    # -- reading ---------------------------------------------------------------------
    def read_all(self, colour: int) -> dict[str, Reading]:
        """Role -> the counters of ``colour`` of every installed flow of that role, from one batch lookup.

        The per-CPU values are summed a whole column at a time (:func:`_per_cpu_sums`), not per flow.
        """
        ncpu = bpf.possible_cpus()
        try:
            keys, values, count = self._counters[colour].dump()
        except bpf.BpfError as exc:
            raise DataplaneError(f"{self._where()}: {exc}") from exc
        packets, nbytes = _per_cpu_sums(values, count, ncpu)
        counts: dict[str, dict[str, tuple[int, int]]] = {}
        for role, names in self._key_names(colour, keys, count).items():  # each key's name in the role
            named: dict = {}
            if names is not None:  # (None: not a point of this role, dropped after)
                named = dict(zip(names, zip(packets, nbytes, strict=True), strict=True))
                named.pop(None, None)
            counts[role] = named
        return {role: Reading(role, colour, counts[role], self.generation) for role in ROLES}

    def _key_names(self, colour: int, keys: bytes, count: int) -> dict[str, list[str | None] | None]:
        """Role -> the name of each of the ``count`` keys of ``keys`` (a dump of ``colour``'s map) in that role,
        None where a key is no point of the role; None for a role without points. Kept for the next read of
        ``colour``: a map whose keys did not change dumps them in the same order, so that read finds them
        named already (no lookup per flow)."""
        cached = self._order[colour]
        if cached is not None and cached[0] == keys and self._names_by_role is not None:
            return cached[1]
        size = count * _U32.size
        ids = memoryview(keys)[:size].cast("I").tolist() if _LITTLE else [i for (i,) in _U32.iter_unpack(keys[:size])]
        named: dict[str, list[str | None] | None] = {}
        for role, names in self._names().items():  # FlowMonID -> name of each role's points
            name_of: Callable[[int], str | None] = names.get
            named[role] = list(map(name_of, ids)) if names else None
        self._order[colour] = (keys, named)
        return named

    def _names(self) -> dict[str, dict[int, str]]:
        """Role -> FlowMonID -> name of the installed points (made again after a change)."""
        if self._names_by_role is None:
            self._names_by_role = {role: {} for role in ROLES}
            for flowmon_id, p in self._model.by_id.items():
                self._names_by_role[p.role][flowmon_id] = p.name
        return self._names_by_role

    # -- lifecycle -------------------------------------------------------------------
    def detach(self) -> None:
        """Take the programs off every interface, from both kinds of hook (counting and marking stop; maps stay
        pinned)."""
        def run() -> None:
            for index, _ in socket.if_nameindex():
                for direction in PROGRAMS:
                    bpf.tc_detach(index, direction, handle=TC_HANDLE, priority=TC_PRIORITY)
            for pin in sorted(self._pins.glob("tcx-*")):
                bpf.tcx_detach(pin)
        self._thread.call(run)
        self._attached.clear()
        self._on = set()

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

