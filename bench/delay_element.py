"""Benchmark of the NFQUEUE link-delay element (srv6pm.lab.emulators.delay), beside a baseline without it.

    python bench/delay_element.py [--delay-ms 10] [--seconds 1.5] [--json]

Needs root. Builds three namespaces ``src -- rtr -- dst`` (veths, IPv6,
forwarding in ``rtr``), so that the delayed packets are forwarded ones, as on
a lab router. A sender process in ``src`` paces UDP datagrams that carry
their send time (CLOCK_REALTIME); a receiver in ``dst`` takes the kernel's
receive timestamp (SO_TIMESTAMPNS), so a one-way delay is measured on one
clock. The element runs in its own process (``python -m srv6pm.lab.emulators.delay``,
as the lab runs it) on ``rtr``'s interface towards ``dst``.

It prints, for the baseline (no element) and with the element:

* the one-way delay at 1000 packets/s, and for the element its error
  (one-way delay minus the configured delay): p50, p99, max;
* for increasing rates, packets sent/received/lost, the error p50/p99/max,
  the element's late releases and CPU time per packet; the highest rate
  kept without loss, and without loss with p99 error <= 2 ms, are reported
  at the end.

Everything is removed at the end (namespaces, processes). Bounded: about
45 s with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from srv6pm import netns as nsutil
from srv6pm.lab.emulators.delay import DelayProcess

PROBE = struct.Struct("!Iq")  # sequence, send time (ns, CLOCK_REALTIME)
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
RATES = (1000, 5000, 10000, 15000, 20000, 30000, 40000, 80000)
PORT = 9000


# ------------------------------------------------------------------ network
def build(tag: str) -> dict:
    src, rtr, dst = (f"bdl{tag}{x}" for x in "srd")
    created = []
    try:
        for ns in (src, rtr, dst):
            pr_netns.create(ns)
            created.append(ns)
            _no_dad(ns)
        links = ((src, "rtr", "fd00:b1::1", rtr, "src", "fd00:b1::2"),
                 (rtr, "dst", "fd00:b2::1", dst, "rtr", "fd00:b2::2"))
        with IPRoute() as root:
            for i, (ns_a, _if_a, _, ns_b, _if_b, _) in enumerate(links):
                ta, tb = f"bdl{tag}{i}a", f"bdl{tag}{i}b"
                root.link("add", ifname=ta, kind="veth", peer=tb)
                root.link("set", index=root.link_lookup(ifname=ta)[0], net_ns_fd=ns_a)
                root.link("set", index=root.link_lookup(ifname=tb)[0], net_ns_fd=ns_b)
        for i, (ns_a, if_a, ad_a, ns_b, if_b, ad_b) in enumerate(links):
            for ns, tmp, name, addr in ((ns_a, f"bdl{tag}{i}a", if_a, ad_a), (ns_b, f"bdl{tag}{i}b", if_b, ad_b)):
                with IPRoute(netns=ns) as ipr:
                    idx = ipr.link_lookup(ifname=tmp)[0]
                    ipr.link("set", index=idx, ifname=name)
                    ipr.addr("add", index=idx, address=addr, prefixlen=64, flags=0x02)
                    ipr.link("set", index=idx, state="up")
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        with nsutil.NetnsThread(rtr) as t:
            t.call(_write, "/proc/sys/net/ipv6/conf/all/forwarding", "1")
        with IPRoute(netns=src) as ipr:
            ipr.route("add", dst="::/0", gateway="fd00:b1::2", oif=ipr.link_lookup(ifname="rtr")[0])
        with IPRoute(netns=dst) as ipr:
            ipr.route("add", dst="::/0", gateway="fd00:b2::1", oif=ipr.link_lookup(ifname="rtr")[0])
    except BaseException:
        for ns in created:
            pr_netns.remove(ns)
        raise
    return {"src": src, "rtr": rtr, "dst": dst, "dst_addr": "fd00:b2::2", "namespaces": created}


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _no_dad(ns: str) -> None:
    """No duplicate address detection on the interfaces to come (link-local addresses usable at once)."""
    with nsutil.NetnsThread(ns) as t:
        for conf in ("all", "default"):
            t.call(_write, f"/proc/sys/net/ipv6/conf/{conf}/accept_dad", "0")


def teardown(net: dict) -> None:
    for ns in net["namespaces"]:
        if nsutil.exists(ns):
            pr_netns.remove(ns)


# ------------------------------------------------------------------ traffic
def sender_main(ns: str, dst: str, rate: float, seconds: float, first_seq: int) -> None:
    """(child process) send ``rate`` datagrams per second for ``seconds``; print how many."""
    with nsutil.NetnsThread(ns) as t:
        sock = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)
    total = int(rate * seconds)
    start = time.monotonic()
    n = 0
    errors = 0
    while n < total:
        due = int((time.monotonic() - start) * rate) + 1
        while n < min(due, total):
            try:
                sock.sendto(PROBE.pack(first_seq + n, time.time_ns()).ljust(64, b"\0"), (dst, PORT))
            except OSError:
                errors += 1
            n += 1
        wait = start + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    print(json.dumps({"sent": total - errors, "errors": errors, "seconds": time.monotonic() - start}))


class Receiver:
    def __init__(self, ns: str, addr: str):
        with nsutil.NetnsThread(ns) as t:
            self.sock = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((addr, PORT))
        self.sock.settimeout(0.2)
        self.delays: dict[int, int] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        recv = self.sock.recvmsg
        out = self.delays
        while not self._stop:
            try:
                data, anc, _, _ = recv(128, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            sec, nsec = struct.unpack_from("qq", anc[0][2])
            seq, tx = PROBE.unpack_from(data)
            out[seq] = sec * 1_000_000_000 + nsec - tx

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def udp_rcvbuf_errors(ns: str) -> int:
    def read():
        with open("/proc/thread-self/net/snmp6") as f:
            for line in f:
                if line.startswith("Udp6RcvbufErrors"):
                    return int(line.split()[1])
        return 0
    with nsutil.NetnsThread(ns) as t:
        return t.call(read)


def run_traffic(net: dict, rx: Receiver, rate: float, seconds: float, first_seq: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--sender", net["src"], net["dst_addr"], str(rate),
           str(seconds), str(first_seq)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    sent = json.loads(out.strip().splitlines()[-1])
    deadline = time.monotonic() + 1.0
    total = int(rate * seconds)
    while time.monotonic() < deadline:
        got = sum(1 for s in range(first_seq, first_seq + total) if s in rx.delays)
        if got >= sent["sent"]:
            break
        time.sleep(0.1)
    samples = sorted(rx.delays[s] / 1e6 for s in range(first_seq, first_seq + total) if s in rx.delays)
    return {"rate": rate, "sent": sent["sent"], "received": len(samples), "lost": sent["sent"] - len(samples),
            "send_s": round(sent["seconds"], 3), "samples": samples}


def quantiles(samples: list[float], offset: float = 0.0) -> dict:
    if not samples:
        return {"p50": None, "p99": None, "max": None}
    n = len(samples)
    return {"p50": round(samples[n // 2] - offset, 3), "p99": round(samples[min(n - 1, int(0.99 * n))] - offset, 3),
            "max": round(samples[-1] - offset, 3)}


# ------------------------------------------------------------------ bench
def bench(delay_ms: float, seconds: float, rates=RATES, options=()) -> dict:
    tag = secrets.token_hex(3)
    net = build(tag)
    seq = 0
    result: dict = {"delay_ms": delay_ms, "seconds_per_step": seconds, "rates": []}
    rx = Receiver(net["dst"], net["dst_addr"])
    try:
        for attempt in range(20):  # neighbour discovery along the path, until packets go through
            if run_traffic(net, rx, 100, 0.1, 90_000_000 + 100 * attempt)["lost"] == 0:
                break
        base = run_traffic(net, rx, 1000, seconds * 2, seq)
        seq += 10_000_000
        result["baseline_1000pps"] = {"lost": base["lost"], **quantiles(base["samples"])}
        for rate in rates:
            step_base = run_traffic(net, rx, rate, seconds, seq)
            seq += 10_000_000
            with DelayProcess([(net["rtr"], "dst", delay_ms, 1)], options=options) as proc:
                step = run_traffic(net, rx, rate, seconds, seq)
                seq += 10_000_000
                time.sleep(delay_ms / 1000 + 0.2)
            stats = proc.stop()[0]
            rcvbuf = udp_rcvbuf_errors(net["dst"])
            row = {
                "rate": rate,
                "baseline_lost": step_base["lost"],
                "baseline": quantiles(step_base["samples"]),
                "sent": step["sent"], "received": step["received"], "lost": step["lost"],
                "error": quantiles(step["samples"], delay_ms),
                "late_releases": stats["late_releases"],
                "max_depth": stats["max_depth"],
                "cpu_us_per_packet": round(stats["cpu_s"] / stats["packets"] * 1e6, 1) if stats["packets"] else None,
                "cpu_user_sys_us": [round(stats[k] / stats["packets"] * 1e6, 1) if stats["packets"] else None
                                    for k in ("cpu_user_s", "cpu_sys_s")],
                "kernel_drops": stats.get("kernel_queue_dropped", 0) + stats.get("kernel_user_dropped", 0),
                "enobufs": stats["enobufs"], "lost_in_kernel": stats["lost"],
                "receiver_rcvbuf_errors_total": rcvbuf,
                "sender_seconds": step["send_s"],
            }
            result["rates"].append(row)
            if rate == 1000:
                result["element_1000pps_error"] = row["error"]
                result["element_1000pps_lost"] = row["lost"]
        clean = [r for r in result["rates"] if r["baseline_lost"] == 0]
        result["max_rate_without_loss"] = max((r["rate"] for r in clean if r["lost"] == 0), default=None)
        result["max_rate_precise"] = max((r["rate"] for r in clean if r["lost"] == 0 and r["error"]["p99"] is not None
                                          and r["error"]["p99"] <= 2.0), default=None)
        result["max_rate_tried_without_baseline_loss"] = max(
            (r["rate"] for r in result["rates"] if r["baseline_lost"] == 0), default=None)
    finally:
        rx.close()
        teardown(net)
    return result


def show(r: dict) -> None:
    b = r["baseline_1000pps"]
    e = r.get("element_1000pps_error", {})
    print(f"one-way delay without the element, 1000 pkt/s: p50 {b['p50']} ms, p99 {b['p99']} ms, max {b['max']} ms"
          f" (lost {b['lost']})")
    print(f"element {r['delay_ms']:g} ms, 1000 pkt/s, error (measured - configured): p50 {e.get('p50')} ms, "
          f"p99 {e.get('p99')} ms, max {e.get('max')} ms (lost {r.get('element_1000pps_lost')})")
    print()
    head = (f"{'rate/s':>7} {'base p99':>8} {'base lost':>9} {'sent':>7} {'lost':>6} {'err p50':>8} {'err p99':>8} "
            f"{'err max':>8} {'late':>6} {'depth':>6} {'cpu us/pkt':>10} {'kdrop':>6}")
    print(head)
    print("-" * len(head))
    for x in r["rates"]:
        err = x["error"]
        print(f"{x['rate']:>7} {x['baseline']['p99']!s:>8} {x['baseline_lost']:>9} {x['sent']:>7} {x['lost']:>6} "
              f"{err['p50']!s:>8} {err['p99']!s:>8} {err['max']!s:>8} {x['late_releases']:>6} {x['max_depth']:>6} "
              f"{x['cpu_us_per_packet']!s:>10} {x['kernel_drops']:>6}")
    print()
    print(f"highest rate kept without loss: {r['max_rate_without_loss']} pkt/s; "
          f"without loss and with p99 error <= 2 ms: {r['max_rate_precise']} pkt/s")
    print(f"(the harness itself, without the element, carried up to {r['max_rate_tried_without_baseline_loss']} "
          f"pkt/s without loss; 'late' = releases > 1 ms after due, 'kdrop' = kernel drops: queue full or "
          f"socket overrun)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--sender":
        ns, dst, rate, seconds, first = argv[1:6]
        sender_main(ns, dst, float(rate), float(seconds), int(first))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--delay-ms", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=1.5, help="traffic per step (default 1.5)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    result = bench(args.delay_ms, args.seconds)
    result["bench_seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)
        print(f"(bench took {result['bench_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
