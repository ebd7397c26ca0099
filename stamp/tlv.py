"""STAMP TLVs: RFC 8972 framing and flags, and the TLVs srv6pm understands.

Every TLV (and every sub-TLV of a Return Path TLV) is framed as::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |STAMP TLV Flags|     Type      |           Length              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ~                            Value                              ~

Flags ``|U|M|I|R|R|R|R|R|`` (IANA "STAMP TLV Flags"): U (0x80) unrecognized,
M (0x40) malformed, I (0x20) integrity check failed; R reserved (zero on
transmit, ignored on receipt). RFC 8972 §4: a Session-Sender sets U = 1,
M = 0, I = 0 on every TLV it sends; the Session-Reflector sets U = 1 on a
TLV it has not understood (and copies it unchanged), M = 1 on a malformed
TLV (its Length is wrong for its type, or longer than what remains of the
packet), after which it stops processing TLVs and copies the remainder of
the packet; I = 1 on every TLV when the HMAC TLV does not verify. Otherwise
it clears the flag.

A Session-Reflector tells TLVs from the packet padding of a TWAMP-Light style
sender (RFC 8762 §4.6; any octets, zero or not) by the first four octets after
the base packet (:func:`parse_sent`): they start TLVs only if they read as the
header a Session-Sender sends (a non-zero Type, M = 0 and I = 0, a Length that
fits in the packet); anything else is padding, copied back unchanged, flags
and all. (So a first TLV cut short by the end of the packet is taken for
padding; later ones get M = 1 as above.)

Code points (IANA "STAMP TLV Types"): 1 Extra Padding, 2 Location,
3 Timestamp Information, 4 Class of Service, 5 Direct Measurement, 6 Access
Report, 7 Follow-Up Telemetry, 8 HMAC (RFC 8972); 9 Destination Node
Address, 10 Return Path (RFC 9503). Return Path sub-TLVs (RFC 9503 §4.1):
1 Control Code, 2 Return Address, 3 SR-MPLS Label Stack, 4 SRv6 Segment List.

The HMAC TLV (RFC 8972 §4.8) carries HMAC-SHA-256 truncated to 16 octets over
the Sequence Number field of the base packet followed by all TLVs that
precede the HMAC TLV; it follows every TLV except Extra Padding.

:func:`parse` never raises: it returns a :class:`TlvList` whose
``malformed`` flag and per-TLV M flags say what was wrong, so that a
reflector can echo exactly what it received. The typed classes
(:class:`DestinationNodeAddress`, :class:`ReturnPath`, ...) raise
:class:`~srv6pm.stamp.errors.MalformedPacket` from ``from_tlv`` when a value
does not fit its type.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Iterable, Sequence, TypeVar

from srv6pm.stamp.errors import MalformedPacket

__all__ = [
    "FLAG_I", "FLAG_M", "FLAG_U", "HEADER_LEN", "HMAC_LEN",
    "ClassOfService", "ControlCode", "DestinationNodeAddress", "DirectMeasurement", "ReturnAddress", "ReturnPath", "SrMplsLabelStack",
    "Srv6SegmentList", "SubTlvType", "Tlv", "TlvList", "TlvType",
    "extra_padding", "hmac16", "hmac_placeholder", "parse", "parse_sent", "sign", "starts_tlvs", "verify",
]

FLAG_U = 0x80
FLAG_M = 0x40
FLAG_I = 0x20
FLAGS_KNOWN = FLAG_U | FLAG_M | FLAG_I
HEADER_LEN = 4
HMAC_LEN = 16
MAX_VALUE_LEN = 0xFFFF

_HEADER = struct.Struct("!BBH")
_U32 = struct.Struct("!I")


class TlvType(IntEnum):
    """IANA "STAMP TLV Types" (RFC 8972 §5.1, RFC 9503 §6)."""

    EXTRA_PADDING = 1
    LOCATION = 2
    TIMESTAMP_INFORMATION = 3
    CLASS_OF_SERVICE = 4
    DIRECT_MEASUREMENT = 5
    ACCESS_REPORT = 6
    FOLLOW_UP_TELEMETRY = 7
    HMAC = 8
    DESTINATION_NODE_ADDRESS = 9
    RETURN_PATH = 10


class SubTlvType(IntEnum):
    """IANA "Return Path Sub-TLV Types" (RFC 9503 §4.1)."""

    CONTROL_CODE = 1
    RETURN_ADDRESS = 2
    SR_MPLS_LABEL_STACK = 3
    SRV6_SEGMENT_LIST = 4


def hmac16(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 of ``data`` truncated to its first 16 octets (RFC 8762 §4.4)."""
    return hmac.new(key, data, hashlib.sha256).digest()[:HMAC_LEN]


