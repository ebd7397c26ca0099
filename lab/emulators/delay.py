"""Per-link delay for the lab: a user-space delay element on NFQUEUE.

A scenario link ``{ends: [r2, r3], delay_ms: 20}`` becomes two
:class:`LinkDelay` elements, one per direction: in namespace ``r2`` on the
interface towards ``r3`` (named ``r3``), and in ``r3`` on the interface ``r2``.

Why NFQUEUE
-----------
The kernels of these machines have no ``netem`` qdisc and no ``fq``/``etf``
either (so no EDT pacing from BPF), and nftables has no delay statement. What
they do have is nfnetlink_queue: a netfilter hook hands each packet to a
user-space program and keeps it until that program gives a verdict. Holding
the verdict for D ms delays the packet by D ms without touching it or the
topology, costs nothing where no element runs, and works per namespace.

How it works
------------
:meth:`LinkDelay.start` binds an NFQUEUE (:class:`srv6pm.lab.emulators.nfqueue.NfQueue`,
socket created inside the namespace), then adds a rule ``oifname DEV ->
NFQUEUE n`` (families ``ip6`` and ``ip``, one transaction) to the chain
``postrouting`` of table ``srv6pm_delay``, which the elements of a namespace
share (created by the first, removed by the last). The hook is
**postrouting**, priority 500: the last hook before the device, which sees
every packet leaving it -- locally generated ones, forwarded ones and SRv6
traffic: a transit node's ``End`` forwards the encapsulated packet
(``ip6_forward`` -> ``ip6_output``), and an ingress node's ``encap seg6``
route sends the encapsulated packet down the same output path, both with the
link interface as output device (tests/test_delay.py checks both).
Priority 500 comes after every usual postrouting chain (NAT is 100), so
counters and marks of other tables see a packet before it waits. Neighbour
discovery leaving the interface is delayed too, as on a long real link. The
queue is bound before the rule exists, so no packet is queued without a reader.

nftables' own ``queue`` statement is missing from this kernel
(``CONFIG_NFT_QUEUE`` unset) and libnftables' JSON cannot express the xtables
``NFQUEUE`` target, so the rule is added over nf_tables netlink
(:func:`srv6pm.lab.emulators.nfqueue.add_queue_rule`); it is found (by its comment),
read and deleted through :class:`srv6pm.nft.Nft` (libnftables JSON).

The table is shared, not one per element, because of a kernel behaviour:
deleting *any* base chain in a namespace makes the kernel drop every packet
held by every queue there (``nf_queue_nf_hook_drop``). With one table per
element, stopping one element would drop what its neighbours hold. Deleting
a rule does not do that; so an element removes only its rule, and the chain
and table go (atomically, only if no rule is left) with the last element.
Other tables' base chains removed in the namespace while an element holds
packets (an exporter re-installing its table, say) still cost those packets:
the kernel then answers their verdicts with ENOENT, and the element counts
them in ``lost`` and logs it.

One thread per element (SCHED_FIFO, priority 10, timer slack 1 ns, so its
wake-ups are on time on a busy machine) runs one loop: ``select()`` on the
queue's socket with a timeout equal to the time left until the oldest held
packet is due; each received packet is stamped with CLOCK_MONOTONIC and
appended to a FIFO; every packet whose ``received + delay`` has passed is
released with ``NF_ACCEPT``: one ``NFQNL_MSG_VERDICT`` per packet (so the
kernel can name a packet it lost), all of them in one ``send()``. The delay
is constant, so due times are in arrival order and the FIFO keeps the order
of the link. A packet is never released early.

:meth:`LinkDelay.stop` deletes the rule first (nothing new is queued), then
releases every held packet at once and keeps accepting stragglers until the
kernel holds none for the queue, then unbinds (unbinding, or a process
killed with SIGKILL, makes the kernel drop whatever the queue still holds)
and removes the table if no other element uses it. Held packets are never
dropped by a stop.

No silent bypass: the rule has no ``bypass`` flag and the queue no
fail-open. If the element cannot keep up (queue full: 65536 packets; socket
overrun: ENOBUFS) the kernel drops and counts (``kernel_queue_dropped``,
``kernel_user_dropped``, ``enobufs`` in :meth:`LinkDelay.stats`). The rule of
a killed element stays and black-holes the link (loud, not silent) until a
new element for that interface replaces it, or the namespace goes.

Measured here (2 vCPUs, a VM shared with other work; bench/delay_element.py)
--------------------------------------------------------------------------
* Precision, element in its own process (the command line below), 1000
  forwarded packets/s: one-way delay minus the configured delay p50 +0.15..0.27
  ms, p99 +0.4..1.4 ms, max +0.8..2.5 ms (baseline path without the element:
  p50 0.02 ms, p99 0.04..0.09 ms). Quiet periods give p99 +0.4 ms; busy ones
  p99 up to +3..5 ms and a max up to +20 ms, which is the VM's wake-up
  latency: a bare real-time thread sleeping 1 ms in select() wakes late by
  p50 55 us, p99 170 us, and up to 3..10 ms at times. (Spinning the last
  ~300 us instead of sleeping gets p99 to 30 us, at the price of a CPU per
  element: not done.) Inside another Python process the element shares that
  process' GIL: expect worse tails (tests allow p99 +15 ms there).
* Per-packet cost (CPU of the element thread, including the kernel work its
  verdict calls do: forwarding the packet, often into the next namespace's
  socket): about 18-25 us/packet when busy (>= 30 000 packets/s); at low
  rates each packet needs two wake-ups, and a wake-up costs ~50 us of CPU on
  these VMs, so 1000 packets/s cost ~15-20 % of a vCPU per element.
* Limits: no loss up to ~40 000 packets/s per element; precise (p99 error
  <= 2 ms) up to ~10 000-20 000 packets/s; above that releases get late, and
  from ~80 000 packets/s the kernel drops (socket overrun, counted). Locally
  generated traffic through an element is also bounded by the sender's socket
  buffer: held packets stay charged to it (a UDP socket with the default
  208 KiB send buffer holds about 250 small packets: 12 500 packets/s at
  20 ms), then the sender blocks or gets EAGAIN. Elements of one process share
  the GIL: very busy elements belong in separate processes.

Command line (one process, one or more elements, until SIGTERM/SIGINT)::

    python -m srv6pm.lab.emulators.delay --netns r2 --dev r3 --delay-ms 20 --queue 1 \\
        [--netns r3 --dev r2 --delay-ms 20 --queue 1 ...] [--rt-priority 10] [-v]

prints ``{"event": "ready", ...}`` once every element runs and one JSON line
``{"event": "stats", "elements": [...]}`` at exit (exit status 0; 1 if an
element failed; 2 for bad usage). :class:`DelayProcess` runs it from Python.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import deque

from srv6pm.nft import Nft, NftError
from .launcher import LaunchError, ModuleLauncher
from .nfqueue import NfQueue, NfQueueError, add_queue_rule, queue_bindings, remove_table_if_unused
from srv6pm.netns import NetnsError, NetnsThread

__all__ = ["CHAIN", "TABLE", "DelayError", "DelayProcess", "LinkDelay", "main"]

log = logging.getLogger("srv6pm.lab.delay")

TABLE = "srv6pm_delay"    # shared by the delay elements of a namespace (one per family)
CHAIN = "postrouting"
HOOK = "postrouting"
PRIORITY = 500
FAMILIES = ("ip6", "ip")
COMMENT = "srv6pm-delay dev={dev} queue={queue}"
PR_SET_TIMERSLACK = 29
RT_PRIORITY = 10


class DelayError(LaunchError):
    """An element could not start (queue taken, interface already delayed, namespace missing, ...)."""


def _set_timer_slack(ns: int = 1) -> bool:
    """Make this thread's timed waits wake on time (default slack is 50 us)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) == 0
    except OSError:
        return False


