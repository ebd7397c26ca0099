"""Test traffic: UDP packets at steady rates, every flow of one source host from one process.

Run inside a source host's namespace by the lab, one process per host::

    python -m srv6pm.lab.traffic --flows FLOWS.json --report SENT.json
    python -m srv6pm.lab.traffic --dst fd01:4::101 --rate 500 [--src fd01:1::2] [--size 100] [--dscp 46]

``FLOWS.json`` is a list of flows, ``{"name", "src", "dst", "rate", "dscp"}``
(``size``, ``port`` optional); the second form sends one flow. Each flow's
packets are paced on an absolute schedule of its own (packet ``n`` leaves at
``start + n / rate``), all flows interleaved in one loop in due order, so the
long-run rate of each is exact even when single sends are late; a flow more
than one second behind skips ahead rather than bursting and counts the
packets it skipped. Each payload carries the flow name and the packet's
sequence number. A flow's packets leave with its DSCP (0..63): traffic class
``dscp << 2`` (ECN bits 0), from one socket per source address and DSCP.

What was really sent is counted per flow: ``sent``, ``errors`` (a send
refused) and ``skipped``, beside ``due`` (the packets its schedule had
reached). With ``--report FILE`` these are written to FILE every second
(replaced atomically; ``{"seconds": S, "flows": {NAME: {"rate", "sent",
"errors", "skipped", "due"}}}``), which the lab compares with the configured
rates (:mod:`srv6pm.lab.rates`). On exit (SIGTERM/SIGINT or ``--duration``)
the same object is printed as one JSON line.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_DSCP", "FlowSpec", "main", "open_socket", "send", "send_all"]

HEADER = struct.Struct("!8sQ")  # magic, sequence number
MAGIC = b"srv6pm\x00\x01"
MAX_DSCP = 63
MAX_SIZE = 1400
BEHIND_LIMIT_S = 1.0
CHECK_EVERY_S = 0.05  # how often the loop looks at the stop flag and the clock for the report


@dataclass(frozen=True)
class FlowSpec:
    """One flow's test traffic: ``rate`` packets/s of ``size`` payload octets from ``src`` to ``dst``."""

    name: str
    dst: str
    rate: float
    src: str | None = None
    dscp: int = 0
    size: int = 100
    port: int = 9

    def check(self) -> None:
        """Raise ValueError naming the field that is out of range."""
        if not self.rate > 0 or self.rate == float("inf"):
            raise ValueError(f"{self.name or 'flow'}: rate must be a positive number")
        if not 0 <= self.dscp <= MAX_DSCP:
            raise ValueError(f"dscp {self.dscp} not in 0..{MAX_DSCP}")
        if not 0 < self.size <= MAX_SIZE:
            raise ValueError(f"{self.name or 'flow'}: size must be 1..{MAX_SIZE}")