@dataclass(frozen=True)
class Tlv:
    """One TLV (or sub-TLV) as on the wire.

    ``length`` is the Length field when it differs from ``len(value)``: only
    for a TLV that was cut short by the end of the packet, which is echoed
    with the Length it arrived with. ``flags`` defaults to U = 1, what a
    Session-Sender sends.
    """

    type: int
    value: bytes = b""
    flags: int = FLAG_U
    length: int | None = None

    def __post_init__(self):
        if not 0 <= self.type <= 0xFF:
            raise ValueError(f"TLV type {self.type!r} is not one octet")
        if not 0 <= self.flags <= 0xFF:
            raise ValueError(f"TLV flags {self.flags!r} are not one octet")
        if len(self.value) > MAX_VALUE_LEN:
            raise ValueError(f"TLV value of {len(self.value)} octets exceeds {MAX_VALUE_LEN}")
        if self.length is not None and not 0 <= self.length <= MAX_VALUE_LEN:
            raise ValueError(f"TLV length {self.length!r} is not two octets")

    @property
    def wire_length(self) -> int:
        """The Length field as sent."""
        return len(self.value) if self.length is None else self.length

    @property
    def size(self) -> int:
        """Octets this TLV occupies in a packet (header + value)."""
        return HEADER_LEN + len(self.value)

    def pack(self) -> bytes:
        return _HEADER.pack(self.flags, self.type, self.wire_length) + self.value

    @property
    def unrecognized(self) -> bool:
        return bool(self.flags & FLAG_U)

    @property
    def malformed(self) -> bool:
        return bool(self.flags & FLAG_M)

    @property
    def integrity_failed(self) -> bool:
        return bool(self.flags & FLAG_I)

    def with_flags(self, *, u: bool | None = None, m: bool | None = None, i: bool | None = None) -> "Tlv":
        """A copy with the given flags set or cleared (others unchanged; reserved bits zeroed)."""
        flags = self.flags & FLAGS_KNOWN
        for bit, on in ((FLAG_U, u), (FLAG_M, m), (FLAG_I, i)):
            if on is not None:
                flags = flags | bit if on else flags & ~bit
        return replace(self, flags=flags)


@dataclass(frozen=True)
class TlvList:
    """The TLV area of a packet, exactly as received or to be sent.

    ``rest`` holds trailing octets that are not TLVs: padding (a TWAMP-Light
    style sender pads, RFC 8762 §4.6: all-zero octets, or with
    :func:`parse_sent` anything that does not start like a TLV; it is echoed
    unchanged) or 1-3 octets too short for a TLV header (then ``malformed``).
    ``malformed`` is True if the last TLV was cut short (it carries the M
    flag) or ``rest`` is such a fragment.
    """

    tlvs: tuple[Tlv, ...] = ()
    rest: bytes = b""
    malformed: bool = False

    def pack(self) -> bytes:
        return b"".join(t.pack() for t in self.tlvs) + self.rest

    @property
    def size(self) -> int:
        return sum(t.size for t in self.tlvs) + len(self.rest)

    def __iter__(self):
        return iter(self.tlvs)

    def __len__(self) -> int:
        return len(self.tlvs)

    def first(self, tlv_type: int) -> Tlv | None:
        """The first TLV of ``tlv_type``, or None."""
        return next((t for t in self.tlvs if t.type == tlv_type), None)