def _thread_times() -> tuple[float, float]:
    """(user, system) CPU seconds of the calling thread (clock-tick resolution)."""
    try:
        with open("/proc/thread-self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def _parse_comment(text: str) -> tuple[str, int] | None:
    """(dev, queue) of a delay rule's comment, None for any other comment."""
    parts = text.split()
    if len(parts) != 3 or parts[0] != "srv6pm-delay" or not parts[1].startswith("dev=") \
            or not parts[2].startswith("queue=") or not parts[2][6:].isdigit():
        return None
    return parts[1][4:], int(parts[2][6:])


class LinkDelay:
    """Delay every packet leaving ``dev`` in namespace ``netns`` by ``delay_ms``, via NFQUEUE ``queue``.

    ``netns`` None means the current namespace. ``queue`` must be free in
    that namespace (queue numbers are per namespace). ``late_ms``: a
    release later than this after its due time counts as a late release.
    ``maxlen``: the kernel's queue limit. ``rt_priority``: the loop thread
    runs SCHED_FIFO at this priority (None: normal scheduling) so that its
    wake-ups are on time on a busy machine; it only ever blocks in select()
    or does a bounded amount of work, and the kernel's RT throttling applies.

    :meth:`start` and :meth:`stop` are idempotent; :meth:`stats` may be
    called at any time from any thread. Use as a context manager.
    """

    def __init__(self, netns: str | None, dev: str, delay_ms: float, queue: int, *, late_ms: float = 1.0,
                 maxlen: int = 65536, families: tuple[str, ...] = FAMILIES, priority: int = PRIORITY,
                 rt_priority: int | None = RT_PRIORITY):
        if not isinstance(delay_ms, (int, float)) or isinstance(delay_ms, bool) or not 0 <= delay_ms <= 60_000:
            raise ValueError(f"delay_ms must be a number between 0 and 60000, got {delay_ms!r}")
        if not isinstance(queue, int) or isinstance(queue, bool) or not 0 <= queue <= 0xFFFF:
            raise ValueError(f"queue must be an integer 0..65535, got {queue!r}")
        if not isinstance(dev, str) or not dev or len(dev.encode()) >= 16 or any(c.isspace() for c in dev):
            raise ValueError(f"invalid interface name {dev!r}")
        self.netns = netns
        self.dev = dev
        self.delay_ms = float(delay_ms)
        self.queue = queue
        self.table = TABLE
        self.comment = COMMENT.format(dev=dev, queue=queue)
        self.families = tuple(families)
        self.priority = priority
        self._delay_ns = round(self.delay_ms * 1e6)
        self._late_ns = round(late_ms * 1e6)
        self._maxlen = maxlen
        self.rt_priority = rt_priority
        self._nfq: NfQueue | None = None
        self._nft: Nft | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._installed = False
        self._final: dict | None = None
        # statistics (written by the loop thread only)
        self._held: deque = deque()
        self.packets = 0           # packets received from the kernel
        self.delayed = 0           # released when due
        self.released_on_stop = 0  # released early because the element stopped
        self.max_depth = 0
        self.late = 0
        self._late_sum_ns = 0
        self._late_max_ns = 0
        self.sends = 0
        self.cpu_s = 0.0
        self.cpu_user_s = self.cpu_sys_s = 0.0

    def __repr__(self) -> str:
        return (f"LinkDelay(netns={self.netns!r}, dev={self.dev!r}, delay_ms={self.delay_ms:g}, "
                f"queue={self.queue}, {'running' if self.running else 'stopped'})")

    def _where(self) -> str:
        return f"delay on {self.netns or '(current namespace)'}:{self.dev} (queue {self.queue})"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- nftables ------------------------------------------------------------
    def _rules(self, nft: Nft) -> list[dict]:
        """Every rule of the shared chain, all families (``[]`` where the table does not exist)."""
        out = []
        for fam in self.families:
            try:
                listing = nft.run([{"list": {"chain": {"family": fam, "table": self.table, "name": CHAIN}}}])
            except NftError:
                continue
            out += [o["rule"] for o in listing if "rule" in o]
        return out

    def _own_rules(self, nft: Nft) -> list[dict]:
        return [r for r in self._rules(nft) if r.get("comment") == self.comment]

    def rule_present(self) -> list[str]:
        """The families in which this element's rule exists now."""
        nft = self._nft
        own = nft is None
        if nft is None:
            nft = Nft(self.netns)
        try:
            return [r["family"] for r in self._own_rules(nft)]
        finally:
            if own:
                nft.close()

    def rule_counter(self) -> int | None:
        """Packets this element's rules have sent to the queue so far (all families), None without a rule."""
        if self._nft is None:
            return None
        rules = self._own_rules(self._nft)
        if not rules:
            return None
        return sum(e["counter"]["packets"] for r in rules for e in r["expr"] if "counter" in e)

    @staticmethod
    def _delete(nft: Nft, rules: list[dict]) -> None:
        if rules:
            nft.run([{"delete": {"rule": {"family": r["family"], "table": r["table"], "chain": r["chain"],
                                          "handle": r["handle"]}}} for r in rules])

    def _check_interface(self) -> None:
        with NetnsThread(self.netns, thread_name=f"delay-check-{self.netns}") as t:
            try:
                t.call(socket.if_nametoindex, self.dev)
            except OSError:
                raise DelayError(f"{self._where()}: no interface {self.dev!r} in "
                                 f"{'network namespace ' + repr(self.netns) if self.netns else 'this namespace'}") from None

    def _clear_stale(self) -> None:
        """Refuse if a running element delays ``dev``; delete the rules of dead ones (a killed process)."""
        assert self._nft is not None  # start() opened it
        bound = queue_bindings(self.netns)
        stale = []
        for rule in self._rules(self._nft):
            parsed = _parse_comment(rule.get("comment", ""))
            if parsed is None or parsed[0] != self.dev:
                continue
            if parsed[1] in bound:
                raise DelayError(f"{self._where()}: {self.dev} is already delayed by a running element "
                                 f"(queue {parsed[1]}, socket {bound[parsed[1]]['portid']})")
            stale.append(rule)
        if stale:
            self._delete(self._nft, stale)
            log.warning("removed the rule(s) of a delay element that is gone", extra={
                "netns": self.netns, "dev": self.dev, "rules": len(stale)})

    # -- life cycle --------------------------------------------------------
    def start(self) -> LinkDelay:
        """Bind the queue, add the rule, start the loop; :class:`DelayError` if any step fails."""
        with self._lock:
            if self._final is not None:
                raise DelayError(f"{self._where()}: a stopped element cannot be restarted; make a new one")
            if self._thread is not None:
                return self
            try:
                self._check_interface()
                self._nft = Nft(self.netns)
                self._clear_stale()
                self._nfq = NfQueue(self.queue, netns=self.netns, maxlen=self._maxlen)
                add_queue_rule(self.netns, self.table, CHAIN, self.dev, self.queue, comment=self.comment,
                               families=self.families, hook=HOOK, priority=self.priority)  # all or nothing
                self._installed = True
                self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self._thread = threading.Thread(target=self._run, name=f"delay-{self.netns}-{self.dev}",
                                                daemon=True)
                self._thread.start()
            except BaseException as exc:
                self._cleanup_failed_start()
                if isinstance(exc, (OSError, NfQueueError, NftError, NetnsError)):
                    raise DelayError(f"{self._where()}: cannot start: {exc}") from exc
                raise
        log.info("delay element started", extra={"netns": self.netns, "dev": self.dev,
                                                 "delay_ms": self.delay_ms, "queue": self.queue})
        return self

    def _cleanup_failed_start(self) -> None:
        if self._installed:  # never someone else's rule
            with contextlib.suppress(Exception):
                assert self._nft is not None  # opened before the rule was installed
                self._delete(self._nft, self._own_rules(self._nft))
            with contextlib.suppress(Exception):
                remove_table_if_unused(self.netns, self.table, CHAIN, self.families)
        self._installed = False
        if self._nfq is not None:
            self._nfq.close()
        if self._nft is not None:
            self._nft.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._nfq = self._nft = None
        self._thread = None

    def stop(self, timeout: float = 5.0) -> dict:
        """Stop queueing, release every held packet now, unbind; return the final :meth:`stats`.

        Order matters on this kernel: the rule is deleted first (a rule, not a
        chain: deleting a base chain would make the kernel drop every packet
        held by any queue of the namespace), then everything held is
        released, stragglers included, until the kernel holds nothing for
        the queue; then the queue is unbound and the shared table removed if
        no other element has a rule in it. Idempotent.
        """
        with self._lock:
            if self._final is not None:
                return dict(self._final)
            if self._thread is None:
                return self.stats()
            assert self._nft is not None and self._nfq is not None  # a running loop has both
            rule_packets = None
            problems = []
            try:
                rule_packets = self.rule_counter()
                self._delete(self._nft, self._own_rules(self._nft))  # from now on nothing new is queued
            except Exception as exc:  # noqa: BLE001 -- keep going: held packets must be released anyway
                problems.append(f"rule not removed: {exc}")
                log.error("cannot remove the delay rule", extra={"netns": self.netns, "dev": self.dev,
                                                                "error": str(exc)})
            self._stopping = True
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            self._thread.join(timeout + 1.0)
            if self._thread.is_alive():
                problems.append("loop did not stop in time")
                log.error("delay loop did not stop in time", extra={"netns": self.netns, "dev": self.dev})
            kernel = self._nfq.kernel_stats()
            self._nfq.close(accept_pending=True)
            try:
                remove_table_if_unused(self.netns, self.table, CHAIN, self.families)
            except OSError as exc:
                problems.append(f"table not removed: {exc}")
            self._nft.close()
            self._nft = None
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            final = self.stats()
            final["rule_packets"] = rule_packets
            if kernel:
                final["kernel_queue_dropped"] = kernel["queue_dropped"]
                final["kernel_user_dropped"] = kernel["user_dropped"]
                final["kernel_held_at_close"] = kernel["queue_total"]
            if self._error is not None:
                problems.append(f"loop failed: {self._error}")
            final["error"] = "; ".join(problems) or None
            final["running"] = False
            self._final = final
        log.info("delay element stopped", extra={"netns": self.netns, "dev": self.dev, "stats": json.dumps(final)})
        return dict(final)

    def __enter__(self) -> LinkDelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- statistics --------------------------------------------------------
    def stats(self) -> dict:
        """Counters so far (see the keys); after :meth:`stop`, the final ones with the kernel's counters."""
        if self._final is not None:
            return dict(self._final)
        released = self.delayed
        nfq = self._nfq
        return {
            "netns": self.netns, "dev": self.dev, "delay_ms": self.delay_ms, "queue": self.queue,
            "packets": self.packets,                  # received from the kernel
            "delayed": self.delayed,                  # released when due
            "released_on_stop": self.released_on_stop,
            "held": len(self._held),
            "max_depth": self.max_depth,
            "late_releases": self.late,               # released more than late_ms after due
            "late_ms_threshold": self._late_ns / 1e6,
            "mean_release_lag_us": round(self._late_sum_ns / released / 1e3, 1) if released else None,
            "max_release_lag_us": round(self._late_max_ns / 1e3, 1),
            "lost": nfq.lost if nfq else 0,           # the kernel dropped them while held (see nfqueue)
            "enobufs": nfq.enobufs if nfq else 0,
            "verdict_errors": nfq.verdict_errors if nfq else 0,
            "sends": self.sends,                      # verdict system calls
            "cpu_s": round(self.cpu_s, 4),            # the loop thread's CPU time, kernel work in its
            "cpu_user_s": round(self.cpu_user_s, 3),  # system calls included (a verdict forwards the
            "cpu_sys_s": round(self.cpu_sys_s, 3),    # packet, often into the next namespace's socket)
            "running": self.running,
            "error": str(self._error) if self._error else None,
        }

    # -- the loop (its own thread) --------------------------------------------
    def _release(self, now: int) -> None:
        held = self._held
        if not held or held[0][0] > now:
            return
        ids = []
        late_ns = self._late_ns
        while held and held[0][0] <= now:
            due, pid = held.popleft()
            lag = now - due
            self._late_sum_ns += lag
            self._late_max_ns = max(self._late_max_ns, lag)
            if lag > late_ns:
                self.late += 1
            ids.append(pid)
        self.sends += 1
        self.delayed += len(ids)
        assert self._nfq is not None  # the loop runs only with a queue
        self._nfq.verdicts(ids)

    def _receive(self) -> None:
        delay = self._delay_ns
        held = self._held
        assert self._nfq is not None  # the loop runs only with a queue
        for p in self._nfq.receive(limit=512):
            held.append((p.received_ns + delay, p.id))
            self.packets += 1
        self.max_depth = max(self.max_depth, len(held))

    def _run(self) -> None:
        _set_timer_slack(1)
        if self.rt_priority:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))  # this thread only
            except OSError as exc:
                log.info("no real-time scheduling for the delay loop", extra={"error": str(exc)})
        cpu0 = time.thread_time()
        assert self._nfq is not None  # start() binds the queue before the thread
        fd, wake = self._nfq.fileno(), self._wake_r
        clock = time.monotonic_ns
        held = self._held
        try:
            while not self._stopping:
                if held:
                    timeout = (held[0][0] - clock()) / 1e9
                    timeout = timeout if timeout > 0 else 0.0
                else:
                    timeout = None
                ready, _, _ = select.select([fd, wake], [], [], timeout)
                self._release(clock())
                if ready:
                    self._receive()
                    self._release(clock())
        except BaseException as exc:  # reported by stats(); stop() still releases what is held
            self._error = exc
            log.exception("delay loop failed", extra={"netns": self.netns, "dev": self.dev})
        finally:
            try:
                self._drain()
            except BaseException as exc:
                self._error = self._error or exc
                log.exception("releasing held packets failed", extra={"netns": self.netns, "dev": self.dev})
            finally:
                self.cpu_s = time.thread_time() - cpu0
                self.cpu_user_s, self.cpu_sys_s = _thread_times()

    def _drain(self, quiet_s: float = 0.05, limit_s: float = 3.0) -> None:
        """Release everything held, then accept stragglers until the kernel holds nothing for us."""
        nfq = self._nfq
        assert nfq is not None  # called by the loop, which runs only with a queue
        held = self._held
        start = time.monotonic()
        quiet_until = start + quiet_s
        while True:
            if held:
                self.released_on_stop += len(held)
                self.sends += 1
                ids = [pid for _, pid in held]
                held.clear()
                nfq.verdicts(ids)
            now = time.monotonic()
            stats = nfq.kernel_stats()
            if (stats is None or stats["queue_total"] == 0) and now >= quiet_until:
                return
            if now - start >= limit_s:
                log.error("packets still queued in the kernel after stop; they will be dropped at unbind",
                          extra={"netns": self.netns, "dev": self.dev, "queued": stats and stats["queue_total"]})
                return
            select.select([nfq.fileno()], [], [], 0.005)
            for p in nfq.receive():
                held.append((p.received_ns, p.id))
                self.packets += 1
            if held:
                quiet_until = time.monotonic() + quiet_s


