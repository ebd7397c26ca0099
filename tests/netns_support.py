"""What the tests that build network namespaces need from the machine (imported by those tests)."""

import os
import socket
import time

from srv6pm import netns as nsutil
from srv6pm.nft import Nft, NftUnavailable

IPV6_TCLASS = 67


def skip_reason(what: str = "network namespaces, SRv6 routes and nftables tables") -> str | None:
    """Why namespace tests cannot run here (not root, no libnftables), or None."""
    if os.geteuid() != 0:
        return f"needs root: creates {what}"
    try:
        Nft(None).close()
    except NftUnavailable as exc:
        return str(exc)
    return None



def send(netns: str, dst: str, count: int, *, payload: int = 100, dscp: int = 0, port: int = 9999) -> None:
    """``count`` UDP datagrams of ``payload`` octets to ``dst``, traffic class ``dscp << 2``, from inside ``netns``."""
    with nsutil.NetnsThread(netns) as t:
        sock = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)
    with sock:  # the socket stays in netns after the thread is gone
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, dscp << 2)
        for _ in range(count):
            sock.sendto(b"x" * payload, (dst, port))


def wait_for(read, expected, timeout: float = 3.0):
    """Poll ``read()`` until it returns ``expected`` (or time out), then make sure it stays there."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    if value == expected:
        time.sleep(0.1)
        value = read()
    return value


def square_plan(prefix: str):
    """The example scenario's square a - b - c - d - a with test-unique node names (``prefix`` + random + a..d):
    f1 from a to d via b, c; f2 from a to c via d. Returns the lab's addressing plan (nothing is built)."""
    import secrets

    from srv6pm.lab import scenario, topology
    tag = secrets.token_hex(2)
    a, b, c, d = (f"{prefix}{tag}{x}" for x in "abcd")
    text = f"""
period: 1
nodes: [{a}, {b}, {c}, {d}]
links: [[{a}, {b}], [{b}, {c}], [{c}, {d}], [{a}, {d}]]
flows:
  - {{name: f1, from: {a}, to: {d}, via: [{b}, {c}], rate: 10}}
  - {{name: f2, from: {a}, to: {c}, via: [{d}], rate: 10}}
"""
    return topology.plan(scenario.parse(text, source="test"))