def open_socket(src: str | None = None, dscp: int = 0) -> socket.socket:
    """A UDP/IPv6 socket whose packets carry traffic class ``dscp << 2``, bound to ``src`` if given."""
    if not 0 <= dscp <= MAX_DSCP:
        raise ValueError(f"dscp {dscp} not in 0..{MAX_DSCP}")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        if src:
            sock.bind((src, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class _Counts:
    __slots__ = ("sent", "errors", "skipped", "next")

    def __init__(self) -> None:
        self.sent = self.errors = self.skipped = self.next = 0


def send_all(flows: list[FlowSpec], duration: float | None = None, stop=lambda: False,
             report=None, report_every_s: float = 1.0) -> dict:
    """Send every flow until ``stop()`` is true or ``duration`` elapsed; the counts (module docstring).

    ``report(counts)`` is called with the counts so far every
    ``report_every_s`` seconds (and not at the end: the return value is that).
    """
    for flow in flows:
        flow.check()
    sockets = {key: open_socket(*key) for key in {(f.src, f.dscp) for f in flows}}
    try:
        return _loop(flows, sockets, duration, stop, report, report_every_s)
    finally:
        for sock in sockets.values():
            sock.close()


def _loop(flows, sockets, duration, stop, report, report_every_s) -> dict:
    counts = [_Counts() for _ in flows]
    intervals = [1.0 / f.rate for f in flows]
    tails = [f.name.encode().ljust(max(f.size - HEADER.size, 0), b"\x00") for f in flows]  # name, padding
    sends = [sockets[(f.src, f.dscp)].sendto for f in flows]
    targets = [(f.dst, f.port) for f in flows]
    pack, clock = HEADER.pack, time.monotonic
    start = clock()
    next_check = start + CHECK_EVERY_S
    next_report = start + report_every_s
    end = start + duration if duration is not None else float("inf")
    due = [(start, i) for i in range(len(flows))]  # (time the flow's next packet is due, flow)
    heapq.heapify(due)

    def snapshot(now: float) -> dict:
        seconds = now - start
        return {"seconds": round(seconds, 3), "flows": {
            f.name: {"rate": f.rate, "sent": c.sent, "errors": c.errors, "skipped": c.skipped,
                     "due": int(min(seconds, duration or seconds) * f.rate) + 1}
            for f, c in zip(flows, counts, strict=True)}}

    now = start
    while due:
        when, i = due[0]
        if when >= end:
            heapq.heappop(due)  # this flow is done
            continue
        if when > now:
            now = clock()
        if now >= next_check:  # the stop flag and the report: a few times a second, not per packet
            if stop():
                break
            if report is not None and now >= next_report:
                report(snapshot(now))
                next_report = now + report_every_s
            next_check = now + CHECK_EVERY_S
        if when > now:
            time.sleep(min(when - now, next_check - now))
            now = clock()
            continue
        c = counts[i]
        if now - when > BEHIND_LIMIT_S:
            behind = int((now - when) / intervals[i])
            c.next += behind
            c.skipped += behind
        else:
            try:
                sends[i](pack(MAGIC, c.next) + tails[i], targets[i])
                c.sent += 1
            except OSError:
                c.errors += 1
            c.next += 1
        heapq.heapreplace(due, (start + c.next * intervals[i], i))
    out = snapshot(clock())
    for f, c in zip(flows, counts, strict=True):  # at the end, due is what the schedule reached: every packet tried
        out["flows"][f.name]["due"] = c.next
    return out


def send(dst: str, rate: float, size: int = 100, port: int = 9, src: str | None = None,
         flow: str = "", duration: float | None = None, stop=lambda: False, dscp: int = 0) -> dict:
    """One flow (:func:`send_all`): ``{"flow", "dscp", "sent", "errors", "skipped", "seconds"}``."""
    out = send_all([FlowSpec(flow, dst, rate, src, dscp, size, port)], duration, stop)
    counts = out["flows"][flow]
    return {"flow": flow, "dscp": dscp, "sent": counts["sent"], "errors": counts["errors"],
            "skipped": counts["skipped"], "seconds": out["seconds"]}


def read_flows(path: str) -> list[FlowSpec]:
    """The flows of a ``--flows`` file; ValueError naming the file and the entry if one is not valid."""
    try:
        items = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: must be a non-empty list of flows")
    flows = []
    for n, item in enumerate(items):
        try:
            flow = FlowSpec(**item)
            flow.check()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: flow {n}: {exc}") from None
        flows.append(flow)
    return flows


def _write_report(path: Path, counts: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(counts))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="srv6pm-traffic", description=__doc__.split("\n\n")[0] + ". Prints the per-flow counts "
        "(sent, errors, skipped, due) as one JSON line on exit.")
    parser.add_argument("--flows", metavar="FILE", help="JSON list of flows to send (instead of --dst/--rate)")
    parser.add_argument("--report", metavar="FILE", help="write the per-flow counts to FILE every second")
    parser.add_argument("--dst", help="destination IPv6 address (one flow)")
    parser.add_argument("--rate", type=float, help="packets per second (> 0; one flow)")
    parser.add_argument("--src", help="source IPv6 address to bind")
    parser.add_argument("--size", type=int, default=100, help="UDP payload bytes (default 100)")
    parser.add_argument("--port", type=int, default=9, help="UDP destination port (default 9, discard)")
    parser.add_argument("--flow", default="", help="flow name, carried in every payload")
    parser.add_argument("--duration", type=float, help="seconds to send (default: until SIGTERM)")
    parser.add_argument("--dscp", type=int, default=0, help=f"DSCP of every packet, 0..{MAX_DSCP} (default 0)")
    args = parser.parse_args(argv)
    if args.flows:
        try:
            flows = read_flows(args.flows)
        except ValueError as exc:
            parser.error(str(exc))
    else:
        if args.dst is None or args.rate is None:
            parser.error("give --flows FILE, or --dst and --rate")
        if not args.rate > 0:
            parser.error("--rate must be positive")
        if not 0 < args.size <= MAX_SIZE:
            parser.error(f"--size must be 1..{MAX_SIZE}")
        if not 0 <= args.dscp <= MAX_DSCP:
            parser.error(f"--dscp must be 0..{MAX_DSCP}")
        flows = [FlowSpec(args.flow, args.dst, args.rate, args.src, args.dscp, args.size, args.port)]
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))
    report = (lambda counts: _write_report(Path(args.report), counts)) if args.report else None
    counts = send_all(flows, args.duration, stop=lambda: bool(stopping), report=report)
    if args.report:
        _write_report(Path(args.report), counts)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