class DelayProcess(ModuleLauncher):
    """Elements run by the command line in a process of their own (no GIL shared with the caller).

    ``elements``: ``(netns, dev, delay_ms, queue)`` tuples; ``name`` names the
    process in logs (``srv6pm.lab.<name>``). :meth:`start`
    returns once every element runs (the process printed its ``ready``
    line) or raises :class:`DelayError` with the process' error output;
    :meth:`stop` sends SIGTERM and returns the elements' final statistics
    (idempotent). The rest is the launcher's
    (:class:`~srv6pm.lab.emulators.launcher.Launcher`: :meth:`kill`,
    :meth:`output_tail`, ...).
    """

    name = "delay"
    what = "delay process"
    StartError = DelayError
    module = "srv6pm.lab.emulators.delay"

    def __init__(self, elements, *, late_ms: float = 1.0, ready_timeout: float = 15.0,
                 options: list[str] | tuple[str, ...] = (), stop_timeout: float = 15.0, name: str = "delay"):
        super().__init__(start_timeout=ready_timeout, stop_timeout=stop_timeout)
        self.name = name  # its logger: srv6pm.lab.<name>
        self.elements = [(ns, dev, float(d), int(q)) for ns, dev, d, q in elements]
        if not self.elements:
            raise ValueError("no elements")
        self.late_ms = late_ms
        self.options = list(options)  # more command-line options, e.g. ["--rt-priority", "0"]
        self.result: list[dict] | None = None

    def arguments(self) -> list[str]:
        args = ["--late-ms", str(self.late_ms), *self.options]
        for ns, dev, d, q in self.elements:
            args += ["--netns", ns, "--dev", dev, "--delay-ms", repr(d), "--queue", str(q)]
        return args

    def start(self) -> DelayProcess:
        try:
            return super().start()
        except DelayError as exc:
            said = [line for line in self.output_tail().splitlines() if not line.startswith("{")]
            raise DelayError(f"delay process did not start: {' '.join(said).strip() or exc}") from exc

    def stop(self) -> list[dict]:  # type: ignore[override]  # the statistics, not the exit status
        """SIGTERM, wait, and return the per-element statistics (idempotent; [] if it never ran)."""
        if self.result is not None:
            return self.result
        if self._process is None:  # never started, or failed to start
            super().stop()
            return []
        status = super().stop()
        for event in reversed(self.events()):
            if event.get("event") == "stats":
                self.result = event["elements"]
                return self.result
        if status == -signal.SIGKILL:
            raise DelayError(f"delay process did not stop within {self.stop_timeout:g} s: {self.output_tail(5)}")
        raise DelayError(f"delay process exited {status} without statistics: {self.output_tail(5)}")