def parse(data: bytes) -> TlvList:
    """Split a TLV area into TLVs, leniently (never raises; see :class:`TlvList`)."""
    data = bytes(data)
    if not data or not any(data):
        return TlvList((), data, False)
    tlvs: list[Tlv] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < HEADER_LEN:
            return TlvList(tuple(tlvs), data[pos:], True)
        flags, tlv_type, length = _HEADER.unpack_from(data, pos)
        start = pos + HEADER_LEN
        if start + length > end:
            tlvs.append(Tlv(tlv_type, data[start:], flags | FLAG_M, length))
            return TlvList(tuple(tlvs), b"", True)
        tlvs.append(Tlv(tlv_type, data[start:start + length], flags))
        pos = start + length
    return TlvList(tuple(tlvs), b"", False)


def starts_tlvs(data: bytes) -> bool:
    """True if ``data`` starts with a TLV header as a Session-Sender sends one (RFC 8972 §4).

    That is: a non-zero Type, the M and I flags clear, and a Length that fits
    in ``data``. Anything else after the base packet is packet padding.
    """
    if len(data) < HEADER_LEN:
        return False
    flags, tlv_type, length = _HEADER.unpack_from(data)
    return tlv_type != 0 and not flags & (FLAG_M | FLAG_I) and HEADER_LEN + length <= len(data)


def parse_sent(data: bytes) -> TlvList:
    """The TLV area of a Session-Sender packet: TLVs (:func:`parse`), or padding kept whole in ``rest``.

    Padding is whatever does not start like a TLV (:func:`starts_tlvs`);
    never raises.
    """
    data = bytes(data)
    if not starts_tlvs(data):
        return TlvList((), data, False)
    return parse(data)


# -- HMAC TLV (RFC 8972 §4.8) ------------------------------------------------------

def _hmac_input(seq_field: bytes, tlvs: Sequence[Tlv], index: int) -> bytes:
    return seq_field + b"".join(t.pack() for t in tlvs[:index])


def sign(tlvs: Sequence[Tlv], seq_field: bytes, key: bytes) -> tuple[Tlv, ...]:
    """``tlvs`` with the value of the first HMAC TLV set to its HMAC.

    Unchanged if there is no HMAC TLV or the first one is not a whole
    16-octet TLV (a malformed one is echoed as received: sizes never change).
    """
    out = list(tlvs)
    for index, tlv in enumerate(out):
        if tlv.type == TlvType.HMAC:
            if tlv.length is None and len(tlv.value) == HMAC_LEN:
                out[index] = replace(tlv, value=hmac16(key, _hmac_input(seq_field, out, index)))
            break
    return tuple(out)


def verify(tlvs: Sequence[Tlv], seq_field: bytes, key: bytes | None) -> bool:
    """True if the TLVs are covered by a valid HMAC TLV under ``key`` (RFC 8972 §4.8).

    Valid means: exactly one HMAC TLV, of Length 16, followed by nothing but
    Extra Padding TLVs, whose value equals the HMAC over the Sequence Number
    field and the TLVs before it (constant-time comparison). A list holding
    no TLV, or only Extra Padding TLVs, needs no HMAC TLV and is valid. A
    missing key means nothing can be verified: False if an HMAC TLV is needed.
    """
    if all(t.type == TlvType.EXTRA_PADDING for t in tlvs):
        return True
    positions = [i for i, t in enumerate(tlvs) if t.type == TlvType.HMAC]
    if key is None or len(positions) != 1:
        return False
    index = positions[0]
    tag = tlvs[index]
    if len(tag.value) != HMAC_LEN or tag.length is not None:
        return False
    if any(t.type != TlvType.EXTRA_PADDING for t in tlvs[index + 1:]):
        return False
    return hmac.compare_digest(tag.value, hmac16(key, _hmac_input(seq_field, tlvs, index)))


def hmac_placeholder() -> Tlv:
    """An HMAC TLV to be filled in by :func:`sign`."""
    return Tlv(TlvType.HMAC, bytes(HMAC_LEN))


# -- Extra Padding (RFC 8972 §4.1) ------------------------------------------------

