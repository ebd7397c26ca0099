"""Benchmark: what does srv6pm's STAMP Session-Reflector cost, next to a bare UDP echo loop?

Two servers on loopback, each in a process of its own (pinned to one CPU when
there are two or more; the load generator gets another), both on the same kind
of socket (``srv6pm.stamp.udp.open_socket``: kernel receive timestamps, Hop
Limit and packet info, the reflector's 4 MiB receive buffer):

* ``echo``       the baseline: ``recvmsg`` then ``sendto`` the same bytes back;
* ``reflector``  ``srv6pm.stamp.reflector.Reflector`` (stateless, unauthenticated).

For each, two figures:

1. **Lossless rate**: the highest rate (test packets per second, found by
   doubling then bisection, trials of ``--trial`` seconds) at which every
   test packet comes back and the server keeps up (at the end of the trial
   no more than 20 ms worth of replies is outstanding, so a growing backlog
   hidden by the buffer does not count as lossless), for 64-octet and
   1500-octet test packets (UDP
   payload; a 64-octet STAMP packet is the 44-octet base plus an Extra
   Padding TLV). The load generator is one Python process; when it cannot
   send at the asked rate the figure is marked ``>=`` (the server was not
   the limit).
2. **Added delay**: from the kernel's receive timestamp of a test packet to
   the clock reading just before the reply is sent (t3 - t2), at a moderate
   rate: min / p50 / p99 / max in µs. The reflector reports it in every reply
   (Receive Timestamp, Timestamp); the echo loop measures the same interval
   itself and reports it at the end.

Prints a table and the reflector/echo ratios; asserts nothing about times.
Bounded to well under a minute.

    python bench/stamp_reflector.py [--trial 0.6] [--delay-packets 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import select
import socket
import statistics
import sys
import time

from srv6pm.stamp import udp
from srv6pm.stamp.packet import ReflectorPacket, SenderPacket
from srv6pm.stamp.reflector import Reflector, ReflectorConfig
from srv6pm.stamp.timestamp import decode, ntp_from_unix_ns
from srv6pm.stamp.tlv import TlvList, extra_padding

SIZES = (64, 1500)
BUDGET_S = 50.0
RCVBUF = ReflectorConfig().rcvbuf


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() >= 2:
        try:
            os.sched_setaffinity(0, {cpu % os.cpu_count()})
        except OSError:
            pass


# -- servers (child processes) ----------------------------------------------------------

def echo_server(conn) -> None:
    """Bare echo loop; keeps t3 - t2 (kernel receive timestamp -> clock before sendto)."""
    _pin(1)
    sock = udp.open_socket("::1", 0, rcvbuf=RCVBUF)
    conn.send(sock.getsockname()[1])
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


def reflector_server(conn) -> None:
    _pin(1)
    reflector = Reflector(ReflectorConfig(bind="::1", port=0, rcvbuf=RCVBUF)).start()
    conn.send(reflector.address[1])
    while True:
        command = conn.recv()
        if command == "stop":
            break
        if command == "delays":
            conn.send([])
    reflector.close()


# -- load generator ---------------------------------------------------------------------

def payload(size: int) -> bytes:
    base = 44
    tlvs = TlvList((extra_padding(size - base),)) if size > base else TlvList()
    return SenderPacket(0, ntp_from_unix_ns(time.time_ns()), tlvs=tlvs).pack()


def trial(port: int, data: bytes, rate: float, seconds: float) -> tuple[int, int, bool]:
    """Send ``rate`` packets/s for ``seconds``; return (sent, received in time, generator kept up).

    "Received in time" is ``sent`` only if every reply came back and at most
    20 ms worth of them were still outstanding when sending stopped.
    """
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("::1", 0))
    sock.setblocking(False)
    target = ("::1", port)
    sent = received = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int((now - start) * rate)
        burst = min(due - sent, 64)
        for _ in range(burst):
            try:
                sock.sendto(data, target)
                sent += 1
            except BlockingIOError:
                break
        while True:
            try:
                sock.recv(65536)
                received += 1
            except BlockingIOError:
                break
        if burst <= 0:
            time.sleep(0.0002)
    kept_up = sent >= 0.97 * rate * seconds
    backlog_ok = sent - received <= max(20, rate * 0.02)
    drain_until = time.perf_counter() + 0.3
    while time.perf_counter() < drain_until and received < sent:
        try:
            sock.recv(65536)
            received += 1
        except BlockingIOError:
            time.sleep(0.001)
    sock.close()
    return sent, received if backlog_ok else min(received, sent - 1), kept_up


def lossless_rate(port: int, size: int, seconds: float, deadline: float) -> tuple[float, bool]:
    """(highest lossless rate found, True if the generator was the limit)."""
    data = payload(size)
    trial(port, data, 1000, 0.2)  # warm up
    good, bad = 0.0, None
    rate = 2000.0
    while bad is None and time.monotonic() < deadline:
        sent, received, kept_up = trial(port, data, rate, seconds)
        if received < sent:
            bad = rate
        elif not kept_up:
            return max(good, sent / seconds), True
        else:
            good = rate
            rate *= 2
    for _ in range(4):
        if bad is None or time.monotonic() >= deadline:
            break
        rate = (good + bad) / 2
        sent, received, _kept = trial(port, data, rate, seconds)
        if received < sent:
            bad = rate
        else:
            good = rate
    return good, False


def delays(kind: str, port: int, conn, packets: int) -> list[float]:
    """t3 - t2 in µs for ``packets`` test packets of 64 octets at ~2000/s."""
    if kind == "echo":
        conn.send("reset")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    sock.settimeout(0.5)
    out: list[float] = []
    data = payload(64)
    for _ in range(packets):
        sock.sendto(data, ("::1", port))
        try:
            reply = sock.recv(65536)
        except socket.timeout:
            continue
        if kind == "reflector":
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


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial", type=float, default=0.6, help="seconds per rate trial (default 0.6)")
    parser.add_argument("--delay-packets", type=int, default=2000, help="packets for the delay figures (default 2000)")
    args = parser.parse_args()
    _pin(0)
    started = time.monotonic()
    ctx = mp.get_context("fork")
    results: dict[str, dict] = {}
    for kind, target in (("echo", echo_server), ("reflector", reflector_server)):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child,), daemon=True)
        proc.start()
        try:
            port = parent.recv()
            res: dict = {}
            per_kind_deadline = started + (BUDGET_S * 0.45 if kind == "echo" else BUDGET_S * 0.9)
            for size in SIZES:
                share = (per_kind_deadline - time.monotonic()) / (len(SIZES) - SIZES.index(size))
                res[size] = lossless_rate(port, size, args.trial, time.monotonic() + max(share - 2.0, 1.0))
            res["delay"] = delays(kind, port, parent, args.delay_packets)
            results[kind] = res
        finally:
            parent.send("stop")
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
    elapsed = time.monotonic() - started

    print(f"STAMP reflector benchmark on loopback (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{elapsed:.0f} s)\n")
    print(f"{'':<22}{'echo (baseline)':>18}{'reflector':>14}{'reflector/echo':>16}")
    for size in SIZES:
        (e, e_lim), (r, r_lim) = results["echo"][size], results["reflector"][size]
        mark = lambda limited: ">=" if limited else "  "  # noqa: E731
        print(f"{f'lossless pps, {size} B':<22}{mark(e_lim)}{e:>16,.0f}{mark(r_lim)}{r:>12,.0f}"
              f"{r / e if e else float('nan'):>16.2f}")
    ed, rd = results["echo"]["delay"], results["reflector"]["delay"]
    for label, fn in (("t3-t2 min µs", min), ("t3-t2 p50 µs", lambda v: percentile(v, 50)),
                      ("t3-t2 p99 µs", lambda v: percentile(v, 99)), ("t3-t2 max µs", max)):
        e, r = fn(ed), fn(rd)
        print(f"{label:<22}{e:>18.1f}{r:>14.1f}{r / e if e else float('nan'):>16.2f}")
    print(f"\n(delay samples: echo {len(ed)}, reflector {len(rd)}; test packets are UDP payloads; "
          f"'>=' marks a rate where the load generator, not the server, was the limit)")
    if ed and rd:
        print(f"reflector processing added over the bare loop (p50): {percentile(rd, 50) - percentile(ed, 50):.1f} µs; "
              f"mean {statistics.fmean(rd):.1f} vs {statistics.fmean(ed):.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
