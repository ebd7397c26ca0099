"""The NFQUEUE link-delay element (srv6pm.lab.emulators.delay, srv6pm.lab.emulators.nfqueue) on real namespaces.

Probes are UDP datagrams carrying their send time (CLOCK_REALTIME, taken just
before sendto); arrival times are the kernel's receive timestamps
(SO_TIMESTAMPNS), all namespaces sharing one clock. So a measured one-way
delay is the configured delay plus the element's release lag plus a few
microseconds of stack: never less than the configured delay.

Tolerances. Measured here (2 vCPUs, a VM shared with other work; CPU
pressure "some" ~10 %), elements in their own process, 1000 packets/s: in
quiet periods p50 +0.15 ms, p99 +0.3..0.6 ms, max +1..2 ms; in busy periods
p95 up to +1.5 ms, p99 up to +4.7 ms, max up to +20 ms. The cause is the VM's
wake-up latency, not the element: a bare real-time thread sleeping 1 ms in
select() wakes late by p50 55 us, p99 170 us and up to 3..10 ms at times. So
the tests assert: no sample below the configured delay (never early), and
above it p50 <= +0.5 ms, p95 <= +2 ms, p99 <= +10 ms, max <= +50 ms (an element
inside the test process shares the GIL with the probe threads: p50 <= +1 ms,
p95 <= +5 ms, p99 <= +15 ms). A path through two elements gets twice the
tolerance. Only these quantile checks get up to three attempts (a stall of
the VM can break them for one measurement; every attempt is printed); losses,
early releases and the elements' statistics are checked on every attempt.

The message-encoding tests at the end need no root.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from netns_support import skip_reason
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from srv6pm import netns as nsutil
from srv6pm.nft import Nft
from srv6pm.lab import network, scenario, topology
from srv6pm import netlink
from srv6pm.lab.emulators import nfqueue
from srv6pm.lab.emulators.delay import TABLE, DelayError, DelayProcess, LinkDelay


_REASON = skip_reason("network namespaces, NFQUEUE bindings and nftables tables")

SO_TIMESTAMPNS = 35
MAGIC = b"s6dly\x00"
PROBE = struct.Struct("!6sIq")  # magic, sequence, send time (ns, CLOCK_REALTIME)
ECHO = struct.Struct("!6sIqqq")  # + the echo's kernel receive time and its own send time
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4

# tolerances above the configured delay, ms, by quantile (see the module docstring)
TOLERANCE = {0.5: 0.5, 0.95: 2.0, 0.99: 10.0, 1.0: 50.0}
IN_PROCESS_TOLERANCE = {0.5: 1.0, 0.95: 5.0, 0.99: 15.0, 1.0: 50.0}
TWO_ELEMENTS = {q: 2 * v for q, v in TOLERANCE.items()}  # a path through two elements


# ------------------------------------------------------------------ helpers
def _sock(ns: str, family=socket.AF_INET6, kind=socket.SOCK_DGRAM, proto=0) -> socket.socket:
    with nsutil.NetnsThread(ns) as t:
        return t.call(socket.socket, family, kind, proto)


def _rx_ns(ancillary) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec * 1_000_000_000 + nsec
    return None


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def _timing(samples_ms: list[float], delay_ms: float, what: str, base_ms: float = 0.0,
            tol: dict[float, float] = TOLERANCE) -> list[str]:
    """Assert that no sample is below ``delay_ms`` (never early); return the tolerance violations.

    Quantile q may be at most ``delay_ms + tol[q]`` once the path's own median
    latency ``base_ms`` (measured without elements) is taken off.
    """
    assert samples_ms, f"{what}: no samples"
    low = min(samples_ms)
    got = {q: _pct(samples_ms, q) - base_ms for q in tol}
    summary = (f"{what}: n={len(samples_ms)} min={low:.3f} "
               + " ".join(f"p{q * 100:g}={v:.3f}" for q, v in got.items()) + " ms"
               + (f" (quantiles minus the path's own {base_ms:.3f} ms)" if base_ms else ""))
    print(summary)
    assert low >= delay_ms, summary + f" (released early: < {delay_ms} ms)"
    return [summary + f": p{q * 100:g} above {delay_ms} + {tol[q]} ms" for q, v in got.items() if v > delay_ms + tol[q]]


def _check_delay(*args, **kw) -> None:
    problems = _timing(*args, **kw)
    assert not problems, "; ".join(problems)


def _attempts(run, tries: int = 3) -> None:
    """Call ``run()`` until it returns no timing problem, at most ``tries`` times.

    ``run`` asserts everything else itself (no loss, never early, clean
    statistics) on every attempt; only the tolerance quantiles, which a
    stall of this shared VM can break for one measurement, get more tries.
    """
    seen = []
    for attempt in range(1, tries + 1):
        problems = run()
        if not problems:
            return
        print(f"attempt {attempt}: timing outside the tolerance: {problems}")
        seen.append(problems)
    pytest.fail(f"timing outside the tolerance in {tries} attempts: {seen}")


def _pace(count: int, rate: float, send) -> None:
    """Call send(i) for i in range(count) at ``rate`` per second (sleeping, so the GIL is free)."""
    start = time.monotonic()
    for i in range(count):
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        send(i)


def _proc_queue_line(ns: str, queue: int) -> str | None:
    """The queue's line of /proc/net/netfilter/nfnetlink_queue in ``ns`` (None: not bound)."""
    def read():
        with open("/proc/thread-self/net/netfilter/nfnetlink_queue") as f:
            return f.read()
    with nsutil.NetnsThread(ns) as t:
        text = t.call(read)
    for line in text.splitlines():
        if line.split() and int(line.split()[0]) == queue:
            return line
    return None