def extra_padding(total_size: int, *, random: bool = True) -> Tlv:
    """An Extra Padding TLV occupying exactly ``total_size`` octets (header included, >= 4).

    The value is pseudo-random by default (the RFC's SHOULD), zeros otherwise.
    """
    if total_size < HEADER_LEN:
        raise ValueError(f"an Extra Padding TLV takes at least {HEADER_LEN} octets, not {total_size}")
    length = total_size - HEADER_LEN
    return Tlv(TlvType.EXTRA_PADDING, os.urandom(length) if random else bytes(length))


def _fixed_value(tlv: Tlv, tlv_type: TlvType, length: int, what: str) -> bytes:
    """The value of a whole ``tlv_type`` TLV whose Length must be ``length``; :class:`MalformedPacket` if not."""
    if tlv.type != tlv_type or tlv.length is not None:
        raise MalformedPacket(f"not a complete {what} TLV")
    if len(tlv.value) != length:
        raise MalformedPacket(f"{what} TLV: length {len(tlv.value)} is not {length}")
    return tlv.value


# -- Class of Service (RFC 8972 §4.4) ----------------------------------------------

_COS = struct.Struct("!HH")


@dataclass(frozen=True)
class ClassOfService:
    """Class of Service TLV (type 4, Length 4)::

        DSCP1 (6 bits) | DSCP2 (6 bits) | ECN (2 bits) | RP (2 bits) | Reserved (16 bits)

    DSCP1: the DSCP the Session-Sender asks the reflector to send its reply
    with. DSCP2 and ECN: what the test packet's IP header carried when it
    reached the reflector (zero from the sender; RFC 8972 erratum 8199: the
    reflector copies both). RP: the reflector sets 1 when it did not use DSCP1
    for the reply (its policy refused it); zero from the sender.
    """

    dscp1: int
    dscp2: int = 0
    ecn: int = 0
    rp: int = 0

    def __post_init__(self):
        for name, top in (("dscp1", 63), ("dscp2", 63), ("ecn", 3), ("rp", 3)):
            if not 0 <= getattr(self, name) <= top:
                raise ValueError(f"Class of Service {name} {getattr(self, name)!r} out of range 0..{top}")

    def to_tlv(self, flags: int = FLAG_U) -> Tlv:
        word = self.dscp1 << 10 | self.dscp2 << 4 | self.ecn << 2 | self.rp
        return Tlv(TlvType.CLASS_OF_SERVICE, _COS.pack(word, 0), flags)

    @classmethod
    def from_tlv(cls, tlv: Tlv) -> "ClassOfService":
        word, _reserved = _COS.unpack(_fixed_value(tlv, TlvType.CLASS_OF_SERVICE, _COS.size, "Class of Service"))
        return cls(word >> 10, word >> 4 & 0x3F, word >> 2 & 0x3, word & 0x3)


# -- Direct Measurement (RFC 8972 §4.5) ---------------------------------------------

_DM = struct.Struct("!III")


@dataclass(frozen=True)
class DirectMeasurement:
    """Direct Measurement TLV (type 5, Length 12): three 32-bit counters of the test session.

    ``sender_tx`` (S_TxC): test packets the Session-Sender transmitted in the
    session, this one included. ``reflector_rx`` (R_RxC) and ``reflector_tx``
    (R_TxC): test packets the Session-Reflector received in the session and
    replies it transmitted, this one and its reply included; zero from the
    sender, filled by the reflector. Counters wrap modulo 2**32.
    """

    sender_tx: int
    reflector_rx: int = 0
    reflector_tx: int = 0

    def __post_init__(self):
        for name in ("sender_tx", "reflector_rx", "reflector_tx"):
            if not 0 <= getattr(self, name) <= 0xFFFFFFFF:
                raise ValueError(f"Direct Measurement {name} {getattr(self, name)!r} is not 32 bits")

    def to_tlv(self, flags: int = FLAG_U) -> Tlv:
        return Tlv(TlvType.DIRECT_MEASUREMENT, _DM.pack(self.sender_tx, self.reflector_rx, self.reflector_tx), flags)

    @classmethod
    def from_tlv(cls, tlv: Tlv) -> "DirectMeasurement":
        return cls(*_DM.unpack(_fixed_value(tlv, TlvType.DIRECT_MEASUREMENT, _DM.size, "Direct Measurement")))