# ---------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m srv6pm.lab.emulators.delay",
        description="Delay every packet leaving an interface of a network namespace (NFQUEUE). "
                    "Repeat --netns/--dev/--delay-ms/--queue for more elements (same count each).")
    p.add_argument("--netns", action="append", required=True, help="network namespace (repeatable)")
    p.add_argument("--dev", action="append", required=True, help="egress interface in that namespace")
    p.add_argument("--delay-ms", action="append", type=float, required=True, help="delay in milliseconds")
    p.add_argument("--queue", action="append", type=int, required=True, help="NFQUEUE number (per namespace)")
    p.add_argument("--late-ms", type=float, default=1.0, help="a release later than this is counted late")
    p.add_argument("--rt-priority", type=int, default=RT_PRIORITY,
                   help=f"SCHED_FIFO priority of the process' threads (default {RT_PRIORITY}; 0: normal scheduling)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    counts = {len(args.netns), len(args.dev), len(args.delay_ms), len(args.queue)}
    if len(counts) != 1:
        parser.error("give --netns, --dev, --delay-ms and --queue the same number of times")
    from srv6pm import logs
    logs.setup(args.verbose)
    # Precision: the element threads share the GIL with this one, so this thread
    # must never hold it while preempted (it sleeps in sigtimedwait and runs
    # real-time too), and garbage collection must stay cheap (gc.freeze below).
    sys.setswitchinterval(0.0005)
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # inherited by every thread: delivered to sigtimedwait
    rt = args.rt_priority or None
    if rt:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))
    elements: list[LinkDelay] = []
    status = 0
    try:
        try:
            for ns, dev, d, q in zip(args.netns, args.dev, args.delay_ms, args.queue, strict=True):
                elements.append(LinkDelay(ns, dev, d, q, late_ms=args.late_ms, rt_priority=rt).start())
        except (DelayError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
        else:
            gc.collect()
            gc.freeze()
            print(json.dumps({"event": "ready", "elements": [
                {"netns": e.netns, "dev": e.dev, "delay_ms": e.delay_ms, "queue": e.queue} for e in elements]}),
                flush=True)
            while signal.sigtimedwait(signals, 5.0) is None:
                if any(not e.running for e in elements):
                    status = 1
                    break
    finally:
        results = [e.stop() for e in elements]
        if any(r.get("error") for r in results):
            status = 1
        print(json.dumps({"event": "stats", "elements": results}), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
