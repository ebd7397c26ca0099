"""Netlink framing, declared as data: the shared core's one netlink codec.

Every structure of the protocol is a :class:`CStruct` subclass that lists its
fields as ``(name, struct format)`` pairs, the way pyroute2 declares its
``nlmsg`` classes (``fields = (("len", "I"), ("type", "H"), ...)``), and
every attribute table is an :class:`AttrPolicy` mapping attribute types to
names and codecs, as pyroute2's ``nla_map`` does. Nothing is sliced by hand:
a field's offset is :meth:`CStruct.offset`, a message is packed from and
decoded into named fields.

Here: the netlink headers (``nlmsghdr``, ``nlattr``, ``nlmsgerr`` with its
extended-ack attributes; ``linux/netlink.h``), nfnetlink (``nfgenmsg``, one
message :func:`nfnl_message`, one batch :func:`nfnl_batch`;
``linux/netfilter/nfnetlink.h``), rtnetlink's route message header
(``rtmsg``, ``linux/rtnetlink.h``), and :class:`NetlinkSocket`, a socket
created inside a network namespace that sends requests and collects their
acknowledgements. The NFQUEUE client and the nf_tables rule of the lab's delay
element (:mod:`srv6pm.lab.emulators.nfqueue`) and the exporter's route dump
(:mod:`srv6pm.exporter.routes`) are written with it.

pyroute2 itself (0.9.7, checked) offers for nfnetlink only the subsystem
numbers and ``nfgen_msg`` (no nfnetlink_queue messages), and its generic
decoder takes about 24 us for a packet message, against 3 us here.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from struct import Struct
from typing import Any, ClassVar

from srv6pm.errors import OperationError
from srv6pm.netns import NetnsThread

__all__ = [
    "BE32", "BE32S", "BE64", "BYTES", "NLMSGERR_ATTRS", "STRING", "U32",
    "AttrPolicy", "Bytes", "CStruct", "Fixed", "Nested", "NetlinkError", "NetlinkSocket", "NfGenMsg", "NlAttr",
    "NlMsgErr", "NlMsgHdr", "RtMsg", "Scalar", "String", "align", "nfnl_batch", "nfnl_message", "nla",
]

# ---------------------------------------------------------------- constants
# linux/netlink.h
NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = 33
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended-ack attributes follow
NLM_F_CAPPED = 0x100    # in an NLMSG_ERROR: the request's payload is not echoed
NLM_F_DUMP = 0x300      # NLM_F_ROOT | NLM_F_MATCH
NLM_F_APPEND = 0x800
NLM_F_CREATE = 0x400
NLM_F_REPLACE = 0x100   # in a new request: replace what is there
NLM_F_EXCL = 0x200      # in a new request: refuse (EEXIST) if it is there
NLM_F_NONREC = 0x100    # in a delete request: refuse (EBUSY) instead of deleting the contents
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

# linux/netfilter/nfnetlink.h
NFNETLINK_V0 = 0
NFNL_SUBSYS_QUEUE = 3
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10  # NLMSG_MIN_TYPE
NFNL_MSG_BATCH_END = 0x11

# linux/rtnetlink.h
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTA_DST, RTA_OIF, RTA_TABLE, RTA_ENCAP_TYPE, RTA_ENCAP = 1, 4, 15, 21, 22
RT_TABLE_MAIN = 254  # the kernel's routing table main (rtnetlink.h)


# ------------------------------------------------------- data structures
class CStruct:
    """A C structure mirrored field by field: subclasses set ``fields`` and ``byte_order``.

    ``fields`` is a tuple of ``(name, struct format)`` (as pyroute2's ``nlmsg``); names starting with
    ``_`` are padding (0 when packing, dropped from decoded values).
    ``byte_order`` is a :mod:`struct` prefix: ``"="`` for host order (netlink
    headers, x_tables info structures), ``"!"`` for the network-order
    structures of nfnetlink. ``decode`` returns a named tuple ``cls.Value``.
    """

    byte_order = "="
    fields: tuple[tuple[str, str], ...] = ()
    # Set by __init_subclass__ from ``fields``:
    struct: ClassVar[Struct]
    size: ClassVar[int]
    names: ClassVar[tuple[str, ...]]
    _public: ClassVar[list[int] | None]
    Value: ClassVar[type[Any]]  # the named tuple ``decode`` returns

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.struct = struct.Struct(cls.byte_order + "".join(fmt for _, fmt in cls.fields))
        cls.size = cls.struct.size
        cls.names = tuple(name for name, _ in cls.fields)
        public = [i for i, name in enumerate(cls.names) if not name.startswith("_")]
        cls._public = public if len(public) != len(cls.names) else None
        cls.Value = namedtuple(cls.__name__, [cls.names[i] for i in public])  # type: ignore[misc]  # fields known only at run time

    @classmethod
    def offset(cls, name: str) -> int:
        """The byte offset of field ``name`` in the packed structure."""
        index = cls.names.index(name)
        return struct.calcsize(cls.byte_order + "".join(fmt for _, fmt in cls.fields[:index]))

    @classmethod
    def pack(cls, **values: Any) -> bytes:
        unknown = set(values) - set(cls.names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
        return cls.struct.pack(*(values.get(name, 0) for name in cls.names))

    @classmethod
    def decode(cls, buf, offset: int = 0):
        raw: Sequence[Any] = cls.struct.unpack_from(buf, offset)
        if cls._public is not None:
            raw = [raw[i] for i in cls._public]
        return cls.Value._make(raw)


class NlMsgHdr(CStruct):
    """struct nlmsghdr"""
    fields = (("len", "I"), ("type", "H"), ("flags", "H"), ("seq", "I"), ("pid", "I"))


class NlAttr(CStruct):
    """struct nlattr"""
    fields = (("len", "H"), ("type", "H"))


class NlMsgErr(CStruct):
    """struct nlmsgerr (the echoed request header follows)"""
    fields = (("error", "i"),)


class NfGenMsg(CStruct):
    """struct nfgenmsg: ``res_id`` is big endian (queue number, or subsystem id in a batch)."""
    byte_order = "!"
    fields = (("family", "B"), ("version", "B"), ("res_id", "H"))


class RtMsg(CStruct):
    """struct rtmsg (rtnetlink route messages)"""
    fields = (("family", "B"), ("dst_len", "B"), ("src_len", "B"), ("tos", "B"), ("table", "B"),
              ("protocol", "B"), ("scope", "B"), ("type", "B"), ("flags", "I"))


# -- attribute codecs: encode(value) -> bytes, decode(buf, start, end) -> value (pyroute2's nla types)
class Scalar:
    """A number in a :mod:`struct` format (``"!I"``: big-endian u32, ``"=I"``: host order)."""

    def __init__(self, fmt: str):
        self.s = struct.Struct(fmt)

    def encode(self, value) -> bytes:
        return self.s.pack(value)

    def decode(self, buf, start: int, end: int):
        return self.s.unpack_from(buf, start)[0]


class Fixed:
    """A fixed-size structure (:class:`CStruct`) as the attribute's payload; encodes a dict or its decoded value."""

    def __init__(self, cls: type[CStruct]):
        self.cls = cls

    def encode(self, value) -> bytes:
        return self.cls.pack(**value) if isinstance(value, dict) else self.cls.pack(**value._asdict())

    def decode(self, buf, start: int, end: int):
        return self.cls.decode(buf, start)


class Bytes:
    """Opaque bytes."""

    def encode(self, value) -> bytes:
        return bytes(value)

    def decode(self, buf, start: int, end: int):
        return bytes(buf[start:end])


class String:
    """A NUL-terminated string (encoded with its NUL; decoded up to the first NUL)."""

    def encode(self, value: str) -> bytes:
        return value.encode() + b"\0"

    def decode(self, buf, start: int, end: int):
        return bytes(buf[start:end]).split(b"\0", 1)[0].decode(errors="replace")


class Nested:
    """A nested attribute whose content is encoded by ``policy`` (flagged NLA_F_NESTED)."""

    nested = True

    def __init__(self, policy: AttrPolicy):
        self.policy = policy

    def encode(self, value) -> bytes:
        return self.policy.encode(value)

    def decode(self, buf, start: int, end: int):
        return self.policy.decode(buf, start, end)


def nla(atype: int, data: bytes, nested: bool = False) -> bytes:
    """One attribute: ``struct nlattr`` + ``data`` + padding to 4 bytes."""
    head = NlAttr.pack(len=NlAttr.size + len(data), type=atype | (NLA_F_NESTED if nested else 0))
    return head + data + b"\0" * (align(len(data)) - len(data))


BE32, BE32S, BE64, U32 = Scalar("!I"), Scalar("!i"), Scalar("!Q"), Scalar("=I")
BYTES, STRING = Bytes(), String()


def align(n: int) -> int:
    """``n`` rounded up to netlink's 4-byte alignment (NLMSG_ALIGN, NLA_ALIGN)."""
    return (n + 3) & ~3


class AttrPolicy:
    """An attribute table: ``{type: (name, codec)}``; encodes and decodes TLV lists.

    :meth:`encode` takes ``[(name, value), ...]`` (or a dict) in order, and
    :meth:`decode` returns ``{name: value}`` for known types (unknown types
    are skipped: newer kernels may add attributes).
    """

    def __init__(self, name: str, attrs: dict[int, tuple[str, Any]]):
        self.name = name
        self.by_type = attrs
        self.by_name = {n: (t, codec) for t, (n, codec) in attrs.items()}

    def encode(self, items) -> bytes:
        if isinstance(items, dict):
            items = items.items()
        out = bytearray()
        for name, value in items:
            try:
                atype, codec = self.by_name[name]
            except KeyError:
                raise KeyError(f"{self.name}: unknown attribute {name!r}") from None
            out += nla(atype, codec.encode(value), getattr(codec, "nested", False))
        return bytes(out)

    def decode(self, buf, start: int, end: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        by_type = self.by_type
        unpack = NlAttr.struct.unpack_from
        while start + 4 <= end:
            alen, atype = unpack(buf, start)
            if alen < 4 or start + alen > end:
                raise ValueError(f"{self.name}: malformed attribute at offset {start} (len {alen})")
            spec = by_type.get(atype & NLA_TYPE_MASK)
            if spec is not None:
                out[spec[0]] = spec[1].decode(buf, start + 4, start + alen)
            start += align(alen)
        return out


NLMSGERR_ATTRS = AttrPolicy("nlmsgerr_attrs", {NLMSGERR_ATTR_MSG: ("msg", STRING), 2: ("offset", U32)})


# ----------------------------------------------------------------- messages
def nfnl_message(subsys: int, msg: int, flags: int, seq: int, family: int, res_id: int,
                 policy: AttrPolicy | None = None, attrs=()) -> bytes:
    """One nfnetlink message: nlmsghdr + nfgenmsg + attributes."""
    body = NfGenMsg.pack(family=family, version=NFNETLINK_V0, res_id=res_id)
    if policy is not None:
        body += policy.encode(attrs)
    return NlMsgHdr.pack(len=NlMsgHdr.size + len(body), type=(subsys << 8) | msg, flags=flags, seq=seq,
                         pid=0) + body


def nfnl_batch(nl: NetlinkSocket, msgs: list[tuple[int, bytes]], what: str, subsys: int = NFNL_SUBSYS_NFTABLES) -> None:
    """Send ``msgs`` as one nfnetlink batch of subsystem ``subsys`` (nf_tables: one transaction, all or nothing);
    raise the first error."""
    begin = nfnl_message(0, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, nl.next_seq(), socket.AF_UNSPEC,
                         subsys)
    end = nfnl_message(0, NFNL_MSG_BATCH_END, NLM_F_REQUEST, nl.next_seq(), socket.AF_UNSPEC, subsys)
    nl.request(msgs, what, raw_prefix=begin, raw_suffix=end)


class NetlinkError(OperationError, OSError):
    """The kernel answered a request with an error (``errno`` set; ``str()`` says which request)."""


class NetlinkSocket:
    """A netlink socket (default ``NETLINK_NETFILTER``) created inside network namespace ``netns`` (None: current).

    It keeps talking to that namespace whatever thread uses it afterwards.
    :meth:`request` sends messages that carry ``NLM_F_ACK`` and waits for
    every acknowledgement; other messages that arrive meanwhile are passed
    to ``on_other`` (so no packet notification is lost while configuring).
    """

    def __init__(self, netns: str | None = None, *, rcvbuf: int | None = None, protocol: int = NETLINK_NETFILTER):
        self.netns = netns
        if netns is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        else:
            with NetnsThread(netns, thread_name=f"nl-open-{netns}") as t:
                self.sock = t.call(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            if rcvbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except BaseException:
            self.sock.close()
            raise
        self.portid = self.sock.getsockname()[0]
        self._seq = int(time.time()) & 0xFFFF_0000
        self._buf = bytearray(1 << 17)

    def where(self) -> str:
        return f"network namespace {self.netns!r}" if self.netns else "the current network namespace"

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF_FFFF
        return self._seq

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def parse_error(buf, off: int, hdr) -> tuple[int, str]:
        """(errno, extack message) of the NLMSG_ERROR message at ``off`` (errno 0 = ACK)."""
        err = NlMsgErr.decode(buf, off + NlMsgHdr.size).error
        text = ""
        if hdr.flags & NLM_F_ACK_TLVS:
            inner = off + NlMsgHdr.size + NlMsgErr.size
            echoed = NlMsgHdr.decode(buf, inner)
            start = inner + (NlMsgHdr.size if hdr.flags & NLM_F_CAPPED else align(echoed.len))
            text = NLMSGERR_ATTRS.decode(buf, start, off + hdr.len).get("msg", "")
        return -err, text

    def request(self, messages: list[tuple[int, bytes]], what: str, *, timeout: float = 5.0,
                on_other: Callable[[memoryview, int, Any, int], None] | None = None,
                raw_prefix: bytes = b"", raw_suffix: bytes = b"") -> None:
        """Send ``messages`` (``(seq, bytes)``, each with NLM_F_ACK) in one write; raise on the first error.

        ``raw_prefix``/``raw_suffix`` wrap them unacknowledged (nfnetlink batch begin/end).
        """
        pending = {seq for seq, _ in messages}
        self.sock.send(raw_prefix + b"".join(m for _, m in messages) + raw_suffix)
        errors: list[tuple[int, int, str]] = []
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        try:
            while pending:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
                try:
                    n = self.sock.recv_into(self._buf)
                except TimeoutError:
                    raise NetlinkError(errno.ETIMEDOUT, f"{self.where()}: {what}: no answer from the kernel "
                                                         f"within {timeout:g} s") from None
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS and on_other is not None:
                        on_other(memoryview(self._buf), 0, None, -errno.ENOBUFS)
                        continue
                    raise
                now = time.monotonic_ns()
                buf = memoryview(self._buf)[:n]
                off = 0
                while off + NlMsgHdr.size <= n:
                    hdr = NlMsgHdr.decode(buf, off)
                    if hdr.len < NlMsgHdr.size or off + hdr.len > n:
                        break
                    if hdr.type == NLMSG_ERROR and hdr.seq in pending:
                        pending.discard(hdr.seq)
                        code, text = self.parse_error(buf, off, hdr)
                        if code:
                            errors.append((hdr.seq, code, text))
                    elif on_other is not None:
                        on_other(buf, off, hdr, now)
                    off += align(hdr.len)
        finally:
            self.sock.settimeout(None)
        if errors:
            _, code, text = min(errors)
            raise NetlinkError(code, f"{self.where()}: {what}: {os.strerror(code)}" + (f" ({text})" if text else ""))
