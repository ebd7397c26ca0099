"""The node exporter's loop: loss monitoring of a changing set of flows, plus STAMP (``probes``).

The monitored flows, SRv6 routes and STAMP sessions come over the southbound
API (:mod:`.api`) at any time; the configuration file's flows and STAMP
settings are an initial state applied through the same code path. At start,
the exporter first re-applies its persisted applied state (:mod:`.intent`),
so a restart leaves the node as it was, then the file's objects. With no
state and no flows it does not touch the kernel at all.

On a schedule fixed by the period clock (all nodes agree on it through NTP):

* at the start of every period ``k`` (only while the node is the ingress of
  some flow): switch the marking colour to ``k mod 2`` — one nftables
  transaction or one map update, in a thread of its own, so that a guard
  (or a broker that is slow to answer) never delays it;
* at the guard time of period ``k`` (the middle of ``k+1``): read the counters
  of colour ``k mod 2`` of each role that has flows, turn them into blocks
  (:mod:`.blocks`), publish one ``srv6pm.counters`` record per flow and role,
  keyed by flow, and persist the new baselines.

Records (these and the STAMP samples) are published in batches, in order, by
the :class:`~.outbox.Outbox`, which rides out an unreachable broker: what it
cannot publish waits in a bounded on-disk buffer (:mod:`.spool`,
``buffer_size`` and ``buffer_dir`` in the configuration), across restarts
too, and is published first when the broker is back.

The data plane is one of two backends (``dataplane`` in the configuration):
``ebpf`` (:mod:`.ebpf`: the colour in RFC 9343's option, counted at the
ingress, at every transit point and at the egress, the customer's DSCP
untouched) or ``nftables`` (:mod:`.dataplane`: the colour in two DSCP
codepoints, ingress and egress only). Its state is installed with the first
flow and changed incrementally, only the flows that come or go
(:meth:`Exporter.change_flows`). With ``ebpf``, :meth:`Exporter.start` first
checks that the programs load here (the verifier runs, nothing is attached)
and raises :class:`~srv6pm.bpf.BpfUnavailable` or
:class:`~srv6pm.bpf.VerifierError` naming what is missing; it never falls
back to the other backend by itself. A flow that stops, or whose match changes,
loses its counters; its baselines are forgotten, so its next reading is only
a baseline. One lock (:attr:`Exporter.lock`) serialises the loop's use of
the data plane with the API's changes.

A guard read that cannot happen on time (the process stalled into period
``k+2``, when colour ``k mod 2`` is being marked again) is skipped: the next
reading of that colour then only re-baselines, so the stall shows up as
incomplete periods, never as loss. So are the ingress blocks of period ``k``
when the switch away from its colour came late (the process stalled across
the start of ``k+1``): later than three quarters of the time from that start
to the guard (the last quarter is left for the packets marked before the
switch to reach the other counting points), or not yet at the guard. Packets
marked with ``k``'s colour until then may reach the other counting points
after their (on time) guard reads, so the ingress count would not match theirs (a 0.7 s stall at a 1 s
period invented 60 lost packets in ``k`` and -60 in ``k+2``). The other roles
count by the colour the packets carry, which this node's switch does not
decide.

Marking begins with the node's first ingress flows, in the colour of the
period it begins in, set before their first match. The table's colour may be
stale then: a new table's is 0, the switches run only while there are
ingress flows, and an install moves the hooks after the match is in, which
takes long on a busy machine (a tcx detach waits for the kernel). Packets
marked with a stale colour after the other points' guard read of it are in
this node's baseline only, so two periods on more arrive than were sent (the
likely cause of +19 and +9 seen once, after a rebooted router's flows were
installed again). That beginning counts as the period's switch.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from itertools import repeat
from typing import TYPE_CHECKING, Iterable

from srv6pm import metrics, records, srv6
from srv6pm.clock import PeriodClock
from srv6pm.config import KafkaSettings
from srv6pm.errors import UnavailableError
from srv6pm.publish import Publisher, Send
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

from .blocks import Baselines
from .config import ExporterConfig
from .dataplane import CountingTable, FlowMatch, Reading
from .intent import Intent, path_for
from srv6pm.nft import Nft
from .outbox import Outbox, gc_paused
from .probes import Probes
from .routes import Routes
from .spool import Spool

if TYPE_CHECKING:
    from .api import ApiServer

__all__ = ["DataplaneUnavailable", "Exporter"]

log = logging.getLogger("srv6pm.exporter")

# How close to the end of the safe window (the start of period k+2) a guard
# read may still start.
_GUARD_MARGIN_NS = 50_000_000
# The codec of the exporter's record batches (srv6pm.publish.CODECS). A guard's records differ only in their
# numbers: zstd makes 100,000 of them (20 MB) some 400 KB in about 20 ms, so the broker takes 1/50 of the bytes.
COMPRESSION = "zstd"
ROLE_NAMES = validate.ROLE_NAMES
ROLES = tuple(ROLE_NAMES.values())


class DataplaneUnavailable(UnavailableError):
    """The configured data plane cannot run on this machine; ``str()`` says why and what to choose instead."""


class Exporter:
    """Marks, counts and publishes for one node; holds what the southbound API applied.

    ``api`` (an :class:`~srv6pm.exporter.api.ServerSettings`, None: no API)
    is where :meth:`run` serves the southbound API. ``publish_timeout_ms``
    bounds each request to the broker (a publish, a connection attempt); a
    request that times out is retried later, its records kept meanwhile.
    Raises :class:`~.spool.SpoolError` if the buffer directory cannot be used.
    """

    def __init__(self, config: ExporterConfig, kafka: KafkaSettings, api=None, *, publish_timeout_ms: int = 10_000):
        self.config = config
        self.clock = PeriodClock(config.period)
        self.boot_id = uuid.uuid4().hex
        self.started_ns = time.time_ns()
        self.lock = threading.RLock()
        buffer_dir = config.buffer_path()
        self._buffer_tmp: str | None = None  # the throw-away buffer directory made when none is configured
        if not buffer_dir:
            buffer_dir = self._buffer_tmp = tempfile.mkdtemp(prefix=f"srv6pm-buffer-{config.node}-")
        options, client_id = kafka.client_options(), f"srv6pm-exporter-{config.node}"
        self.outbox = Outbox(
            Spool(buffer_dir, config.buffer_size),
            lambda: Publisher(options, client_id, request_timeout_ms=publish_timeout_ms, compression=COMPRESSION), options,
            [records.COUNTERS, records.STAMP], config.node, timeout_ms=publish_timeout_ms)
        self._nft: Nft | None = None
        self._table = None  # CountingTable (nftables) or EbpfTable (ebpf), made with the first flow
        self._flows: dict[str, dict] = {role: {} for role in ROLES}  # role -> name -> what the table counts
        # (flow, role) -> (flowmon_id, position) that its records carry: see flow_ids
        self._points: dict[tuple[str, str], tuple[int, int | None]] = {}
        self._routes: Routes | None = None
        self._baselines = Baselines(config.state_file)
        self._encoder = records.CounterEncoder(config.node, config.period)  # the guard's record values
        self.probes = Probes(config.node, config.period, self.outbox, config.netns, config.reflector_backend,
                             boot_id=self.boot_id)
        self.intent = Intent(path_for(config.state_file))
        self._api_settings = api
        self._server: ApiServer | None = None
        self._stop = threading.Event()
        self._switch_error: BaseException | None = None  # what ended the colour switches, raised by run()
        # (period, time_ns) of the last colour switch (under the lock): the switching thread's, or the beginning of
        # ingress marking (_began_marking); None before either
        self._switched: tuple[int, int] | None = None
        self._taken_over = False  # whether an earlier run's ingress matches were marking (see _began_marking)
        self._closed = False

    # -- data plane, used by the API (under self.lock) --------------------------------
    @property
    def routes(self) -> Routes:
        """The SRv6 routes of the data-plane namespace (opened at first use)."""
        with self.lock:
            if self._routes is None:
                self._routes = Routes(self.config.netns, reserve=self.config.dataplane == "ebpf")
            return self._routes

    def _open_table(self):
        if self.config.dataplane == "ebpf":
            from .ebpf import EbpfTable
            return EbpfTable(self.config.node, self.config.netns)
        self._nft = Nft(self.config.netns)
        return CountingTable(self._nft, dscp=self.config.dscp)

    def _counted(self, f: pb.FlowMonitor):
        """(role, what the data plane counts for ``f``): an ebpf ``Point`` or an nftables ``FlowMatch``."""
        role = ROLE_NAMES[f.role]
        if self.config.dataplane == "ebpf":
            from .ebpf import Point
            return role, Point(f.flow, role, f.flowmon_id, f.position, f.source_prefix, f.destination_prefix)
        return role, FlowMatch(f.flow, f.source_prefix, f.destination_prefix)

    def change_flows(self, add: Iterable[pb.FlowMonitor] = (), remove: Iterable[pb.FlowMonitor] = ()) -> None:
        """Stop counting ``remove`` and count ``add`` (validated ``FlowMonitor`` messages) from now on, in one step.

        ``remove`` are applied monitors that stop or are replaced; every other
        flow and its counters are untouched, and the cost does not grow with
        their number (a replaced monitor that counts the same way keeps its
        counters). The data plane's state is created with the first flow,
        reconciling what an earlier run left in the kernel (counters of kept
        flows kept). Raises ``ValueError`` (flows the data plane cannot tell
        apart) or :class:`~srv6pm.exporter.dataplane.DataplaneError`; then
        nothing changed but, for a node without ingress flows, the colour
        its data plane would mark (nothing, with no ingress flow).
        """
        ebpf = self.config.dataplane == "ebpf"
        added = list(add)
        adds = {(c.name, role): c for role, c in map(self._counted, added)}
        with self.lock:
            gone = []
            for f in remove:
                key = (f.flow, ROLE_NAMES[f.role])
                old = self._flows[key[1]].get(f.flow)
                if old is not None and adds.get(key) == old:
                    del adds[key]  # counts the same way: nothing to change, counters kept
                elif old is not None:
                    gone.append(key)
            if not adds and not gone:
                self._name(added)  # counted the same way (nftables): only its FlowMonID may have changed
                return
            if self._table is None:
                self._install_first(list(adds.items()))
            else:
                if not self._flows["ingress"] and any(role == "ingress" for _, role in adds):
                    period = self.clock.period_at(time.time_ns())  # before the first match marks a packet
                    self._table.set_colour(self.clock.colour(period))
                    self._began_marking(period)
                if ebpf:
                    self._table.change(add=adds.values(), remove=gone)
                    self._after_gap(self._table)
                else:
                    wanted = {role: [c for (_, r), c in adds.items() if r == role] for role in ("ingress", "egress")}
                    self._table.change(add=wanted, remove={role: [n for n, r in gone if r == role] for role in ROLES})
            for name, role in gone:
                del self._flows[role][name]
                self._points.pop((name, role), None)
                self._baselines.forget(role, name)  # its counters are new
                self._encoder.forget(name, role)
            for (name, role), counted in adds.items():
                self._flows[role][name] = counted
            self._name(added)
        log.info("counting", extra={"node": self.config.node, "dataplane": self.config.dataplane,
                                    **{role: len(self._flows[role]) for role in ROLES}, "added": len(adds),
                                    "removed": len(gone)})

    def _name(self, monitors: list[pb.FlowMonitor]) -> None:
        """Note what the records of ``monitors`` (now counted) carry (under the lock): see :meth:`flow_ids`;
        their records' constant part is formatted once here, not at every guard."""
        ebpf = self.config.dataplane == "ebpf"
        for f in monitors:
            key = (f.flow, ROLE_NAMES[f.role])
            if ebpf:
                self._points[key] = (f.flowmon_id, f.position)
            elif f.flowmon_id:
                self._points[key] = (f.flowmon_id, None)
            else:
                self._points.pop(key, None)
            self._encoder.prepare(*key, *self._points.get(key, (None, None)))

    def _install_first(self, adds: list) -> None:
        """Open the data plane with its first flows (under the lock); on failure nothing stays open."""
        table = self._open_table()  # (loading and attaching the programs can outlast the start of a period)
        period = self.clock.period_at(time.time_ns())
        colour = self.clock.colour(period)
        try:
            if self.config.dataplane == "ebpf":
                table.install([c for _, c in adds], colour)
            else:
                table.install([c for (_, r), c in adds if r == "ingress"],
                              [c for (_, r), c in adds if r == "egress"], colour)
        except BaseException:
            if self._nft is not None:
                self._nft.close()
                self._nft = None
            else:
                table.close()
            raise
        finally:  # an earlier run's marking ends where this run's table finds it (ebpf: the open, nftables: the
            # install), maybe in an attempt that fails
            self._taken_over = self._taken_over or table.was_marking
        self._table = table
        self._began_marking(period, now=self._taken_over)
        self._after_gap(table)

    def _began_marking(self, period: int, now: bool = False) -> None:
        """Note that the data plane marks ``period``'s colour from now on (under the lock; module docstring):
        the colour was set, at the install or before the first match of the node's first ingress flows.

        For :meth:`_late_switch` this is ``period``'s switch: made on time if nothing was marked before, or
        now (``now``) if an earlier run's matches went on marking, in the colour it left, which may be stale,
        until this run took the data plane over.
        """
        self._switched = (period, time.time_ns() if now else self.clock.start_ns(period))

    def _after_gap(self, table) -> None:
        """After the data plane had a counting gap (``counting_gap``: a tc filter handed over to tcx), forget
        every baseline (under the lock): the periods in flight are short by the packets of the gap, so they are
        published as incomplete, never as loss (:mod:`.blocks`)."""
        if table.counting_gap:
            table.counting_gap = False
            log.warning("counting moved from a tc filter to tcx links: the next reading of each colour is a "
                        "baseline only, its periods incomplete", extra={"node": self.config.node})
            self._baselines.forget_all()

    def read_counters(self, flow: str = "") -> list[tuple[str, int, Reading]]:
        """``[(role, colour, reading)]`` of every role with flows and both colours (only ``flow``'s counts if given)."""
        out: list[tuple[str, int, Reading]] = []
        with self.lock:
            if self._table is None:
                return out
            for colour in (0, 1):
                readings = self._table.read_all(colour)
                for role in ROLES:
                    if not self._flows[role]:
                        continue
                    reading = readings[role]
                    if flow:
                        reading = Reading(role, colour, {k: v for k, v in reading.counts.items() if k == flow},
                                          reading.generation)
                    out.append((role, colour, reading))
        return out

    def flow_ids(self, flow: str, role: str) -> tuple[int, int | None] | None:
        """(flowmon_id, position) that the records of a counted flow carry, or None: none.

        With the ebpf data plane both, as its monitor gives them. With nftables the monitor's FlowMonID
        when it has one (the collector gives every flow one; an exporter run from its own file may not), and
        position None: nftables counts only at the two ends, so its records carry no position (which
        would make the processor compute segments)."""
        return self._points.get((flow, role))

    # -- lifecycle --------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def start(self) -> None:
        """Re-apply the persisted state, then the configuration file's objects; start the API.

        A persisted object that no longer applies is dropped with a warning;
        one of the file that does not apply raises (the file is wrong).
        """
        from . import api
        if self.config.dataplane == "ebpf":
            self._check_ebpf()
        no_srv6 = srv6.missing()
        if no_srv6 is not None:  # it still counts and publishes; only its routes cannot be made
            log.warning("this kernel makes no SRv6 routes: every local SID and policy will be refused",
                        extra={"node": self.config.node, "reason": no_srv6})
        self.outbox.start()
        node = api.Node(self)
        restored = self.intent.load()
        with self.intent.held():
            # one batch: the flows become one data-plane change, which keeps the counters of every kept flow
            reply = node.batch(pb.Batch(items=[validate.batch_item(m) for m in restored]))
            for message, result in zip(restored, reply.results, strict=True):  # one result per item
                if result.code:
                    log.warning("applied object no longer applies, dropped",
                                extra={"node": self.config.node, "object": type(message).__name__,
                                       "error": result.error})
                    self.intent.remove(message)
            for message in self.config.objects():
                node.apply(message)
        if self._api_settings is not None:
            self._server = api.ApiServer(node, self._api_settings)
            self._server.start()

    def _check_ebpf(self) -> None:
        """Load the programs once (the verifier runs; nothing is pinned or attached) so that a machine that
        cannot run them is told so at start, with the verifier's whole log if it refuses one."""
        from srv6pm import bpf

        from . import ebpf
        try:
            bpf.check_loadable(ebpf.OBJECT)
        except bpf.BpfError as exc:
            raise DataplaneUnavailable(bpf.unavailable(
                "ebpf data plane", exc, "the nftables data plane",
                "dataplane: nftables in the file, --dataplane nftables or SRV6PM_DATAPLANE=nftables")) from None

    def run(self) -> None:
        """:meth:`start`, then loop until :meth:`stop`; everything is closed at the end."""
        try:
            self.start()
            self._loop()
        finally:
            self.close()

    def _loop(self) -> None:
        """The guard times, in this thread; the colour switches in a thread of their own (:meth:`_switching`),
        so that nothing a guard waits for can delay a switch."""
        clock = self.clock
        now = time.time_ns()
        k = clock.period_at(now)
        next_guard = k - 1 if now < clock.guard_ns(k - 1) else k  # next period whose block is read
        switcher = threading.Thread(target=self._switching, args=(k,), name=f"colour-{self.config.node}",
                                    daemon=True)
        switcher.start()
        if self._server is not None:
            self._server.serving(True)
        try:
            while not self._stop.wait(max(0, clock.guard_ns(next_guard) - time.time_ns()) / 1e9):
                now = time.time_ns()
                if now >= clock.guard_ns(next_guard):
                    self._guard(next_guard, now)
                    next_guard += 1
        finally:
            self._stop.set()
            switcher.join()
        if self._switch_error is not None:
            raise self._switch_error

    def _switching(self, boundary: int) -> None:
        """At the start of every period from ``boundary`` on, mark its colour (while the node is the ingress of
        some flow), unless that period's switch was made already (:meth:`_began_marking`). Started with the
        current period: a start that outlasted the start of a period switches at once. A switch that fails
        stops the exporter: :meth:`_loop` raises its error."""
        clock = self.clock
        try:
            while not self._stop.wait(max(0, clock.start_ns(boundary) - time.time_ns()) / 1e9):
                if clock.period_at(time.time_ns()) < boundary:
                    continue  # woke a little early
                with self.lock:
                    current = clock.period_at(time.time_ns())  # (now: the lock may have been held across a start)
                    done = self._switched is not None and self._switched[0] >= current
                    if self._table is not None and self._flows["ingress"] and not done:
                        self._table.set_colour(clock.colour(current))
                        self._switched = (current, time.time_ns())
                boundary = current + 1
        except BaseException as exc:
            self._switch_error = exc
            self._stop.set()

    def _guard(self, k: int, now: int) -> None:
        """Read, publish and persist the block of period ``k``.

        Python's cyclic garbage collector is paused meanwhile, and until the
        outbox has published these records (:func:`~.outbox.gc_paused`): the
        guard makes a few objects per flow, none of them in a cycle, and at
        100,000 flows the collections it would trigger over the exporter's live
        objects took about a third of the guard's time.
        """
        with gc_paused():  # (with the outbox's publish of these records, which pauses it too)
            self._guard_block(k, now)

    def _guard_block(self, k: int, now: int) -> None:
        clock = self.clock
        if now > clock.start_ns(k + 2) - _GUARD_MARGIN_NS:
            log.warning("guard time missed, skipping the block", extra={"node": self.config.node, "period": k})
            metrics.get().guard_misses.labels("exporter", self.config.node).inc()
            return
        colour = clock.colour(k)
        out: list[Send] = []
        topic = records.COUNTERS
        with self.lock:
            if self._table is None:
                return
            readings = self._table.read_all(colour)
            late = self._flows["ingress"] and self._late_switch(k)
            for role in ROLES:
                if not self._flows[role] or (role == "ingress" and late):
                    continue
                reading = readings[role]
                blocks = self._baselines.advance(role, colour, k, reading.generation, reading.counts)
                keys, values = self._encoder.encode_keyed(role, k, colour, blocks, now, self._points)
                # tuple.__new__ makes each Send in C, not through its Python-level constructor
                out += map(tuple.__new__, repeat(Send), zip(repeat(topic), repeat(None), keys, values, strict=False))
        self._encoder.rotate()
        self.outbox.put(out, durable=True)
        m = metrics.get()
        m.blocks_published.labels("exporter", self.config.node).inc(len(out))
        m.records_out.labels("exporter", records.COUNTERS).inc(len(out))
        with self.lock:
            self._baselines.save()  # while the outbox's thread publishes
        # No wait for the broker's acknowledgement: the outbox publishes, keeps and retries on its own.
        log.info("block", extra={"node": self.config.node, "period": k, "records": len(out)})

    def _late_switch(self, k: int) -> bool:
        """Whether the switch away from period ``k``'s colour came too late for its ingress blocks (under the
        lock; module docstring). Logged and counted as a missed guard."""
        clock, switched = self.clock, self._switched
        start = clock.start_ns(k + 1)
        deadline = start + 3 * (clock.guard_ns(k) - start) // 4
        if switched is None or not (switched[0] == k or (switched[0] == k + 1 and switched[1] > deadline)):
            return False  # on time, or no switch to tell by (no ingress flows yet)
        log.warning("colour switch came late, skipping the ingress block",
                    extra={"node": self.config.node, "period": k,
                           "switch_ms_after_start": None if switched[0] == k else (switched[1] - start) / 1e6})
        metrics.get().guard_misses.labels("exporter", self.config.node).inc()
        return True

    def close(self) -> None:
        """Stop the API, the probes and the outbox (unpublished records to disk); idempotent. Routes, table and
        counters stay."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.stop()
        self.probes.stop()
        self.outbox.close(timeout=5)
        if self._buffer_tmp is not None:
            shutil.rmtree(self._buffer_tmp, ignore_errors=True)
        with self.lock:
            if self._nft is not None:
                self._nft.close()
            elif self._table is not None:
                self._table.close()  # ebpf: programs stay attached, maps pinned
            if self._routes is not None:
                self._routes.close()
        self.intent.close()
