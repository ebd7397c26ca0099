"""What the forwarding benchmarks share: a sender as fast as one Python loop, and the sink's count.

Run the benchmarks as ``python bench/NAME.py``: this module is then importable beside them.
"""

from __future__ import annotations

import socket
import time

from srv6pm import netns as nsutil
from srv6pm.nft import Nft
from srv6pm.lab import network

__all__ = ["arrived", "flood"]


def flood(netns: str, dst: str, seconds: float, *, payload: int = 64, dscp: int = 0, src: str | None = None) -> int:
    """UDP datagrams of ``payload`` octets to ``dst`` port 9 from inside ``netns`` for ``seconds`` (traffic
    class ``dscp << 2``, from ``src`` if given); returns how many the kernel took."""
    with nsutil.NetnsThread(netns) as t:
        sock = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)
    data = b"\0" * payload
    sent = 0
    with sock:  # the socket stays in netns after the thread is gone
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        if src is not None:
            sock.bind((src, 0))
        sock.setblocking(False)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(256):
                try:
                    sock.sendto(data, (dst, 9))
                    sent += 1
                except OSError:  # a full socket buffer: the path is saturated
                    pass
    return sent


def arrived(nft: Nft) -> int:
    """Packets the destination host's drop rule counted (the lab's host table, in the host's namespace)."""
    for obj in nft.run([{"list": {"table": {"family": "ip6", "name": network.HOST_TABLE}}}]):
        if "rule" in obj:
            return next(e["counter"]["packets"] for e in obj["rule"]["expr"] if "counter" in e)
    return 0
