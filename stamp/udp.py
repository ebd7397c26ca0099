"""UDP sockets for STAMP: kernel timestamps, TTL/Hop Limit, packet info, network namespaces.

:func:`open_socket` creates a UDP socket (IPv4 or IPv6, by the bind address)
inside a named network namespace if asked (:class:`srv6pm.netns.NetnsThread`:
the socket belongs to that namespace for life, whichever thread uses it) and
turns on what STAMP needs:

* receive timestamps: ``SO_TIMESTAMPING`` with ``SOF_TIMESTAMPING_RX_SOFTWARE
  | SOFTWARE`` (the kernel stamps the packet when the network stack receives
  it, before it is queued to the socket), else ``SO_TIMESTAMPNS``; kind
  ``"kernel"``. When neither gives a timestamp the caller's clock reading
  after ``recvmsg`` is used, kind ``"user"``.
* transmit timestamps (``tx_timestamps=True``): ``SOF_TIMESTAMPING_TX_SOFTWARE
  | OPT_ID | OPT_TSONLY``: the kernel stamps each datagram when the device
  driver takes it (``skb_tx_timestamp``; veth and loopback do) and queues the
  stamp on the socket's error queue with a per-socket counter (0, 1, 2, ...
  per ``sendmsg``); :func:`read_tx_timestamps` drains them. Kind
  ``"software-tx"``.
* the received TTL / Hop Limit (``IP_RECVTTL`` / ``IPV6_RECVHOPLIMIT``),
  Traffic Class / TOS octet (``IP_RECVTOS`` / ``IPV6_RECVTCLASS``: DSCP and
  ECN) and destination address (``IP_PKTINFO`` / ``IPV6_RECVPKTINFO``).

All timestamps are CLOCK_REALTIME, integer ns since the Unix epoch.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass

from srv6pm.netns import NetnsThread

__all__ = [
    "KIND_KERNEL", "KIND_SOFTWARE_TX", "KIND_USER", "Received",
    "family_of", "open_socket", "read_tx_timestamps", "receive", "tclass_ancillary",
]

# asm-generic/socket.h, linux/net_tstamp.h, linux/errqueue.h, linux/in.h, linux/in6.h
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SO_EE_ORIGIN_TIMESTAMPING = 4
SCM_TSTAMP_SND = 0
IP_TOS = 1
IP_TTL = 2
IP_PKTINFO = 8
IP_RECVERR = 11
IP_RECVTTL = 12
IP_RECVTOS = 13
IPV6_RECVERR = 25
IPV6_RECVTCLASS = 66
IPV6_TCLASS = 67

KIND_KERNEL = "kernel"
KIND_SOFTWARE_TX = "software-tx"
KIND_USER = "user"

ANCILLARY_SIZE = 512
_TIMESPEC = struct.Struct("=qq")
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_INT = struct.Struct("=i")


def family_of(address: str) -> int:
    """AF_INET or AF_INET6 for an address literal; ``ValueError`` if it is not one."""
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


@dataclass(frozen=True)
class Received:
    """One datagram and what the kernel said about it.

    ``destination`` is the local address it was sent to (None if unknown),
    ``ttl`` the TTL / Hop Limit it arrived with (None if unknown),
    ``tclass`` its Traffic Class / TOS octet (DSCP << 2 | ECN; None if unknown).
    """

    data: bytes
    source: tuple[str, int]
    destination: str | None
    ttl: int | None
    rx_ns: int
    rx_kind: str
    truncated: bool
    tclass: int | None = None


def _setup(sock: socket.socket, family: int, tx_timestamps: bool) -> None:
    flags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
    if tx_timestamps:
        flags |= SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            pass  # no kernel timestamps: receive() falls back to the user-space clock
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)


def open_socket(bind: str, port: int, *, netns: str | None = None, tx_timestamps: bool = False,
                v6only: bool = False, rcvbuf: int | None = None) -> socket.socket:
    """A bound, non-blocking UDP socket (in namespace ``netns`` if given) set up as described above.

    ``rcvbuf`` asks for a receive buffer of that many bytes (SO_RCVBUFFORCE
    when permitted, else SO_RCVBUF, which the kernel caps at rmem_max).

    ``bind`` is an address literal (``"::"``/``"0.0.0.0"`` for any). Raises
    ``OSError`` (e.g. EADDRNOTAVAIL, EADDRINUSE) and
    :class:`srv6pm.netns.NetnsError`.
    """
    family = family_of(bind)

    def create() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
            _setup(sock, family, tx_timestamps)
            if rcvbuf:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((bind, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    if netns is None:
        return create()
    with NetnsThread(netns, thread_name=f"stamp-socket-{netns}") as thread:
        return thread.call(create)


def _timespec_ns(data: bytes) -> int | None:
    if len(data) < _TIMESPEC.size:
        return None
    seconds, nanos = _TIMESPEC.unpack_from(data)
    return seconds * 1_000_000_000 + nanos if seconds or nanos else None


def receive(sock: socket.socket, bufsize: int) -> Received:
    """``recvmsg`` one datagram and decode its ancillary data. ``BlockingIOError`` if none is queued."""
    data, ancillary, flags, source = sock.recvmsg(bufsize, ANCILLARY_SIZE)
    user_ns = time.time_ns()
    rx_ns = None
    ttl = destination = tclass = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind in (SO_TIMESTAMPING, SO_TIMESTAMPNS):
            rx_ns = _timespec_ns(payload)  # SCM_TIMESTAMPING: ts[0] is the software stamp
        elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(payload) >= 4:
            ttl = _INT.unpack_from(payload)[0]
        elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(payload) >= 16:
            destination = str(ipaddress.IPv6Address(payload[:16]))
        elif level == socket.IPPROTO_IP and kind == IP_TTL and payload:
            ttl = payload[0] if len(payload) < 4 else _INT.unpack_from(payload)[0]
        elif level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            destination = str(ipaddress.IPv4Address(payload[8:12]))  # struct in_pktinfo: ifindex, spec_dst, addr
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_TCLASS and len(payload) >= 4:
            tclass = _INT.unpack_from(payload)[0] & 0xFF
        elif level == socket.IPPROTO_IP and kind == IP_TOS and payload:
            tclass = payload[0]
    if rx_ns is None:
        rx_ns, rx_kind = user_ns, KIND_USER
    else:
        rx_kind = KIND_KERNEL
    return Received(data, (source[0], source[1]), destination, ttl, rx_ns, rx_kind, bool(flags & socket.MSG_TRUNC),
                    tclass)


def tclass_ancillary(destination: str, tclass: int) -> list:
    """The ``sendmsg`` ancillary item that sends one datagram to ``destination`` with Traffic Class / TOS
    ``tclass``: IPV6_TCLASS to an IPv6 address, IP_TOS to an IPv4 one (also as ``::ffff:a.b.c.d``)."""
    address = ipaddress.ip_address(destination)
    if address.version == 6 and address.ipv4_mapped is None:
        return [(socket.IPPROTO_IPV6, IPV6_TCLASS, _INT.pack(tclass))]
    return [(socket.IPPROTO_IP, IP_TOS, _INT.pack(tclass))]


def read_tx_timestamps(sock: socket.socket) -> list[tuple[int, int]]:
    """Drain the error queue: ``[(counter, tx_ns), ...]`` of software transmit timestamps."""
    out: list[tuple[int, int]] = []
    while True:
        try:
            _data, ancillary, _flags, _addr = sock.recvmsg(1, ANCILLARY_SIZE, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return out
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return out
            raise
        stamp = counter = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
                stamp = _timespec_ns(payload)
            elif len(payload) >= _EXTENDED_ERR.size and (
                    (level == socket.IPPROTO_IPV6 and kind == IPV6_RECVERR)
                    or (level == socket.IPPROTO_IP and kind == IP_RECVERR)):
                ee_errno, origin, ee_type, _code, _pad, _info, data = _EXTENDED_ERR.unpack_from(payload)
                if origin == SO_EE_ORIGIN_TIMESTAMPING and ee_errno == errno.ENOMSG:
                    counter = data
        if stamp is not None and counter is not None:
            out.append((counter, stamp))
