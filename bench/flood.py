"""What the forwarding benchmarks share: senders, the sink's count, and where the kernel's work runs.

* :func:`flood`: UDP datagrams as fast as one Python loop sends them (``sendto``);
* :class:`Batch`: one datagram or frame ``BATCH`` times per ``sendmmsg`` (and
  ``BATCH`` buffers per ``recvmmsg``), which outruns a router's forwarding;
* :func:`frame_socket`: a packet socket that sends whole Ethernet frames out of one
  interface without the qdisc layer (so not through its tc egress either);
* :func:`pin` and :func:`steer`: this process on one CPU, and the receive
  processing of one interface (RPS) on one CPU, so that a node under test
  forwards on a CPU of its own;
* :func:`arrived`: what the lab's destination host counted.

Run the benchmarks as ``python bench/NAME.py``: this module is then importable beside them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import time

from srv6pm import netns as nsutil
from srv6pm.nft import Nft
from srv6pm.lab import network

__all__ = ["BATCH", "Batch", "arrived", "flood", "frame_socket", "pin", "steer"]

BATCH = 64
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20


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


def pin(cpu: int) -> None:
    """Run this process on ``cpu`` (modulo the CPUs there are; nothing on a one-CPU machine)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def steer(ns: str, dev: str, cpu: int) -> None:
    """RPS: process what ``dev`` receives on ``cpu`` (sysfs of the namespace, as ``ip netns exec`` mounts it)."""
    count = os.cpu_count() or 1
    if count < 2:
        return
    subprocess.run(["ip", "netns", "exec", ns, "tee", f"/sys/class/net/{dev}/queues/rx-0/rps_cpus"],
                   input=f"{1 << (cpu % count):x}\n", text=True, check=True, capture_output=True)


def frame_socket(netns: str, dev: str) -> socket.socket:
    """A packet socket in ``netns`` bound to ``dev`` that sends whole Ethernet frames (and receives nothing),
    straight to the driver (``PACKET_QDISC_BYPASS``: no qdisc, no tc egress program of ``dev``)."""
    with nsutil.NetnsThread(netns) as t:
        sock = t.call(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0)
        t.call(sock.bind, (dev, 0))
    sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
    return sock


# -- sendmmsg / recvmmsg through ctypes -----------------------------------------------------

class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t), ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_MSG_DONTWAIT = 0x40


class Batch:
    """BATCH copies of one datagram (or frame) for ``sendmmsg``, and BATCH receive buffers for ``recvmmsg``,
    on a connected UDP socket (or a bound packet socket: :func:`frame_socket`)."""

    def __init__(self, sock: socket.socket, data: bytes):
        self.fd = sock.fileno()
        self._data = ctypes.create_string_buffer(data, len(data))
        self._out_iov = (_Iovec * BATCH)(*[_Iovec(ctypes.addressof(self._data), len(data))] * BATCH)
        self._out = (_Mmsghdr * BATCH)()
        self._bufs = [ctypes.create_string_buffer(65536) for _ in range(BATCH)]
        self._in_iov = (_Iovec * BATCH)(*[_Iovec(ctypes.addressof(b), 65536) for b in self._bufs])
        self._in = (_Mmsghdr * BATCH)()
        for i in range(BATCH):
            self._out[i].msg_hdr.msg_iov = ctypes.pointer(self._out_iov[i])
            self._out[i].msg_hdr.msg_iovlen = 1
            self._in[i].msg_hdr.msg_iov = ctypes.pointer(self._in_iov[i])
            self._in[i].msg_hdr.msg_iovlen = 1

    def send(self, n: int) -> int:
        done = _libc.sendmmsg(self.fd, self._out, min(n, BATCH), _MSG_DONTWAIT)
        return max(done, 0)

    def receive(self) -> int:
        done = _libc.recvmmsg(self.fd, self._in, BATCH, _MSG_DONTWAIT, None)
        return max(done, 0)

    def flood(self, seconds: float) -> tuple[int, int]:
        """Send bursts of BATCH for ``seconds``; (how many the kernel took, how many were tried). A burst
        stops at the first datagram refused (e.g. ``ENOBUFS``: a full backlog on the receiving CPU), so
        each short burst is one more tried than taken."""
        sent = tried = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            done = self.send(BATCH)
            sent += done
            tried += done if done == BATCH else done + 1
        return sent, tried
