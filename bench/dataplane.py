"""Benchmark: what counting costs a saturated router, per data plane, counting point and number of flows.

Builds a three-node lab network of its own (random names; root needed): the
test flow's source host -> ``a`` (ingress: seg6 H.Encaps, and the data plane
under test marking and counting) -> ``b`` (transit: End, and with ``ebpf``
counting by the RFC 9343 option) -> ``c`` (egress). Two counting points are
measured, each as the **node under test**:

* ``ingress``: node ``a``, with ``none`` (no counting at all: the baseline),
  ``nftables`` (DSCP marking and counting), ``ebpf`` (``altmark_mark`` on
  the tcx egress hooks, writing the Destination Options header into the 8
  octets the encap route reserves at the end of its SRH; ``altmark_count`` is
  not attached, as the node has only ingress points), ``ebpf-clsact`` (the
  same on a clsact qdisc's cls_bpf filter, as on kernels before 6.6) and
  ``ebpf-helper`` (``ebpf`` with the route as the other settings have it,
  without the reserved octets: the header is inserted by
  ``bpf_skb_adjust_room``) — fed with the test flow's UDP packets as the
  source host sends them. The encap route is the exporter's
  (:class:`srv6pm.exporter.routes.Routes`), with ``reserve`` for ``ebpf`` and
  ``ebpf-clsact``;
* ``transit``: node ``b``, with ``none``, ``ebpf`` (``altmark_count`` on tcx
  ingress) and ``ebpf-clsact`` (the nftables data plane
  does not count at transit nodes) — fed with the frames ``a`` sends when it
  marks, so the option is there in both settings.

How the rate is made sound on a small machine: the frames (captured once from
the real path, so they are exactly what the node receives) are sent by one
process pinned to CPU 0 through a packet socket, 64 frames per ``sendmmsg``,
past the qdisc layer; RPS puts the node under test's receive processing (its
whole forwarding, the programs included) on CPU 1, alone; the next node drops
everything on arrival (an nftables ``netdev`` ingress chain) on CPU 0, so the
rest of the path costs the node under test nothing. The figure is the packets
the node under test put out of its egress interface per second (its
``tx_packets`` + ``tx_dropped``), next to what was offered: a share well under
100 % means the node, not the sender, was the limit. Per flow count, the
settings take turns (``--rounds`` rounds, the order rotated each round, so a
change of the machine's other load hits all alike); each row gives the median
rate and its range, the median and range of the ratio to ``none`` *of the same
round*, the CPU time per packet that ratio implies over the baseline
(``1/rate - 1/rate_none``, from the medians) and how busy CPU 1 was.

For each number of installed flows (the test flow plus ``N - 1`` others that
no packet matches) it also gives the install time, the time of one guard read
of one colour (every flow's counters at the node under test: nftables in the
first round only, it takes seconds at 100,000), and for ``ebpf`` the kernel's
own time per packet of each program (``BPF_PROG_TEST_RUN``: ``altmark_mark``
once on each of 2,000 fresh copies of the encapsulated frame (with or without the reserved octets), so every run is
a cold one, ``altmark_count`` 100,000 times on the marked frame).

With ``--perf DIR`` every run is also profiled (``perf record`` of CPU 1,
cpu-clock samples), and for each number of flows it prints, per setting, the
kernel's ns per forwarded packet in the receive softirq (the samples under
``net_rx_action``, so other work on CPU 1 is left out), by symbol, the
symbols that differ most from ``none`` first: where a data plane's cost goes.

Prints a table for people (or JSON lines with ``--json``); asserts nothing
about times. The node under test's counters of the test flow are checked
against what it forwarded (counted >= forwarded), so a data plane that does
not count cannot report a rate. Everything it builds is removed at the end.

    python bench/dataplane.py [--flows 1,1000,10000,100000] [--points ingress,transit]
                              [--dataplanes nftables,ebpf,ebpf-clsact,ebpf-helper]
                              [--seconds 1] [--rounds 5] [--size 64] [--json] [--perf DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from flood import Batch, frame_socket, pin, steer

from srv6pm import bpf, srv6
from srv6pm import netns as nsutil
from srv6pm.exporter import ebpf
from srv6pm.exporter.dataplane import CountingTable, FlowMatch
from srv6pm.exporter.routes import Routes
from srv6pm.nft import Nft
from srv6pm.lab import network, scenario, topology
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

POINTS = {"ingress": ("none", "nftables", "ebpf", "ebpf-clsact", "ebpf-helper"),
          "transit": ("none", "ebpf", "ebpf-clsact")}
RESERVED = ("ebpf", "ebpf-clsact")  # the settings whose encap route reserves the option's octets
UDP_IP6 = 48  # IPv6 + UDP headers
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SINK_TABLE = "srv6pm_bench_sink"
SENDER_CPU, NODE_CPU = 0, 1
TEST_FLOWMON_ID = 1


def build_plan() -> topology.Plan:
    tag = secrets.token_hex(2)
    a, b, c = f"bd{tag}a", f"bd{tag}b", f"bd{tag}c"
    text = (f"period: 1\ndataplane: ebpf\nnodes: [{a}, {b}, {c}]\nlinks: [[{a}, {b}], [{b}, {c}]]\n"
            f"flows:\n  - {{name: f1, from: {a}, to: {c}, via: [{b}], rate: 1}}\n")
    return topology.plan(scenario.parse(text, source="bench"))


def other_flows(count: int) -> list[tuple[str, str]]:
    """``count`` (source, destination) /128 pairs that no test packet matches."""
    base = int(ipaddress.IPv6Address("fd99::"))
    return [(str(ipaddress.IPv6Address(base + 2 * i)) + "/128", str(ipaddress.IPv6Address(base + 2 * i + 1)) + "/128")
            for i in range(count)]


# -- the network's figures ------------------------------------------------------------------

def _tx(dev: str) -> int:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        (link,) = ipr.get_links(ifname=dev)
    stats = link.get_attr("IFLA_STATS64")
    return stats["tx_packets"] + stats["tx_dropped"]


def tx_packets(ns: str, dev: str) -> int:
    """Packets ``dev`` in ``ns`` transmitted or dropped on transmit (a veth drops when its peer's backlog is full)."""
    with nsutil.NetnsThread(ns) as t:
        return t.call(_tx, dev)


def _drop_clsact() -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    with IPRoute() as ipr:
        for index, name in socket.if_nameindex():
            if name != "lo":
                try:
                    ipr.tc("del", "clsact", index)
                except NetlinkError:  # none there
                    pass


def drop_clsact(ns: str) -> None:
    """Delete the clsact qdisc that attaching left on ``ns``'s interfaces: ``none`` runs with no tc hook at all."""
    with nsutil.NetnsThread(ns) as t:
        t.call(_drop_clsact)


TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies of one CPU from /proc/stat: busy (neither idle nor iowait), softirq (where a node's forwarding
    runs), steal (the hypervisor's), total."""

    busy: int
    softirq: int
    steal: int
    total: int

    @classmethod
    def of(cls, cpu: int) -> CpuTimes:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(f"cpu{cpu} "):
                    v = [int(x) for x in line.split()[1:]]
                    return cls(sum(v) - v[3] - v[4], v[6], v[7], sum(v))
        return cls(0, 0, 0, 0)

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy - other.busy, self.softirq - other.softirq, self.steal - other.steal,
                        self.total - other.total)


def capture(ns: str, dev: str, send: Callable[[], None], wanted: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
    """The first IPv6 frame ``dev`` in ``ns`` receives for which ``wanted`` is true, while ``send()`` runs repeatedly."""
    with nsutil.NetnsThread(ns) as t:
        sock = t.call(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        t.call(sock.bind, (dev, ETH_P_IPV6))
    with sock:
        sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            send()
            try:
                while True:
                    data, address = sock.recvfrom(65535)
                    if address[2] != PACKET_OUTGOING and wanted(data):
                        return data
            except TimeoutError:
                continue
    raise SystemExit(f"bench/dataplane.py: no matching frame arrived on {dev} in {ns}")


def send_one(ns: str, dst: str, payload: int) -> Callable[[], None]:
    def send() -> None:
        with nsutil.NetnsThread(ns) as t:
            sock = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)
        with sock:
            sock.sendto(bytes(payload), (dst, 9))
    return send


class EncapRoute:
    """The test flow's encap route at the ingress, made by the exporter's :class:`Routes` (protocol 77) in
    place of the lab's: :meth:`use` ``reserve`` or not (the SRH with or without the eBPF data plane's reserved padding)."""

    def __init__(self, plan: topology.Plan):
        a = plan.scenario.nodes[0]
        (e,) = plan.nodes[a].encap_routes
        self.policy = validate.policy(pb.Policy(name="f1", destination=e.dst, segments=list(e.segments),
                                                device=e.dev))
        with nsutil.NetnsThread(a) as t:
            t.call(_delete_route, e.dst)
        self.routes = {False: Routes(a), True: Routes(a, reserve=True)}
        self.use(False)

    def use(self, reserve: bool) -> None:
        self.routes[reserve].apply_policy(self.policy)

    def close(self) -> None:
        for r in self.routes.values():
            r.close()


def _delete_route(dst: str) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.route("del", dst=dst)


@dataclass
class Frames:
    """What each node receives of the test flow: the host's UDP packet at ``a``; at ``b`` the packet
    after H.Encaps (``encapsulated``; ``reserved``: with the route's reserved padding) and after marking
    (``marked``, the same either way)."""

    host: bytes
    encapsulated: bytes
    reserved: bytes
    marked: bytes


def capture_frames(plan: topology.Plan, size: int, route: EncapRoute) -> Frames:
    a, b, _c = plan.scenario.nodes
    flow = plan.flow("f1")
    send = send_one(flow.src_netns, flow.dst_addr, size - UDP_IP6)
    host = capture(a, "host", send, lambda f: f[20] == 17 and f[38:54] == ipaddress.IPv6Address(flow.dst_addr).packed)
    encapsulated = capture(b, a, send, lambda f: f[20] == 43)
    route.use(True)
    try:
        reserved = capture(b, a, send, lambda f: f[20] == 43 and len(f) == len(encapsulated) + 8)
        table = ebpf.EbpfTable(a, a)
        try:
            table.install([ebpf.Point("f1", "ingress", TEST_FLOWMON_ID, 0, *plan.flow_match("f1"))], colour=0)
            marked = capture(b, a, send, lambda f: f[20] == 60)
            route.use(False)
            plain = capture(b, a, send, lambda f: f[20] == 60 and len(f) == len(marked))
            headers = slice(18, 14 + 40 + 8 + (marked[63] + 1) * 8)  # outer IPv6 from Payload Length, DOH, SRH
            if plain[headers] != marked[headers]:  # (the flow labels and ports differ: a socket per send)
                raise SystemExit("bench/dataplane.py: the headers marked with and without the reserved octets "
                                 f"differ: {marked[headers].hex()} {plain[headers].hex()}")
        finally:
            table.remove()
            drop_clsact(a)
    finally:
        route.use(False)
    return Frames(host, encapsulated, reserved, marked)


# -- the programs' own time, in the path ----------------------------------------------------

class ProgramStats:
    """The kernel's run-time statistics of BPF programs (``BPF_ENABLE_STATS``), on while this object is open:
    :meth:`read` gives (ns, runs) of a program as it ran on real packets in the forwarding path."""

    INFO_RUN_TIME = 192  # offsetof(struct bpf_prog_info, run_time_ns); run_cnt follows

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(bpf.LIBRARY, use_errno=True)
        self.fd = self._lib.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
        if self.fd < 0:
            raise SystemExit(f"bench/dataplane.py: BPF_ENABLE_STATS: {os.strerror(-self.fd)}")

    def read(self, prog_fd: int) -> tuple[int, int]:
        info = ctypes.create_string_buffer(256)
        length = ctypes.c_uint32(len(info))
        if self._lib.bpf_obj_get_info_by_fd(prog_fd, info, ctypes.byref(length)):
            raise SystemExit("bench/dataplane.py: bpf_obj_get_info_by_fd failed")
        ns, runs = struct.unpack_from("<QQ", info.raw, self.INFO_RUN_TIME)
        return ns, runs

    def close(self) -> None:
        os.close(self.fd)


# -- one counting point as the node under test ------------------------------------------------

@dataclass
class Point:
    """The node under test for one counting point: fed on ``rx`` by a packet socket on the far end of the link
    (in ``feeder_ns``), measured on ``tx``; ``sink`` (namespace, interface) drops what it forwards."""

    name: str
    node: str
    feeder_ns: str
    feeder_dev: str
    rx: str
    tx: str
    sink: tuple[str, str]
    frame: bytes
    settings: tuple[str, ...]
    tables: dict[str, object] = field(default_factory=dict)

    def prepare(self, plan: topology.Plan) -> None:
        """The node's receive processing on its own CPU; the sink's (and the feeder's) on the sender's."""
        steer(self.node, self.rx, NODE_CPU)
        steer(*self.sink, SENDER_CPU)
        nft = Nft(self.sink[0])
        try:
            nft.run([{"add": {"table": {"family": "netdev", "name": SINK_TABLE}}},
                     {"add": {"chain": {"family": "netdev", "table": SINK_TABLE, "name": "drop", "type": "filter",
                                        "hook": "ingress", "dev": self.sink[1], "prio": -500, "policy": "drop"}}}])
        finally:
            nft.close()

    def finish(self) -> None:
        nft = Nft(self.sink[0])
        try:
            nft.run([{"delete": {"table": {"family": "netdev", "name": SINK_TABLE}}}])
        finally:
            nft.close()


def points(plan: topology.Plan, frames: Frames, wanted: list[str], dataplanes: list[str]) -> list[Point]:
    """The counting points of ``wanted``, each with its settings among ``dataplanes`` (``none`` always)."""
    a, b, c = plan.scenario.nodes
    flow = plan.flow("f1")

    def settings(name: str) -> tuple[str, ...]:
        return tuple(k for k in POINTS[name] if k == "none" or k in dataplanes)
    out = {"ingress": Point("ingress", a, flow.src_netns, topology.HOST_PEER_IFNAME, "host", b, (b, a),
                            frames.host, settings("ingress")),
           "transit": Point("transit", b, a, b, a, c, (c, b), frames.marked, settings("transit"))}
    return [out[name] for name in wanted]


class Setting:
    """One data plane at the node under test, with ``n`` flows: :meth:`on` before a run, :meth:`off` after."""

    def __init__(self, kind: str, point: Point, plan: topology.Plan, n: int, route: EncapRoute):
        self.kind, self.point, self.n, self.route = kind, point, n, route
        self.ebpf = kind.startswith("ebpf")
        self.match = plan.flow_match("f1")
        self.install_s: list[float] = []
        self.table: ebpf.EbpfTable | CountingTable | None = None
        self.nft: Nft | None = None
        if self.ebpf:  # loaded and filled once; attached for its runs only
            t0 = time.perf_counter()
            table = ebpf.EbpfTable(point.node, point.node, attach=False,
                                   hook="tc" if kind == "ebpf-clsact" else "auto")
            if point.name == "ingress":
                ps = [ebpf.Point("f1", "ingress", TEST_FLOWMON_ID, 0, *self.match)]
                ps += [ebpf.Point(f"o{i}", "ingress", i + 2, 0, s, d) for i, (s, d) in enumerate(other_flows(n - 1))]
            else:
                ps = [ebpf.Point("f1", "transit", TEST_FLOWMON_ID, 1)]
                ps += [ebpf.Point(f"o{i}", "transit", i + 2, 1) for i in range(n - 1)]
            table.install(ps, colour=0)
            self.install_s.append(time.perf_counter() - t0)
            self.table = table

    def on(self) -> None:
        if self.kind in RESERVED and self.point.name == "ingress":
            self.route.use(True)
        if self.ebpf:
            assert isinstance(self.table, ebpf.EbpfTable)
            self.table.attach()
        elif self.kind == "nftables":  # installed for each run, removed after it: `none` has no table at all
            self.nft = Nft(self.point.node)
            table = CountingTable(self.nft)
            flows = [FlowMatch("f1", *self.match)] + [FlowMatch(f"o{i}", s, d)
                                                      for i, (s, d) in enumerate(other_flows(self.n - 1))]
            t0 = time.perf_counter()
            table.install(flows, [], colour=0)
            self.install_s.append(time.perf_counter() - t0)
            self.table = table

    def packets(self) -> int | None:
        """The test flow's packets counted so far (colour 0) at the node under test; None for no data plane."""
        if isinstance(self.table, ebpf.EbpfTable):
            return self.table.read_all(0)[self.point.name].counts["f1"][0]
        if isinstance(self.table, CountingTable):
            return self.table.read("ingress", 0).counts["f1"][0]
        return None

    def guard_read(self) -> float:
        t0 = time.perf_counter()
        if isinstance(self.table, ebpf.EbpfTable):
            self.table.read_all(0)
        elif isinstance(self.table, CountingTable):
            self.table.read("ingress", 0)
        return time.perf_counter() - t0

    def off(self) -> None:
        if self.kind in RESERVED and self.point.name == "ingress":
            self.route.use(False)
        if isinstance(self.table, ebpf.EbpfTable):
            self.table.detach()
            drop_clsact(self.point.node)
        elif isinstance(self.table, CountingTable):
            self.table.remove()
            self.table = None
        if self.nft is not None:
            self.nft.close()
            self.nft = None

    def close(self) -> None:
        self.off()
        if isinstance(self.table, ebpf.EbpfTable):
            self.table.remove()
        self.table = None


@dataclass
class Run:
    """One run: frames tried and taken by the sender's kernel, forwarded by the node; CPU 1's time meanwhile."""

    offered: int
    accepted: int
    forwarded: int
    seconds: float
    cpu: CpuTimes

    @property
    def pps(self) -> float:
        return self.forwarded / self.seconds

    @property
    def softirq_ns(self) -> float:
        """CPU 1's softirq time per forwarded packet: the node's forwarding cost, whatever else ran on CPU 1."""
        return self.cpu.softirq * TICK_NS / self.forwarded if self.forwarded else float("nan")

    def share(self, jiffies: int) -> float:
        return jiffies / self.cpu.total if self.cpu.total else float("nan")


class Profile:
    """``perf record`` of CPU 1 (the node under test's forwarding, cpu-clock samples with call graphs) for the
    time of one run and its drain (and 0.2 s of idle before it), into ``path``; :func:`symbols` reads it back as kernel ns per forwarded packet by symbol."""

    def __init__(self, path: str, seconds: float):
        self.path = path
        self.proc = subprocess.Popen(["perf", "record", "-q", "-C", str(NODE_CPU), "-e", "cpu-clock", "-F", "4999",
                                      "-g", "-o", path, "--", "sleep", str(seconds + 0.3)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.2)  # perf is set up before the measured bursts start

    def wait(self) -> None:
        _, err = self.proc.communicate()
        if self.proc.returncode:
            raise SystemExit(f"bench/dataplane.py: perf record: {err.decode(errors='replace').strip()}")


def symbols(path: str, packets: int) -> dict[str, float]:
    """Symbol -> ns of CPU 1 per forwarded packet (self time: the samples' period in it), from ``perf report``,
    counting only the samples under ``net_rx_action`` (the receive softirq: the node's forwarding), so that
    other work on CPU 1 is left out."""
    out = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children", "-g", "none", "--sort", "sym",
                          "-F", "period,sym", "-p", "net_rx_action", "-x", "--percent-limit", "0"], check=True,
                         capture_output=True, text=True).stdout
    shares: dict[str, float] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit() and fields[1].startswith("["):
            shares[fields[2]] = shares.get(fields[2], 0.0) + int(fields[0]) / packets
    return shares


def measure(point: Point, setting: Setting, seconds: float, guard: list[float], first: bool,
            perf: str | None = None) -> Run:
    """One run: the setting on, a short warm-up, ``seconds`` of bursts, the setting off; with ``perf`` (a path)
    CPU 1 is profiled during the bursts into that file."""
    setting.on()
    try:
        sock = frame_socket(point.feeder_ns, point.feeder_dev)
        with sock:
            batch = Batch(sock, point.frame)
            batch.flood(0.1)
            time.sleep(0.05)
            counted0 = setting.packets() if setting.ebpf else None
            tx0 = tx_packets(point.node, point.tx)
            profile = Profile(perf, seconds) if perf else None
            cpu0 = CpuTimes.of(NODE_CPU)
            t0 = time.perf_counter()
            accepted, offered = batch.flood(seconds)
            elapsed = time.perf_counter() - t0
            cpu = CpuTimes.of(NODE_CPU) - cpu0
            if profile is not None:
                profile.wait()
            time.sleep(0.05)  # what is queued drains
            forwarded = tx_packets(point.node, point.tx) - tx0
        if setting.ebpf or (setting.kind == "nftables" and first):
            guard.append(setting.guard_read())
            counted = setting.packets()
            if counted is None or (counted0 is not None and counted - counted0 < forwarded) or counted < forwarded:
                raise SystemExit(f"{setting.kind} at the {point.name} node with {setting.n} flows: counted "
                                 f"{counted} (from {counted0}) but forwarded {forwarded}")
    finally:
        setting.off()
    return Run(offered, accepted, forwarded, elapsed, cpu)


def in_path_ns(point: Point, setting: Setting, seconds: float) -> dict[str, float]:
    """Program -> its kernel ns per run on the real packets of one more run (with run-time statistics on, which
    add their own clock reads, so that run's rate is not used)."""
    assert isinstance(setting.table, ebpf.EbpfTable)
    fds = {name: setting.table.program_fd(f"altmark_{name}") for name in ("mark", "count")}
    setting.on()
    stats = ProgramStats()
    try:
        with frame_socket(point.feeder_ns, point.feeder_dev) as sock:
            batch = Batch(sock, point.frame)
            batch.flood(0.1)
            before = {name: stats.read(fd) for name, fd in fds.items()}
            batch.flood(seconds)
            time.sleep(0.05)
            after = {name: stats.read(fd) for name, fd in fds.items()}
    finally:
        stats.close()
        setting.off()
    return {name: (after[name][0] - before[name][0]) / (after[name][1] - before[name][1])
            for name in fds if after[name][1] > before[name][1]}


def program_ns(setting: Setting, frames: Frames) -> float:
    """Kernel ns per packet of the program of ``setting``'s counting point (``BPF_PROG_TEST_RUN``)."""
    assert isinstance(setting.table, ebpf.EbpfTable)
    if setting.point.name == "ingress":
        frame = frames.reserved if setting.kind in RESERVED else frames.encapsulated
        runs = [bpf.test_run(setting.table.program_fd("altmark_mark"), frame) for _ in range(2000)]
        if runs[0].packet[20] != 60:
            raise SystemExit("altmark_mark did not mark the test flow's frame")
        return sum(r.ns_per_run for r in runs) / len(runs)
    return float(bpf.test_run(setting.table.program_fd("altmark_count"), frames.marked, repeat=100_000).ns_per_run)


def median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def run_point(point: Point, plan: topology.Plan, frames: Frames, route: EncapRoute, args) -> list[dict]:
    rows = []
    point.prepare(plan)
    try:
        for n in args.flows:
            settings = {kind: Setting(kind, point, plan, n, route) for kind in point.settings}
            runs: dict[str, list[Run]] = {kind: [] for kind in point.settings}
            guards: dict[str, list[float]] = {kind: [] for kind in point.settings}
            programs: dict[str, float] = {}
            in_path: dict[str, dict[str, float]] = {}
            profiles: dict[str, dict[str, float]] = {}
            try:
                for r in range(args.rounds):
                    order = point.settings[r % len(point.settings):] + point.settings[:r % len(point.settings)]
                    for kind in order:
                        perf = os.path.join(args.perf, f"{point.name}-{kind}-{n}-{r}.data") if args.perf else None
                        x = measure(point, settings[kind], args.seconds, guards[kind], r == 0, perf)
                        runs[kind].append(x)
                        if perf:  # summed over the rounds: ns per packet of all the rounds' packets
                            share = symbols(perf, x.forwarded * args.rounds)
                            mine = profiles.setdefault(kind, {})
                            for name, ns in share.items():
                                mine[name] = mine.get(name, 0.0) + ns
                        if args.verbose:
                            print(f"  round {r} {point.name} {kind} {n}: {x.pps:,.0f} pps, {x.softirq_ns:.0f} ns/pkt, "
                                  f"offered {x.offered:,} accepted {x.accepted:,} forwarded {x.forwarded:,}, cpu1 "
                                  f"{x.cpu}", file=sys.stderr, flush=True)
                for kind, setting in settings.items():
                    if setting.ebpf:
                        programs[kind] = program_ns(setting, frames)
                        in_path[kind] = in_path_ns(point, setting, args.seconds)
            finally:
                for s in settings.values():
                    s.close()
            base = [x.pps for x in runs["none"]]
            base_ns = statistics.median(x.softirq_ns for x in runs["none"])
            for kind in point.settings:
                pps = [x.pps for x in runs[kind]]
                ratios = [p / b for p, b in zip(pps, base, strict=True)]
                rate, low, high = median_range(pps)
                ratio, rlow, rhigh = median_range(ratios)
                cost, clow, chigh = median_range([x.softirq_ns for x in runs[kind]])
                row = {"point": point.name, "dataplane": kind, "flows": n, "rounds": args.rounds,
                       "forwarded_pps": round(rate), "forwarded_pps_min": round(low), "forwarded_pps_max": round(high),
                       "offered_pps": round(statistics.median(x.offered / x.seconds for x in runs[kind])),
                       "forwarded_share": round(statistics.median(x.forwarded / x.offered for x in runs[kind]), 3),
                       "ratio_to_none": round(ratio, 3), "ratio_min": round(rlow, 3), "ratio_max": round(rhigh, 3),
                       "softirq_ns_per_packet": round(cost, 1), "softirq_ns_min": round(clow, 1),
                       "softirq_ns_max": round(chigh, 1),
                       "extra_softirq_ns": None if kind == "none" else round(cost - base_ns, 1),
                       "cpu_ratio_to_none": round(base_ns / cost, 3),
                       "cpu1_softirq": round(statistics.median(x.share(x.cpu.softirq) for x in runs[kind]), 3),
                       "cpu1_busy": round(statistics.median(x.share(x.cpu.busy) for x in runs[kind]), 3),
                       "cpu1_steal": round(statistics.median(x.share(x.cpu.steal) for x in runs[kind]), 3),
                       "install_s": round(statistics.median(settings[kind].install_s), 4)
                       if settings[kind].install_s else None,
                       "guard_read_s": round(statistics.median(guards[kind]), 5) if guards[kind] else None,
                       "program_ns": round(programs[kind], 1) if kind in programs else None,
                       "mark_ns_in_path": round(in_path[kind]["mark"], 1) if "mark" in in_path.get(kind, {}) else None,
                       "count_ns_in_path": round(in_path[kind]["count"], 1) if "count" in in_path.get(kind, {})
                       else None}
                rows.append(row)
                show(row, args.json)
            if profiles:
                show_profiles(point.name, n, profiles, args.json)
    finally:
        point.finish()
    return rows


def _ns(value: float | None) -> str:
    """A program's in-path time, or that it did not run (not attached: the node has no point that needs it)."""
    return "not run" if value is None else f"{value:.0f} ns"


def show(row: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
        return
    extra = "" if row["extra_softirq_ns"] is None else f" ({row['extra_softirq_ns']:+.0f})"
    guard = "" if row["guard_read_s"] is None else f"  guard read {row['guard_read_s'] * 1000:.2f} ms"
    install = "" if row["install_s"] is None else f"  install {row['install_s']:.3f} s"
    program = "" if row["program_ns"] is None else \
        (f"  {'mark' if row['point'] == 'ingress' else 'count'} {row['program_ns']:.0f} ns (test run)"
         f", in path: mark {_ns(row['mark_ns_in_path'])}, count {_ns(row['count_ns_in_path'])}")
    print(f"{row['point']:8} {row['dataplane']:11} {row['flows']:>7}  {row['forwarded_pps']:>9,} pps "
          f"[{row['forwarded_pps_min']:,}-{row['forwarded_pps_max']:,}] {100 * row['forwarded_share']:3.0f} % of offered"
          f"  x{row['ratio_to_none']:.3f} [{row['ratio_min']:.3f}-{row['ratio_max']:.3f}]"
          f"  softirq {row['softirq_ns_per_packet']:.0f} ns/pkt [{row['softirq_ns_min']:.0f}-{row['softirq_ns_max']:.0f}]"
          f"{extra} x{row['cpu_ratio_to_none']:.3f}  cpu1 softirq/busy/steal {100 * row['cpu1_softirq']:.0f}/"
          f"{100 * row['cpu1_busy']:.0f}/{100 * row['cpu1_steal']:.0f} %{install}{guard}{program}", flush=True)


# The kernel symbols a data plane adds to the path, by what they are; "hook sites" are the functions where the
# tc hooks are (tcx runs inlined there) and the first one that reads the packet's header when no program did.
OWN = {"tc layers": ("tc_run", "tcx_", "cls_bpf_", "tcf_classify", "__tcf_classify", "sch_handle_"),
       "programs": ("bpf_prog_",),
       "map lookups": ("__htab_map_lookup_elem", "lookup_nulls_elem_raw", "htab_map_hash", "memcmp",
                       "trie_lookup_elem", "jhash"),
       "helpers": ("bpf_skb_", "skb_ensure_writable", "__pskb_pull_tail"),
       "hook sites": ("__netif_receive_skb_core", "__dev_queue_xmit", "ip6_rcv_core")}


def own_costs(diff: dict[str, float]) -> dict[str, float]:
    """Category of :data:`OWN` -> ns per packet over ``none`` of the symbols in it."""
    return {cat: sum(v for k, v in diff.items() if k.startswith(prefixes)) for cat, prefixes in OWN.items()}


def show_profiles(point: str, n: int, profiles: dict[str, dict[str, float]], as_json: bool, top: int = 25) -> None:
    """The symbols of CPU 1 that cost each setting more (or less) per forwarded packet than ``none``, largest first,
    and the sum of those a data plane adds (:data:`OWN`): its own cost, which the rest of the machine's work moves
    much less than the totals."""
    base = profiles.get("none", {})
    base_total = sum(base.values())
    for kind, prof in profiles.items():
        total = sum(prof.values())
        diff = {k: prof.get(k, 0.0) - base.get(k, 0.0) for k in set(prof) | set(base)}
        biggest = sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]
        own = own_costs(diff)
        if as_json:
            print(json.dumps({"point": point, "flows": n, "dataplane": kind, "profile_ns_per_packet": round(total, 1),
                              "profile_extra_ns": round(total - base_total, 1),
                              "own_ns": {k: round(v, 1) for k, v in own.items()},
                              "symbols_ns": {k: round(prof.get(k, 0.0), 1) for k, _ in biggest},
                              "symbols_extra_ns": {k: round(v, 1) for k, v in biggest}}), flush=True)
            continue
        print(f"  perf {point} {kind} {n}: {total:.0f} ns/pkt in CPU 1's receive softirq"
              + ("" if kind == "none" else f", {total - base_total:+.0f} over none; its own symbols "
                 f"{sum(own.values()):+.0f} (" + ", ".join(f"{k} {v:+.0f}" for k, v in own.items())
                 + "); by symbol (ns/pkt, over none):"), flush=True)
        if kind != "none":
            for k, v in biggest:
                print(f"    {prof.get(k, 0.0):7.1f} {v:+7.1f}  {k}", flush=True)


def run(args) -> list[dict]:
    plan = build_plan()
    rows: list[dict] = []
    pin(SENDER_CPU)
    route = None
    try:
        network.build(plan)
        route = EncapRoute(plan)
        frames = capture_frames(plan, args.size, route)
        for point in points(plan, frames, args.points, args.dataplanes):
            rows += run_point(point, plan, frames, route, args)
    finally:
        if route is not None:
            route.close()
        network.teardown(plan)
        for node in plan.scenario.nodes:
            bpf.unpin(ebpf.pin_dir(node))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", default="1,1000,10000,100000",
                        help="installed flow counts, comma separated (default 1,1000,10000,100000)")
    parser.add_argument("--points", default="ingress,transit",
                        help="counting points to measure: ingress, transit or both (default both)")
    parser.add_argument("--dataplanes", default="nftables,ebpf,ebpf-clsact,ebpf-helper",
                        help="settings besides none (the baseline, always run): nftables, ebpf, ebpf-clsact, "
                             "ebpf-helper (ingress only) (default all)")
    parser.add_argument("--seconds", type=float, default=1.0, help="sending time per run (default 1)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="runs per setting, the settings taking turns; medians and ranges shown (default 5)")
    parser.add_argument("--size", type=int, default=64, help="the test flow's IPv6 packet size in octets, >= 48 "
                        "(default 64)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--perf", metavar="DIR", help="profile CPU 1 with perf in every run (files in DIR) and "
                        "print, per setting, the kernel symbols' ns per forwarded packet (mean of the rounds' "
                        "figures) that differ most from none's")
    parser.add_argument("--verbose", action="store_true", help="every run's figures on stderr")
    args = parser.parse_args(argv)
    try:
        args.flows = [int(x) for x in args.flows.split(",")]
    except ValueError:
        parser.error("--flows: comma-separated whole numbers")
    args.points = args.points.split(",")
    args.dataplanes = args.dataplanes.split(",")
    if any(d not in POINTS["ingress"] for d in args.dataplanes):
        parser.error(f"--dataplanes: some of {', '.join(POINTS['ingress'][1:])}")
    if any(p not in POINTS for p in args.points):
        parser.error(f"--points: some of {', '.join(POINTS)}")
    if any(n < 1 for n in args.flows) or not 0 < args.seconds <= 60 or args.size < UDP_IP6 or args.rounds < 1:
        parser.error("--flows >= 1 each, --seconds in (0, 60], --rounds >= 1, --size >= 48")
    if args.perf:
        os.makedirs(args.perf, exist_ok=True)
    if os.geteuid() != 0:
        print("bench/dataplane.py: needs root (network namespaces, eBPF programs)", file=sys.stderr)
        return 2
    try:
        bpf.check_support(ebpf.OBJECT)
    except bpf.BpfError as exc:
        print(f"bench/dataplane.py: {exc}", file=sys.stderr)
        return 1
    no_srv6 = srv6.missing()
    if no_srv6 is not None:  # every setting forwards by seg6 routes
        print(f"bench/dataplane.py: {no_srv6}", file=sys.stderr)
        return 1
    if (os.cpu_count() or 1) < 2:
        print("bench/dataplane.py: one CPU only: the sender and the node under test share it", file=sys.stderr)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