# -- Destination Node Address (RFC 9503 §3) ---------------------------------------

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(value: bytes, what: str) -> Address:
    if len(value) == 4:
        return ipaddress.IPv4Address(value)
    if len(value) == 16:
        return ipaddress.IPv6Address(value)
    raise MalformedPacket(f"{what}: length {len(value)} is neither 4 (IPv4) nor 16 (IPv6)")


@dataclass(frozen=True)
class DestinationNodeAddress:
    """Destination Node Address TLV (type 9): the address the Session-Sender meant to reach."""

    address: Address

    def to_tlv(self, flags: int = FLAG_U) -> Tlv:
        return Tlv(TlvType.DESTINATION_NODE_ADDRESS, self.address.packed, flags)

    @classmethod
    def from_tlv(cls, tlv: Tlv) -> "DestinationNodeAddress":
        if tlv.type != TlvType.DESTINATION_NODE_ADDRESS or tlv.length is not None:
            raise MalformedPacket("not a complete Destination Node Address TLV")
        return cls(_address(tlv.value, "Destination Node Address TLV"))


# -- Return Path (RFC 9503 §4) --------------------------------------------------------

CONTROL_NO_REPLY = 0x0      # Control Code Flags: reply not requested
CONTROL_REPLY_SAME_LINK = 0x1  # Reply Request flag (lowest bit): reply on the same link


@dataclass(frozen=True)
class ControlCode:
    """Control Code sub-TLV (type 1, Length 4): ``flags`` bit 0x1 requests a reply on the incoming link."""

    flags: int

    def to_tlv(self, flags: int = FLAG_U) -> Tlv:
        return Tlv(SubTlvType.CONTROL_CODE, _U32.pack(self.flags), flags)

    @classmethod
    def from_tlv(cls, tlv: Tlv) -> "ControlCode":
        if len(tlv.value) != 4:
            raise MalformedPacket(f"Control Code sub-TLV: length {len(tlv.value)} is not 4")
        return cls(_U32.unpack(tlv.value)[0])

    @property
    def reply_requested(self) -> bool:
        return bool(self.flags & CONTROL_REPLY_SAME_LINK)


@dataclass(frozen=True)
class ReturnAddress:
    """Return Address sub-TLV (type 2): send the reply to this address instead of the packet's source."""

    address: Address

    def to_tlv(self, flags: int = FLAG_U) -> Tlv:
        return Tlv(SubTlvType.RETURN_ADDRESS, self.address.packed, flags)

    @classmethod
    def from_tlv(cls, tlv: Tlv) -> "ReturnAddress":
        return cls(_address(tlv.value, "Return Address sub-TLV"))


@dataclass(frozen=True)
class SrMplsLabelStack:
    """SR-MPLS Label Stack sub-TLV (type 3): 4-octet label stack entries (length a multiple of 4, > 0)."""

    entries: tuple[int, ...]

    def to_tlv(self, flags: int = FLAG_U) -> Tlv:
        return Tlv(SubTlvType.SR_MPLS_LABEL_STACK, b"".join(_U32.pack(e) for e in self.entries), flags)

    @classmethod
    def from_tlv(cls, tlv: Tlv) -> "SrMplsLabelStack":
        if not tlv.value or len(tlv.value) % 4:
            raise MalformedPacket(f"SR-MPLS Label Stack sub-TLV: length {len(tlv.value)} "
                                  "is not a positive multiple of 4")
        return cls(tuple(_U32.unpack_from(tlv.value, i)[0] for i in range(0, len(tlv.value), 4)))


@dataclass(frozen=True)
class Srv6SegmentList:
    """SRv6 Segment List sub-TLV (type 4): Segment(1) .. Segment(n), first hop first, 16 octets each.

    The length is a positive multiple of 16 (RFC 9503 §4.1.3.2).
    """

    segments: tuple[ipaddress.IPv6Address, ...]

    def __post_init__(self):
        if not self.segments:
            raise ValueError("an SRv6 Segment List holds at least one segment")
        object.__setattr__(self, "segments", tuple(ipaddress.IPv6Address(s) for s in self.segments))

    def to_tlv(self, flags: int = FLAG_U) -> Tlv:
        return Tlv(SubTlvType.SRV6_SEGMENT_LIST, b"".join(s.packed for s in self.segments), flags)

    @classmethod
    def from_tlv(cls, tlv: Tlv) -> "Srv6SegmentList":
        if not tlv.value or len(tlv.value) % 16:
            raise MalformedPacket(f"SRv6 Segment List sub-TLV: length {len(tlv.value)} "
                                  "is not a positive multiple of 16")
        return cls(tuple(ipaddress.IPv6Address(tlv.value[i:i + 16]) for i in range(0, len(tlv.value), 16)))


