"""Test traffic: UDP packets at a steady rate from one address to another.

Run inside the ingress host's namespace by the lab::

    python -m srv6pm.lab.traffic --dst fd01:4::101 --rate 500 [--src fd01:1::2] [--size 100] [--dscp 46]

Packets are paced on an absolute schedule (packet ``n`` leaves at
``start + n / rate``), so the long-run rate is exact even when single sends
are late; a sender that falls more than one second behind skips ahead
rather than bursting, and says so. Each payload carries the flow name and
the packet's sequence number. Packets leave with the DSCP ``dscp`` (0..63): the
socket's ``IPV6_TCLASS`` is ``dscp << 2`` (ECN bits 0). Prints a JSON summary on
exit (SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time

__all__ = ["MAX_DSCP", "main", "open_socket", "send"]

HEADER = struct.Struct("!8sQ")  # magic, sequence number
MAGIC = b"srv6pm\x00\x01"
MAX_DSCP = 63


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


def send(dst: str, rate: float, size: int = 100, port: int = 9, src: str | None = None,
         flow: str = "", duration: float | None = None, stop=lambda: False, dscp: int = 0) -> dict:
    """Send until ``stop()`` is true or ``duration`` elapsed, with DSCP ``dscp``; return counts."""
    sock = open_socket(src, dscp)
    payload_len = max(size, HEADER.size + len(flow.encode()))
    interval = 1.0 / rate
    start = time.monotonic()
    sent = errors = skipped = 0
    n = 0
    while not stop():
        due = start + n * interval
        now = time.monotonic()
        if duration is not None and due - start >= duration:
            break
        if due > now:
            time.sleep(min(due - now, 0.2))
            continue
        if now - due > 1.0:
            behind = int((now - due) / interval)
            n += behind
            skipped += behind
            continue
        body = HEADER.pack(MAGIC, n) + flow.encode()
        try:
            sock.sendto(body.ljust(payload_len, b"\x00"), (dst, port))
            sent += 1
        except OSError:
            errors += 1
        n += 1
    sock.close()
    return {"flow": flow, "dscp": dscp, "sent": sent, "errors": errors, "skipped": skipped,
            "seconds": round(time.monotonic() - start, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="srv6pm-traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dst", required=True, help="destination IPv6 address")
    parser.add_argument("--rate", type=float, required=True, help="packets per second (> 0)")
    parser.add_argument("--src", help="source IPv6 address to bind")
    parser.add_argument("--size", type=int, default=100, help="UDP payload bytes (default 100)")
    parser.add_argument("--port", type=int, default=9, help="UDP destination port (default 9, discard)")
    parser.add_argument("--flow", default="", help="flow name, carried in every payload")
    parser.add_argument("--duration", type=float, help="seconds to send (default: until SIGTERM)")
    parser.add_argument("--dscp", type=int, default=0, help=f"DSCP of every packet, 0..{MAX_DSCP} (default 0)")
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error("--rate must be positive")
    if not 0 < args.size <= 1400:
        parser.error("--size must be 1..1400")
    if not 0 <= args.dscp <= MAX_DSCP:
        parser.error(f"--dscp must be 0..{MAX_DSCP}")
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))
    summary = send(args.dst, args.rate, args.size, args.port, args.src, args.flow, args.duration,
                   stop=lambda: bool(stopping), dscp=args.dscp)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