def _tables(ns: str) -> set[tuple[str, str]]:
    with Nft(ns) as nft:
        return {(o["table"]["family"], o["table"]["name"]) for o in nft.run([{"list": {"tables": None}}])
                if "table" in o}


class Echo:
    """A UDP echo in namespace ``ns``: answers every probe with its kernel receive time and send time."""

    def __init__(self, ns: str, addr: str, port: int):
        self.sock = _sock(ns)
        self.sock.bind((addr, port))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.2)
        self.received: dict[int, int] = {}  # seq -> kernel rx time
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, anc, _, peer = self.sock.recvmsg(256, 256)
            except TimeoutError:
                continue
            except OSError:
                return
            rx = _rx_ns(anc)
            if len(data) < PROBE.size or not data.startswith(MAGIC):
                continue
            _, seq, tx = PROBE.unpack_from(data)
            self.received[seq] = rx
            self.sock.sendto(ECHO.pack(MAGIC, seq, tx, rx, time.time_ns()), peer)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


class Prober:
    """Sends probes from ``ns`` to an :class:`Echo`; collects forward, backward and round-trip delays (ms)."""

    def __init__(self, ns: str, dst: str, port: int):
        self.sock = _sock(ns)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.2)
        self.dst = (dst, port)
        self.sent: dict[int, int] = {}
        self.forward: dict[int, float] = {}
        self.backward: dict[int, float] = {}
        self.rtt: dict[int, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(256, 256)
            except TimeoutError:
                continue
            except OSError:
                return
            rx = _rx_ns(anc)
            if len(data) < ECHO.size or not data.startswith(MAGIC):
                continue
            _, seq, tx, echo_rx, echo_tx = ECHO.unpack_from(data)
            self.forward[seq] = (echo_rx - tx) / 1e6
            self.backward[seq] = (rx - echo_tx) / 1e6
            self.rtt[seq] = (rx - tx - (echo_tx - echo_rx)) / 1e6  # without the echo's turnaround

    def send(self, seq: int) -> None:
        now = time.time_ns()
        self.sent[seq] = now
        self.sock.sendto(PROBE.pack(MAGIC, seq, now), self.dst)

    def run(self, count: int, rate: float, settle: float = 0.5) -> None:
        base = len(self.sent)
        _pace(count, rate, lambda i: self.send(base + i))
        deadline = time.monotonic() + settle + 2.0
        while len(self.rtt) < len(self.sent) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(settle if len(self.rtt) < len(self.sent) else 0)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def pair():
    """Two namespaces joined by a veth: ``a`` (interface ``b``, fd00:d::1) and ``b`` (interface ``a``, fd00:d::2)."""
    tag = secrets.token_hex(3)
    a, b = f"tdl{tag}a", f"tdl{tag}b"
    created = []
    try:
        for ns in (a, b):
            pr_netns.create(ns)
            created.append(ns)
            with nsutil.NetnsThread(ns) as t:  # link-local addresses usable at once (no DAD)
                t.call(Path("/proc/sys/net/ipv6/conf/default/accept_dad").write_text, "0")
        tmp_a, tmp_b = f"tdl{tag}x", f"tdl{tag}y"
        with IPRoute() as root:
            root.link("add", ifname=tmp_a, kind="veth", peer=tmp_b)
            for tmp, ns in ((tmp_a, a), (tmp_b, b)):
                root.link("set", index=root.link_lookup(ifname=tmp)[0], net_ns_fd=ns)
        for ns, tmp, name, addr in ((a, tmp_a, "b", "fd00:d::1"), (b, tmp_b, "a", "fd00:d::2")):
            with IPRoute(netns=ns) as ipr:
                idx = ipr.link_lookup(ifname=tmp)[0]
                ipr.link("set", index=idx, ifname=name)
                ipr.addr("add", index=idx, address=addr, prefixlen=64, flags=0x02)  # nodad
                ipr.link("set", index=idx, state="up")
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield {"a": a, "b": b, "a_addr": "fd00:d::1", "b_addr": "fd00:d::2"}
    finally:
        for ns in created:
            pr_netns.remove(ns)
        assert not any(nsutil.exists(ns) for ns in (a, b))


@contextlib.contextmanager
def echo_pair(p):
    port = 20000 + secrets.randbelow(20000)
    echo = Echo(p["b"], p["b_addr"], port)
    prober = Prober(p["a"], p["b_addr"], port)
    try:
        prober.run(5, 50)  # neighbour discovery done before anything is measured
        assert len(prober.rtt) == 5, "no echo on the plain link"
        for d in (prober.forward, prober.backward, prober.rtt, prober.sent, echo.received):
            d.clear()
        yield prober, echo
    finally:
        prober.close()
        echo.close()


# ------------------------------------------------------------------ tests
@pytest.mark.netns
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_both_directions_delayed_and_nothing_lost(pair):
    """20 ms a->b and 30 ms b->a, in their own process; 2000 probes at 1000/s, each echoed."""
    rate, n = 1000, 2000

    def run() -> list[str]:
        with echo_pair(pair) as (prober, echo):
            proc = DelayProcess([(pair["a"], "b", 20, 7), (pair["b"], "a", 30, 7)]).start()  # one process, two
            try:
                assert {("ip6", TABLE), ("ip", TABLE)} <= _tables(pair["a"]) & _tables(pair["b"])
                prober.run(n, rate, settle=0.3)
            finally:
                stats = proc.stop()
        assert len(echo.received) == n, f"lost on the way a->b: {n - len(echo.received)}"
        assert len(prober.rtt) == n, f"lost on the way back: {n - len(prober.rtt)}"
        for s in stats:
            assert s["packets"] >= n and s["delayed"] == s["packets"] - s["released_on_stop"], s
            assert s["rule_packets"] <= s["packets"], s  # (the counter is read just before the rule goes)
            assert s["kernel_queue_dropped"] == 0 and s["kernel_user_dropped"] == 0 and s["enobufs"] == 0, s
            assert s["verdict_errors"] == 0 and s["error"] is None, s
            assert s["kernel_held_at_close"] == 0 and s["lost"] == 0, s
        assert _tables(pair["a"]) == _tables(pair["b"]) == set()
        return (_timing(list(prober.forward.values()), 20, "a->b")
                + _timing(list(prober.backward.values()), 30, "b->a")
                + _timing(list(prober.rtt.values()), 50, "round trip", tol=TWO_ELEMENTS))

    _attempts(run)


@pytest.mark.netns
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_stop_releases_held_packets_and_removes_the_table(pair):
    port = 20000 + secrets.randbelow(20000)
    rx = _sock(pair["b"])
    rx.bind((pair["b_addr"], port))
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    tx = _sock(pair["a"])
    try:
        tx.sendto(b"warm-up", (pair["b_addr"], port))  # neighbour resolved before the element runs
        rx.settimeout(2)
        assert rx.recv(100) == b"warm-up"
        element = LinkDelay(pair["a"], "b", 5000, 3)
        try:
            element.start()
            assert element.start() is element  # idempotent
            assert set(element.rule_present()) == {"ip6", "ip"}
            assert _proc_queue_line(pair["a"], 3) is not None
            n = 50
            for i in range(n):
                tx.sendto(PROBE.pack(MAGIC, i, time.time_ns()), (pair["b_addr"], port))
            time.sleep(0.3)
            assert not select.select([rx], [], [], 0)[0], "a packet went through before its 5 s delay"
            assert element.stats()["held"] >= n  # (+ neighbour discovery / MLD, if any)
            t_stop = time.time_ns()
        finally:
            final = element.stop()
        rx.settimeout(1)
        got = []
        while len(got) < n:
            data, anc, _, _ = rx.recvmsg(256, 256)
            got.append((PROBE.unpack_from(data)[1], _rx_ns(anc)))
        assert [seq for seq, _ in got] == list(range(n)), "order not kept"
        assert max(t for _, t in got) - t_stop < 200e6, "held packets not released at once by stop()"
        assert final["released_on_stop"] == final["packets"] >= n and final["delayed"] == 0
        assert final["kernel_held_at_close"] == 0 and final["verdict_errors"] == 0 and final["lost"] == 0
        assert element.stop() == final  # idempotent
        assert element.rule_present() == []
        assert _tables(pair["a"]) == set()
        assert _proc_queue_line(pair["a"], 3) is None, "queue still bound after stop()"
        # and the link is plain again
        tx.sendto(PROBE.pack(MAGIC, 999, time.time_ns()), (pair["b_addr"], port))
        data, anc, _, _ = rx.recvmsg(256, 256)
        assert PROBE.unpack_from(data)[1] == 999 and (_rx_ns(anc) - PROBE.unpack_from(data)[2]) < 5e6
    finally:
        rx.close()
        tx.close()


@pytest.mark.netns
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_in_process_element_precision(pair):
    """The LinkDelay API in this process (sharing the GIL with the probe threads) is as precise."""
    def run() -> list[str]:
        with echo_pair(pair) as (prober, _echo):
            with LinkDelay(pair["a"], "b", 20, 11) as element:
                prober.run(500, 500, settle=0.2)
                running = element.stats()
            final = element.stats()
        assert running["running"] and not final["running"]
        assert len(prober.rtt) == 500 and final["lost"] == 0 and final["error"] is None
        return (_timing(list(prober.forward.values()), 20, "a->b in-process", tol=IN_PROCESS_TOLERANCE)
                + _timing(list(prober.backward.values()), 0, "b->a (no element)", tol=IN_PROCESS_TOLERANCE))

    _attempts(run)


@pytest.mark.netns
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_no_silent_bypass_and_stale_rule_replaced(pair):
    """A killed element leaves its rule: the link drops (never passes undelayed) until an element replaces it."""
    with echo_pair(pair) as (prober, echo):
        proc = DelayProcess([(pair["a"], "b", 10, 5)]).start()
        proc.kill()
        assert ("ip6", TABLE) in _tables(pair["a"])
        prober.run(20, 100, settle=0.3)
        assert len(echo.received) == 0, "packets bypassed the dead element"
        prober.sent.clear()
        with LinkDelay(pair["a"], "b", 10, 6) as element:  # another queue number: the stale rule goes
            assert element.rule_present() == ["ip6", "ip"]
            assert len([r for r in _rules(pair["a"]) if "srv6pm-delay" in r.get("comment", "")]) == 2
            prober.run(50, 100, settle=0.2)
        assert len(prober.rtt) == 50
        _check_delay(list(prober.forward.values()), 10, "a->b after replacing the stale rule",
                     tol={0.5: 2 * TOLERANCE[0.5]})
        assert _tables(pair["a"]) == set()


def _rules(ns: str) -> list[dict]:
    with Nft(ns) as nft:
        out = []
        for fam in ("ip6", "ip"):
            with contextlib.suppress(Exception):
                out += [o["rule"] for o in nft.run([{"list": {"table": {"family": fam, "name": TABLE}}}])
                        if "rule" in o]
        return out


@pytest.mark.netns
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_elements_of_one_namespace_do_not_disturb_each_other(pair):
    """Stopping one element keeps the packets another one holds; a removed base chain elsewhere is counted as loss.

    On this kernel, unregistering any netfilter hook in a namespace makes it
    drop every packet held by every queue there (nf_queue_nf_hook_drop): so
    elements share one base chain and each removes only its own rule.
    """
    port = 20000 + secrets.randbelow(20000)
    rx = _sock(pair["b"])
    rx.bind((pair["b_addr"], port))
    rx.settimeout(2)
    tx = _sock(pair["a"])
    try:
        tx.sendto(b"warm-up", (pair["b_addr"], port))
        assert rx.recv(100) == b"warm-up"
        with LinkDelay(pair["a"], "b", 1500, 1) as held_one:
            n = 20
            for i in range(n):
                tx.sendto(b"first", (pair["b_addr"], port))
            time.sleep(0.1)
            LinkDelay(pair["a"], "lo", 5, 2).start().stop()  # another element comes and goes
            assert held_one.stats()["held"] >= n and held_one.stats()["lost"] == 0
            got = 0
            with contextlib.suppress(TimeoutError):
                while got < n:
                    rx.recv(100)
                    got += 1
            assert got == n and held_one.stats()["lost"] == 0 and held_one.stats()["delayed"] >= n
            # an unrelated table's base chain removed in the namespace: the kernel drops what is held
            for i in range(n):
                tx.sendto(b"second", (pair["b_addr"], port))
            time.sleep(0.1)
            with Nft(pair["a"]) as nft:
                nft.run([{"add": {"table": {"family": "ip6", "name": "tdl_other"}}},
                         {"add": {"chain": {"family": "ip6", "table": "tdl_other", "name": "c", "type": "filter",
                                            "hook": "input", "prio": 0, "policy": "accept"}}}])
                nft.run([{"delete": {"table": {"family": "ip6", "name": "tdl_other"}}}])
            time.sleep(1.6)
            st = held_one.stats()
            assert st["lost"] >= n, st
            rx.settimeout(0.2)
            with pytest.raises(TimeoutError):
                rx.recv(100)
    finally:
        rx.close()
        tx.close()
    assert _tables(pair["a"]) == set()


@pytest.mark.netns
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_start_errors_are_clear_and_leave_nothing(pair):
    first = LinkDelay(pair["a"], "b", 10, 9).start()
    try:
        with pytest.raises(DelayError, match=r"binding queue 9 .*not permitted.*another socket is bound"):
            LinkDelay(pair["a"], "lo", 10, 9).start()
        with pytest.raises(DelayError, match=r"already delayed by a running element \(queue 9"):
            LinkDelay(pair["a"], "b", 10, 10).start()
        assert first.rule_present() == ["ip6", "ip"] and len(_rules(pair["a"])) == 2
        # queue numbers are per namespace: the same number works next door
        with LinkDelay(pair["b"], "a", 10, 9):
            pass
    finally:
        first.stop()
    with pytest.raises(DelayError, match="cannot be restarted"):
        first.start()
    with pytest.raises(DelayError, match="no interface 'nosuchif'"):
        LinkDelay(pair["a"], "nosuchif", 10, 1).start()
    with pytest.raises(DelayError, match="'tdl-no-such-ns' does not exist"):
        LinkDelay("tdl-no-such-ns", "x", 10, 1).start()
    for bad in [{"delay_ms": -1}, {"queue": 70000}, {"dev": "a-name-that-is-too-long"}]:
        with pytest.raises(ValueError):
            LinkDelay(pair["a"], **{"dev": "b", "delay_ms": 1, "queue": 1, **bad})
    with pytest.raises(DelayError, match="did not start: error: .*does not exist"):
        DelayProcess([("tdl-no-such-ns", "x", 10, 1)]).start()
    assert _tables(pair["a"]) == set() and _proc_queue_line(pair["a"], 9) is None


# ------------------------------------------------------------------ SRv6
def _srv6_plan() -> topology.Plan:
    tag = secrets.token_hex(2)
    a, b, c = (f"dl{tag}{x}" for x in "abc")
    text = f"""
period: 1
nodes: [{a}, {b}, {c}]
links: [[{a}, {b}], [{b}, {c}]]
flows:
  - {{name: f1, from: {a}, to: {c}, via: [{b}], rate: 10}}
"""
    return topology.plan(scenario.parse(text, source="test_delay"))


class Capture:
    """Incoming IPv6 packets on ``ifname`` in ``ns`` (AF_PACKET, kernel timestamps) that carry a probe."""

    def __init__(self, ns: str, ifname: str):
        self.sock = _sock(ns, socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
        self.sock.bind((ifname, ETH_P_IPV6))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.2)
        self.packets: dict[int, tuple[int, bytes]] = {}  # seq -> (rx time, raw packet)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, anc, _, addr = self.sock.recvmsg(2048, 256)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            at = data.find(MAGIC)
            if at >= 0 and len(data) >= at + PROBE.size:
                _, seq, _tx = PROBE.unpack_from(data, at)
                self.packets[seq] = (_rx_ns(anc), bytes(data))

    def one_way_ms(self, sent: dict[int, int]) -> list[float]:
        return [(self.packets[s][0] - t) / 1e6 for s, t in sent.items() if s in self.packets]

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.mark.srv6
@pytest.mark.netns
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_srv6_encapsulated_flow_is_delayed_at_ingress_and_transit():
    """Flow a->c via b: 10 ms on a->b (just encapsulated) and 20 ms on b->c (after b's End)."""
    plan = _srv6_plan()
    a, b, c = plan.scenario.nodes
    flow = plan.flow("f1")
    try:
        network.build(plan)
        at_b, at_c = Capture(b, a), Capture(c, b)  # b's interface towards a, c's towards b
        tx = _sock(flow.src_netns)
        sent: dict[int, int] = {}

        def send(seq: int) -> None:
            sent[seq] = time.time_ns()
            tx.sendto(PROBE.pack(MAGIC, seq, sent[seq]), (flow.dst_addr, 9))

        def run() -> list[str]:
            sent.clear()
            _pace(200, 200, send)  # baseline without elements
            time.sleep(0.3)
            base_b, base_c = at_b.one_way_ms(sent), at_c.one_way_ms(sent)
            assert len(base_b) == len(base_c) == 200
            sent.clear()
            with DelayProcess([(a, b, 10, 1), (b, c, 20, 1)]) as proc:
                _pace(400, 200, lambda i: send(1000 + i))
                time.sleep(0.3)
            stats = proc.stop()
            delayed_b, delayed_c = at_b.one_way_ms(sent), at_c.one_way_ms(sent)
            assert len(delayed_b) == len(delayed_c) == 400, "packets lost through the elements"
            for seq in sent:  # SRv6 on both links: outer next header 43, an SRH (type 4) with both SIDs
                for cap in (at_b, at_c):
                    raw = cap.packets[seq][1]
                    # (the outer destination is not checked: an AF_PACKET capture read with recvmsg()
                    # shares its buffer with the packet, which the receiving node's End rewrites in place)
                    assert raw[6] == 43 and raw[40 + 2] == 4, raw[:48].hex()
                    sids = {socket.inet_ntop(socket.AF_INET6, raw[48 + 16 * i:64 + 16 * i]) for i in range(2)}
                    assert sids == set(flow.segments)
            for s in stats:
                assert s["packets"] >= 400 and s["kernel_queue_dropped"] == 0 and s["lost"] == 0, s
                assert s["error"] is None, s
            return (_timing(delayed_b, 10, "a->b (encapsulated at a)", _pct(base_b, 0.5))
                    + _timing(delayed_c, 30, "a->c (End at b)", _pct(base_c, 0.5), tol=TWO_ELEMENTS))

        try:
            _pace(5, 50, lambda i: send(100_000 + i))  # neighbour discovery along the path
            time.sleep(0.3)
            _attempts(run)
        finally:
            tx.close()
            at_b.close()
            at_c.close()
    finally:
        network.teardown(plan)
        assert not any(nsutil.exists(ns) for ns in plan.namespaces)


# ------------------------------------------------------------------ encoding (no root)
def test_messages_follow_the_kernel_headers():
    # struct sizes of linux/netfilter/nfnetlink_queue.h and xt_NFQUEUE.h
    assert nfqueue.NfqPacketHdr.size == 7 and nfqueue.NfqVerdictHdr.size == 8
    assert nfqueue.NfqConfigCmd.size == 4 and nfqueue.NfqConfigParams.size == 5
    assert nfqueue.NfqPacketTimestamp.size == 16 and nfqueue.NfqPacketHw.size == 12
    assert nfqueue.XtNfqInfoV3.size == 8
    msg = netlink.nfnl_message(netlink.NFNL_SUBSYS_QUEUE, nfqueue.NFQNL_MSG_CONFIG, 0x5, 42, 0, 7,
                               nfqueue.NFQ_CONFIG_ATTRS,
                               [("cmd", {"command": nfqueue.NFQNL_CFG_CMD_BIND, "pf": 0}), ("queue_maxlen", 4096)])
    hdr = netlink.NlMsgHdr.decode(msg)
    assert (hdr.len, hdr.type, hdr.flags, hdr.seq) == (len(msg), 0x302, 0x5, 42)
    assert msg[16:20] == b"\x00\x00\x00\x07"  # nfgenmsg: AF_UNSPEC, v0, queue 7 big endian
    assert msg[20:28] == struct.pack("=HH", 8, 1) + b"\x01\x00\x00\x00"  # NFQA_CFG_CMD bind
    assert msg[28:36] == struct.pack("=HH", 8, 3) + struct.pack("!I", 4096)
    assert nfqueue.NFQ_CONFIG_ATTRS.decode(msg, 20, len(msg)) == {
        "cmd": nfqueue.NfqConfigCmd.Value(1, 0), "queue_maxlen": 4096}


def test_packet_message_decodes():
    attrs = (netlink.nla(1, nfqueue.NfqPacketHdr.pack(packet_id=0xFFFFFFFE, hw_protocol=0x86DD, hook=4))
             + netlink.nla(6, struct.pack("!I", 12)) + netlink.nla(13, struct.pack("!I", 1280))
             + netlink.nla(99, b"future attribute"))
    body = netlink.NfGenMsg.pack(family=10, version=0, res_id=5) + attrs
    raw = netlink.NlMsgHdr.pack(len=16 + len(body), type=0x300, flags=0, seq=0, pid=0) + body
    q = nfqueue.NfQueue.__new__(nfqueue.NfQueue)
    q.queue, q.netns, q.received, q._pending = 5, None, 0, []
    q._on_message(memoryview(raw), 0, netlink.NlMsgHdr.decode(raw), 123)
    assert q._pending == [nfqueue.QueuedPacket(5, 0xFFFFFFFE, 4, 0x86DD, 1280, 12, 123, None)]
    bad = attrs + struct.pack("=HH", 200, 6) + b"\0" * 4  # an attribute longer than the message
    with pytest.raises(ValueError, match="malformed"):
        nfqueue.NFQ_PACKET_ATTRS.decode(bad, 0, len(bad))


def test_queue_rule_encoding():
    exprs = nfqueue.queue_rule_expressions("r3", 513)
    rule = nfqueue.NFT_RULE_ATTRS.encode([("table", "t"), ("chain", "c"), ("expressions", exprs)])
    # NFTA_RULE_EXPRESSIONS is nested, and so is every NFTA_LIST_ELEM in it
    assert b"NFQUEUE\x00" in rule and b"r3" + b"\x00" * 14 in rule
    info = nfqueue.XtNfqInfoV3.pack(queuenum=513, queues_total=1, flags=0)
    assert info == struct.pack("=HHHH", 513, 1, 0, 0)  # no NFQ_FLAG_BYPASS
    off = 8 + 8  # after NFTA_RULE_TABLE "t" and NFTA_RULE_CHAIN "c"
    alen, atype = struct.unpack_from("=HH", rule, off)
    assert atype == 4 | netlink.NLA_F_NESTED and off + alen == len(rule)
    _, elem_type = struct.unpack_from("=HH", rule, off + 4)
    assert elem_type == 1 | netlink.NLA_F_NESTED
    with pytest.raises(ValueError):
        nfqueue.queue_rule_expressions("a-name-longer-than-15", 1)