SubTlv = ControlCode | ReturnAddress | SrMplsLabelStack | Srv6SegmentList
_SubT = TypeVar("_SubT", ControlCode, ReturnAddress, SrMplsLabelStack, Srv6SegmentList)
_SUB_CLASSES: dict[int, type[SubTlv]] = {
    SubTlvType.CONTROL_CODE: ControlCode, SubTlvType.RETURN_ADDRESS: ReturnAddress,
    SubTlvType.SR_MPLS_LABEL_STACK: SrMplsLabelStack, SubTlvType.SRV6_SEGMENT_LIST: Srv6SegmentList,
}


@dataclass(frozen=True)
class ReturnPath:
    """Return Path TLV (type 10): sub-TLVs telling the reflector how to send its reply.

    ``sub_tlvs`` keeps the raw sub-TLVs in wire order (so a reflector can echo
    them with updated flags); the properties give the first of each kind.
    A sender builds one with :meth:`build`.
    """

    sub_tlvs: tuple[Tlv, ...] = field(default_factory=tuple)

    @classmethod
    def build(cls, *parts: SubTlv) -> "ReturnPath":
        return cls(tuple(p.to_tlv() for p in parts))

    def to_tlv(self, flags: int = FLAG_U) -> Tlv:
        return Tlv(TlvType.RETURN_PATH, b"".join(s.pack() for s in self.sub_tlvs), flags)

    @classmethod
    def from_tlv(cls, tlv: Tlv) -> "ReturnPath":
        """Split the value into sub-TLVs; :class:`MalformedPacket` if it is not whole sub-TLVs or a
        known sub-TLV's value does not fit its type."""
        if tlv.type != TlvType.RETURN_PATH or tlv.length is not None:
            raise MalformedPacket("not a complete Return Path TLV")
        if not tlv.value:
            raise MalformedPacket("Return Path TLV holds no sub-TLV")
        parsed = parse(tlv.value)
        if parsed.malformed or parsed.rest:
            raise MalformedPacket("Return Path TLV: value does not split into whole sub-TLVs")
        for sub in parsed.tlvs:
            kind = _SUB_CLASSES.get(sub.type)
            if kind is not None:
                kind.from_tlv(sub)  # validates
        return cls(parsed.tlvs)

    def _first(self, sub_type: SubTlvType, kind: type[_SubT]) -> _SubT | None:
        """The first sub-TLV of ``sub_type`` decoded as ``kind`` (its class), or None."""
        sub = next((s for s in self.sub_tlvs if s.type == sub_type), None)
        return None if sub is None else kind.from_tlv(sub)

    @property
    def control_code(self) -> ControlCode | None:
        return self._first(SubTlvType.CONTROL_CODE, ControlCode)

    @property
    def return_address(self) -> ReturnAddress | None:
        return self._first(SubTlvType.RETURN_ADDRESS, ReturnAddress)

    @property
    def srv6_segment_list(self) -> Srv6SegmentList | None:
        return self._first(SubTlvType.SRV6_SEGMENT_LIST, Srv6SegmentList)

    @property
    def sr_mpls_label_stack(self) -> SrMplsLabelStack | None:
        return self._first(SubTlvType.SR_MPLS_LABEL_STACK, SrMplsLabelStack)

    def with_sub_flags(self, used: Iterable[int]) -> "ReturnPath":
        """A copy whose sub-TLVs of the types in ``used`` have U = 0 and all others U = 1 (M, I cleared)."""
        used = set(used)
        return ReturnPath(tuple(s.with_flags(u=s.type not in used, m=False, i=False) for s in self.sub_tlvs))
