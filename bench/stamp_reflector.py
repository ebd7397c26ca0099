"""Benchmark: what do srv6pm's STAMP Session-Reflectors cost, next to a bare UDP echo loop?

Three network namespaces with random names, G (the load generator) - R (the
reflector's node, an IPv6 router) - D (a sink behind R), joined by veths with
an MTU of 9000 (so that a 1500-octet test packet is one frame). While an XDP
kind runs, G's veth computes UDP checksums itself (with the usual offload a
veth passes partial checksums on, which XDP cannot verify and passes up).
Servers in R, each in a process of its own pinned to CPU 1; the generator
runs on CPU 0. RPS steers what R's veths receive to CPU 1 too (so the kernel's
work for a test packet, the eBPF reflector's included, is the server side's)
and what G's veth receives to CPU 0:

* ``echo``           the baseline: ``recvmsg`` then ``sendto`` the same bytes back, on
                     srv6pm's socket (kernel receive timestamps, Hop Limit, packet info);
* ``socket``         ``srv6pm.stamp.reflector.Reflector`` (stateless, unauthenticated);
* ``ebpf tc``        ``srv6pm.stamp.ebpf.EbpfReflector`` attached at tc ingress (what
                     ``auto`` picks on veth);
* ``ebpf xdp-generic`` the same in generic XDP.

For each:

1. **Lossless rate**: the highest rate (test packets per second, found by
   doubling then bisection, trials of ``--trial`` seconds) at which every
   test packet comes back and at most 20 ms worth of replies is outstanding
   at the end of the trial, for 64- and 1500-octet test packets (UDP payload;
   a 64-octet STAMP packet is the 44-octet base plus an Extra Padding TLV).
   The generator is one Python process sending and receiving 64 datagrams
   per system call (``sendmmsg``/``recvmmsg``); when it cannot send at the
   asked rate the figure is marked ``>=`` (the server was not the limit).
2. **Added delay** t3 - t2: from the receive timestamp to the one taken just
   before the reply is sent, min / p50 / p99 / max in µs, for test packets
   one at a time (2000/s: the CPU idles in between, caches go cold) and in
   bursts of 16 every 0.5 ms (a busy CPU; queueing in the socket counts).
   The reflectors report it in every reply (Receive Timestamp, Timestamp; the
   eBPF ones take both in the program); the echo loop measures the same
   interval itself (kernel receive timestamp to the clock before ``sendto``).

Then **forwarding**: unrelated UDP traffic G -> D through R as fast as the
generator sends it, 64 octets, with nothing on R's interfaces and with the
eBPF reflector attached (tc, generic XDP): packets per second delivered to
D's interface, and the share of what G sent; the settings take turns, and
the median of ``--forward-rounds`` runs is shown.

Prints tables with every figure beside the echo baseline; asserts nothing.
Needs root and the compiled program (./setup.sh). About a minute and a half.

    python bench/stamp_reflector.py [--trial 0.6] [--delay-packets 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import secrets
import select
import socket
import statistics
import subprocess
import sys
import time

from flood import BATCH, Batch, pin, steer

from srv6pm import netns as nsutil
from srv6pm.stamp import udp
from srv6pm.stamp.ebpf import OBJECT, EbpfReflector
from srv6pm.stamp.packet import ReflectorPacket, SenderPacket
from srv6pm.stamp.protocol import STAMP_PORT
from srv6pm.stamp.reflector import Reflector, ReflectorConfig
from srv6pm.stamp.timestamp import decode, ntp_from_unix_ns
from srv6pm.stamp.tlv import TlvList, extra_padding

SIZES = (64, 1500)
KINDS = ("echo", "socket", "ebpf tc", "ebpf xdp-generic")
RCVBUF = ReflectorConfig().rcvbuf
PORT = STAMP_PORT
G_ADDR, R_ADDR, R_SIDE, D_ADDR = "fd7b:1::1", "fd7b:1::2", "fd7b:2::1", "fd7b:2::2"
MTU = 9000


# -- the network ---------------------------------------------------------------------------

class Network:
    """G - R - D with random namespace names; :meth:`remove` deletes them."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.g, self.r, self.d = f"bg{tag}", f"br{tag}", f"bd{tag}"
        self.links = ((self.g, f"vg{tag}", self.r, f"vrg{tag}"), (self.r, f"vrd{tag}", self.d, f"vd{tag}"))

    @staticmethod
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def build(self) -> None:
        for ns in (self.g, self.r, self.d):
            self.ip("netns", "add", ns)
            self.ip("-n", ns, "link", "set", "lo", "up")
        (g, g_if, r, r_g), (_, r_d, d, d_if) = self.links
        self.ip("link", "add", g_if, "netns", g, "mtu", str(MTU), "type", "veth", "peer", "name", r_g, "netns", r,
                "mtu", str(MTU))
        self.ip("link", "add", r_d, "netns", r, "mtu", str(MTU), "type", "veth", "peer", "name", d_if, "netns", d,
                "mtu", str(MTU))
        for ns, dev, addr in ((g, g_if, G_ADDR), (r, r_g, R_ADDR), (r, r_d, R_SIDE), (d, d_if, D_ADDR)):
            self.ip("-n", ns, "link", "set", dev, "up")
            self.ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        self.ip("-n", g, "-6", "route", "add", "default", "via", R_ADDR)
        self.ip("-n", d, "-6", "route", "add", "default", "via", R_SIDE)
        subprocess.run(["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        macs = {}
        for ns, dev in ((g, g_if), (r, r_g), (r, r_d), (d, d_if)):
            with nsutil.NetnsThread(ns) as t:
                macs[dev] = t.call(_mac, dev)
        for ns, dev, addr, peer in ((g, g_if, R_ADDR, r_g), (r, r_g, G_ADDR, g_if), (r, r_d, D_ADDR, d_if),
                                    (d, d_if, R_SIDE, r_d)):
            self.ip("-n", ns, "neigh", "replace", addr, "lladdr", macs[peer], "dev", dev, "nud", "permanent")
        # receive processing (where the eBPF reflector and the forwarding run) on the servers' CPU,
        # the replies' on the generator's
        for ns, dev, cpu in ((r, r_g, 1), (r, r_d, 1), (g, g_if, 0), (d, d_if, 1)):
            steer(ns, dev, cpu)

    def tx_checksum_offload(self, on: bool) -> None:
        """G's veth offloads UDP checksums (partial ones on the wire), or computes them (XDP needs that)."""
        g, g_if = self.links[0][:2]
        with nsutil.NetnsThread(g) as t:
            t.call(_tx_checksum_offload, g_if, on)

    def remove(self) -> None:
        for ns in (self.g, self.r, self.d):
            if nsutil.exists(ns):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def d_rx_packets(self) -> int:
        _, _, d, d_if = self.links[1]
        with nsutil.NetnsThread(d) as t:
            return t.call(_rx_packets, d_if)


def _mac(dev: str) -> str:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((dev, 0))
        return s.getsockname()[4].hex(":")


def _rx_packets(dev: str) -> int:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        (link,) = ipr.get_links(ifname=dev)
    return link.get_attr("IFLA_STATS64")["rx_packets"]


def _tx_checksum_offload(dev: str, on: bool) -> None:
    from pyroute2.ethtool import Ethtool
    with contextlib.closing(Ethtool()) as tool:
        features = tool.get_features(dev)
        features.features["tx-checksum-ip-generic"].enable = on  # what a veth offers
        tool.set_features(dev, features)


# -- servers (child processes, sockets in R) -----------------------------------------------

def echo_server(conn, net: Network) -> None:
    """Bare echo loop; keeps t3 - t2 (kernel receive timestamp -> clock before sendto)."""
    pin(1)
    sock = udp.open_socket(R_ADDR, PORT, netns=net.r, rcvbuf=RCVBUF)
    conn.send("ready")
    delays: list[int] = []
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN)
    while True:
        poller.poll(1000)
        if conn.poll():
            command = conn.recv()
            if command == "stop":
                break
            if command == "reset":
                delays.clear()
            elif command == "delays":
                conn.send(delays)
        while True:
            try:
                rx = udp.receive(sock, 65536)
            except BlockingIOError:
                break
            now = time.time_ns()
            try:
                sock.sendto(rx.data, rx.source)
            except OSError:
                continue
            delays.append(now - rx.rx_ns)
    sock.close()


def reflector_server(conn, net: Network, kind: str) -> None:
    pin(1)
    config = ReflectorConfig(bind=R_ADDR, port=PORT, netns=net.r, rcvbuf=RCVBUF)
    if kind == "socket":
        reflector = Reflector(config)
    else:
        reflector = EbpfReflector(config, instance=f"bench-{net.r}", attach=kind.split()[1])
    reflector.start()
    conn.send("ready")
    while True:
        command = conn.recv()
        if command == "stop":
            break
        if command == "delays":
            conn.send([])
    reflector.close()


def _socket(net: Network, dest: str) -> socket.socket:
    with nsutil.NetnsThread(net.g) as t:
        sock = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
    sock.bind((G_ADDR, 0))
    sock.connect((dest, PORT))
    return sock


def payload(size: int) -> bytes:
    base = 44
    tlvs = TlvList((extra_padding(size - base),)) if size > base else TlvList()
    return SenderPacket(0, ntp_from_unix_ns(time.time_ns()), tlvs=tlvs).pack()


def trial(net: Network, data: bytes, rate: float, seconds: float) -> tuple[int, int, bool]:
    """Send ``rate`` packets/s for ``seconds``; return (sent, received in time, generator kept up)."""
    sock = _socket(net, R_ADDR)
    batch = Batch(sock, data)
    sent = received = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int((now - start) * rate) - sent
        if due > 0:
            sent += batch.send(due)
        received += batch.receive()
        if due <= 0:
            time.sleep(0.0002)
    kept_up = sent >= 0.97 * rate * seconds
    backlog_ok = sent - received <= max(20, rate * 0.02)
    drain_until = time.perf_counter() + 0.3
    while time.perf_counter() < drain_until and received < sent:
        got = batch.receive()
        received += got
        if not got:
            time.sleep(0.001)
    sock.close()
    return sent, received if backlog_ok else min(received, sent - 1), kept_up


def lossless_rate(net: Network, size: int, seconds: float, deadline: float) -> tuple[float, bool]:
    """(highest lossless rate found, True if the generator was the limit)."""
    data = payload(size)
    trial(net, data, 1000, 0.2)  # warm up
    good, bad = 0.0, None
    rate = 4000.0
    behind = 0
    while bad is None and time.monotonic() < deadline:
        sent, received, kept_up = trial(net, data, rate, seconds)
        if received < sent:
            bad = rate
        elif not kept_up:
            good = max(good, sent / seconds)
            behind += 1
            if behind == 3:  # three trials in a row: the generator's limit, not a moment of other load
                return good, True
        else:
            good = rate
            rate *= 2
            behind = 0
    for _ in range(4):
        if bad is None or time.monotonic() >= deadline:
            break
        rate = (good + bad) / 2
        sent, received, _kept = trial(net, data, rate, seconds)
        if received < sent:
            bad = rate
        else:
            good = rate
    return good, False


def delays(net: Network, kind: str, conn, packets: int, burst: int = 1) -> list[float]:
    """t3 - t2 in µs for ``packets`` test packets of 64 octets, ``burst`` at a time every ~0.5 ms."""
    if kind == "echo":
        conn.send("reset")
    sock = _socket(net, R_ADDR)
    sock.settimeout(0.5)
    batch = Batch(sock, payload(64))
    out: list[float] = []
    for _ in range(max(1, packets // burst)):
        sent = batch.send(burst)
        for _ in range(sent):
            try:
                reply = sock.recv(65536)
            except socket.timeout:
                break
            if kind != "echo":
                r = ReflectorPacket.unpack(reply)
                t2 = decode(r.receive_timestamp, r.error_estimate.format)
                t3 = decode(r.timestamp, r.error_estimate.format)
                out.append((t3 - t2) / 1000)
        time.sleep(0.0005)
    sock.close()
    if kind == "echo":
        conn.send("delays")
        out = [d / 1000 for d in conn.recv()]
    return out


def forwarding(net: Network, seconds: float) -> tuple[float, float]:
    """(packets/s delivered to D, share of what G sent) for 64-octet UDP to D as fast as G sends."""
    sock = _socket(net, D_ADDR)
    batch = Batch(sock, bytes(64))
    before = net.d_rx_packets()
    sent = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sent += batch.send(BATCH)
    sock.close()
    time.sleep(0.2)
    delivered = net.d_rx_packets() - before
    return delivered / seconds, delivered / sent if sent else 0.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


@contextlib.contextmanager
def server(net: Network, kind: str):
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    target, args = (echo_server, (child, net)) if kind == "echo" else (reflector_server, (child, net, kind))
    proc = ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    try:
        if not parent.poll(20) or parent.recv() != "ready":
            raise RuntimeError(f"{kind} server did not start")
        yield parent
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial", type=float, default=0.6, help="seconds per rate trial (default 0.6)")
    parser.add_argument("--delay-packets", type=int, default=2000, help="packets for the delay figures (default 2000)")
    parser.add_argument("--forward-seconds", type=float, default=1.0, help="seconds per forwarding run (default 1)")
    parser.add_argument("--forward-rounds", type=int, default=3,
                        help="forwarding runs per setting, interleaved; the median is shown (default 3)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/stamp_reflector.py: needs root (network namespaces, the eBPF program)", file=sys.stderr)
        return 2
    if not OBJECT.exists():
        print(f"bench/stamp_reflector.py: {OBJECT} is not built (./setup.sh)", file=sys.stderr)
        return 2
    pin(0)
    net = Network()
    started = time.monotonic()
    results: dict[str, dict] = {}
    forward: dict[str, tuple[float, float]] = {}
    try:
        net.build()
        for kind in KINDS:
            net.tx_checksum_offload("xdp" not in kind)
            with server(net, kind) as conn:
                res: dict = {}
                for size in SIZES:
                    res[size] = lossless_rate(net, size, args.trial, time.monotonic() + 25)
                res["delay"] = delays(net, kind, conn, args.delay_packets)
                res["delay, bursts"] = delays(net, kind, conn, 8 * args.delay_packets, burst=16)
                results[kind] = res
        runs: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.forward_rounds):  # interleaved, so that a change of background load hits all alike
            runs.setdefault("nothing attached", []).append(forwarding(net, args.forward_seconds))
            for kind in KINDS[2:]:
                net.tx_checksum_offload("xdp" not in kind)
                with server(net, kind):
                    runs.setdefault(kind, []).append(forwarding(net, args.forward_seconds))
            net.tx_checksum_offload(True)
        forward = {name: sorted(values)[len(values) // 2] for name, values in runs.items()}  # the median run
    finally:
        net.remove()
    elapsed = time.monotonic() - started

    print(f"STAMP reflector benchmark over veth, G - R - D (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{elapsed:.0f} s)\n")
    print(f"{'':<22}" + "".join(f"{k:>18}" for k in KINDS))
    for size in SIZES:
        cells = "".join(f"{'>=' if results[k][size][1] else '':>6}{results[k][size][0]:>12,.0f}" for k in KINDS)
        print(f"{f'lossless pps, {size} B':<22}{cells}")
        echo = results["echo"][size][0]
        print(f"{'  x echo':<22}" + "".join(f"{results[k][size][0] / echo if echo else float('nan'):>18.2f}"
                                            for k in KINDS))
        sock = results["socket"][size][0]
        print(f"{'  x socket':<22}" + "".join(f"{results[k][size][0] / sock if sock else float('nan'):>18.2f}"
                                              for k in KINDS))
    for series, title in (("delay", "one at a time, 2000/s"), ("delay, bursts", "bursts of 16, 32000/s")):
        print(f"t3-t2, {title}:")
        for label, fn in (("  min µs", min), ("  p50 µs", lambda v: percentile(v, 50)),
                          ("  p99 µs", lambda v: percentile(v, 99)), ("  max µs", max)):
            cells = "".join(f"{fn(results[k][series]) if results[k][series] else float('nan'):>18.2f}" for k in KINDS)
            print(f"{label:<22}{cells}")
    samples = ", ".join(f"{k} {len(results[k]['delay'])}" for k in KINDS)
    print(f"\n(delay samples: {samples}; test packets are UDP payloads; '>=' marks a rate where the load "
          "generator, not the server, was the limit)")
    print(f"\nforwarding 64-octet UDP G -> D through R, as fast as G sends (median of {args.forward_rounds} runs):")
    base = forward["nothing attached"][0]
    for name, (pps, share) in forward.items():
        ratio = "" if name == "nothing attached" else f", {pps / base:.2f} x" if base else ""
        print(f"  {name:<20}{pps:>14,.0f} pps delivered ({100 * share:5.1f} % of sent){ratio}")
    means = ", ".join(f"{k} {statistics.fmean(results[k]['delay']):.2f} µs" for k in KINDS if results[k]["delay"])
    print(f"\nmean t3-t2: {means}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
