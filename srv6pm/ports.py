"""Picking free local TCP ports for the services a lab or a test starts.

The kernel chooses each port (bind to port 0). Ports picked in one call are distinct, because
every socket stays bound until all of them are chosen: picking them one call at a time may hand
out the same port twice. Nothing reserves a port after the call returns, so another process may
still take it before its user binds it.
"""

from __future__ import annotations

import socket

__all__ = ["free_port", "free_ports"]


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct TCP ports free on ``host`` now.

    Raises :class:`OSError` when ``host`` cannot be bound (not a local address).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port free on ``host`` now (see :func:`free_ports`)."""
    return free_ports(host, 1)[0]
