"""STAMP test packets (RFC 8762 §4.2, §4.3, with the SSID of RFC 8972 §3), byte-exact.

Four base layouts; TLVs (:mod:`srv6pm.stamp.tlv`) follow the base packet.
All fields are in network byte order; MBZ octets are zero on transmit and
ignored on receipt. Offsets in octets:

Session-Sender, unauthenticated (44 octets)::

    0 Sequence Number (4) | 4 Timestamp (8) | 12 Error Estimate (2) | 14 SSID (2) | 16 MBZ (28)

Session-Sender, authenticated (112 octets)::

    0 Sequence Number (4) | 4 MBZ (12) | 16 Timestamp (8) | 24 Error Estimate (2) | 26 SSID (2)
    | 28 MBZ (68) | 96 HMAC (16)

Session-Reflector, unauthenticated (44 octets)::

    0 Sequence Number (4) | 4 Timestamp (8) | 12 Error Estimate (2) | 14 SSID (2)
    | 16 Receive Timestamp (8) | 24 Session-Sender Sequence Number (4) | 28 Session-Sender Timestamp (8)
    | 36 Session-Sender Error Estimate (2) | 38 MBZ (2) | 40 Session-Sender TTL (1) | 41 MBZ (3)

Session-Reflector, authenticated (112 octets)::

    0 Sequence Number (4) | 4 MBZ (12) | 16 Timestamp (8) | 24 Error Estimate (2) | 26 SSID (2)
    | 28 MBZ (4) | 32 Receive Timestamp (8) | 40 MBZ (8) | 48 Session-Sender Sequence Number (4)
    | 52 MBZ (12) | 64 Session-Sender Timestamp (8) | 72 Session-Sender Error Estimate (2) | 74 MBZ (6)
    | 80 Session-Sender TTL (1) | 81 MBZ (15) | 96 HMAC (16)

In authenticated mode the HMAC is HMAC-SHA-256 truncated to 16 octets over
the first 96 octets (RFC 8762 §4.4); it is checked with a constant-time
comparison. The key is the shared secret of the session
(:mod:`srv6pm.stamp.keys`). TLVs of an authenticated packet are protected
by an HMAC TLV instead (RFC 8972 §4.8, :func:`srv6pm.stamp.tlv.sign`), under
the same key.

A TWAMP-Light Session-Sender may send fewer octets (RFC 8762 §4.6: 14 to 43,
unauthenticated); :func:`pad_short` makes such a packet the base size, as the
reflector answers it.

``timestamp`` fields hold the 64-bit wire value; the format (NTP or PTP) is
the Z bit of the Error Estimate next to it (:mod:`srv6pm.stamp.timestamp`).
``unpack`` raises :class:`~srv6pm.stamp.errors.MalformedPacket` for a packet
shorter than its base layout and
:class:`~srv6pm.stamp.errors.AuthenticationError` when the HMAC does not
verify; it never raises anything else for any byte string.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field, replace

from srv6pm.stamp import tlv as tlvmod
from srv6pm.stamp.errors import AuthenticationError, MalformedPacket
from srv6pm.stamp.timestamp import ErrorEstimate
from srv6pm.stamp.tlv import TlvList

__all__ = [
    "AUTH_BASE", "HMAC_COVERED", "SHORTEST_SENDER", "UNAUTH_BASE", "ReflectorPacket", "SenderPacket", "base_size",
    "pad_short",
]

UNAUTH_BASE = 44
AUTH_BASE = 112
HMAC_COVERED = 96  # octets covered by the base packet's HMAC (RFC 8762 §4.4)
SHORTEST_SENDER = 14  # Sequence Number, Timestamp, Error Estimate: the least a TWAMP-Light sender sends

#                               seq  ts   ee   ssid mbz
_SENDER_OPEN = struct.Struct("!I    Q    H    H    28x".replace(" ", ""))
#                               seq  mbz  ts   ee   ssid mbz  hmac
_SENDER_AUTH = struct.Struct("!I    12x  Q    H    H    68x  16s".replace(" ", ""))
#                                 seq ts ee ssid rxts ss_seq ss_ts ss_ee mbz ttl mbz
_REFLECTOR_OPEN = struct.Struct("!I   Q  H  H    Q    I      Q     H     2x  B   3x".replace(" ", ""))
#                                 seq mbz ts ee ssid mbz rxts mbz ss_seq mbz ss_ts ss_ee mbz ttl mbz hmac
_REFLECTOR_AUTH = struct.Struct("!I   12x Q  H  H    4x  Q    8x  I      12x Q     H     6x  B   15x 16s"
                                .replace(" ", ""))
assert _SENDER_OPEN.size == _REFLECTOR_OPEN.size == UNAUTH_BASE
assert _SENDER_AUTH.size == _REFLECTOR_AUTH.size == AUTH_BASE

_SEQ = struct.Struct("!I")
_U32_MAX = 0xFFFFFFFF
_U64_MAX = (1 << 64) - 1


def base_size(authenticated: bool) -> int:
    """Octets of the base packet (either direction): 112 authenticated, 44 otherwise."""
    return AUTH_BASE if authenticated else UNAUTH_BASE


def pad_short(data: bytes) -> bytes:
    """An unauthenticated Session-Sender packet of 14 to 43 octets filled up with zeros to 44 (RFC 8762 §4.6).

    The missing octets are the SSID (zero: none) and MBZ. Any other length is
    returned unchanged (a packet shorter than 14 octets stays malformed).
    """
    if SHORTEST_SENDER <= len(data) < UNAUTH_BASE:
        return bytes(data) + bytes(UNAUTH_BASE - len(data))
    return data


def _check(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} {value!r} out of range 0..{maximum}")


def _tag(key: bytes, covered: bytes) -> bytes:
    return tlvmod.hmac16(key, covered[:HMAC_COVERED])


def _verify(key: bytes, data: bytes, what: str) -> None:
    if not hmac.compare_digest(data[HMAC_COVERED:AUTH_BASE], _tag(key, data)):
        raise AuthenticationError(f"{what}: HMAC does not verify")


def _split(data: bytes, authenticated: bool, what: str, parse=tlvmod.parse) -> tuple[bytes, TlvList]:
    data = bytes(data)
    size = base_size(authenticated)
    if len(data) < size:
        mode = "authenticated" if authenticated else "unauthenticated"
        raise MalformedPacket(f"{what} of {len(data)} octets is shorter than the {size}-octet {mode} base packet")
    return data, parse(data[size:])


@dataclass(frozen=True)
class SenderPacket:
    """A Session-Sender test packet (RFC 8762 §4.2.1/§4.2.2, RFC 8972 §3).

    ``pack(key)`` produces the authenticated layout when ``key`` is given
    (and fills in an HMAC TLV, if ``tlvs`` holds one), the unauthenticated
    layout otherwise.
    """

    seq: int
    timestamp: int
    error_estimate: ErrorEstimate = field(default_factory=ErrorEstimate)
    ssid: int = 0
    tlvs: TlvList = field(default_factory=TlvList)

    def __post_init__(self):
        _check("sequence number", self.seq, _U32_MAX)
        _check("timestamp", self.timestamp, _U64_MAX)
        _check("SSID", self.ssid, 0xFFFF)

    @property
    def seq_field(self) -> bytes:
        return _SEQ.pack(self.seq)

    def pack(self, key: bytes | None = None) -> bytes:
        if key is None:
            base = _SENDER_OPEN.pack(self.seq, self.timestamp, self.error_estimate.value, self.ssid)
            return base + self.tlvs.pack()
        head = _SENDER_AUTH.pack(self.seq, self.timestamp, self.error_estimate.value, self.ssid, bytes(16))
        base = head[:HMAC_COVERED] + _tag(key, head)
        tlvs = TlvList(tlvmod.sign(self.tlvs.tlvs, self.seq_field, key), self.tlvs.rest, self.tlvs.malformed)
        return base + tlvs.pack()

    @classmethod
    def unpack(cls, data: bytes, key: bytes | None = None) -> "SenderPacket":
        """Decode; with ``key`` the authenticated layout whose base HMAC must verify.

        TLVs are split leniently (their own HMAC TLV is not checked here; see
        :func:`srv6pm.stamp.tlv.verify`); trailing octets that do not start
        like a TLV are padding (:func:`srv6pm.stamp.tlv.parse_sent`).
        """
        data, tlvs = _split(data, key is not None, "Session-Sender packet", tlvmod.parse_sent)
        if key is None:
            seq, ts, ee, ssid = _SENDER_OPEN.unpack_from(data)
        else:
            _verify(key, data, "Session-Sender packet")
            seq, ts, ee, ssid, _tag_ = _SENDER_AUTH.unpack_from(data)
        return cls(seq, ts, ErrorEstimate.from_value(ee), ssid, tlvs)


@dataclass(frozen=True)
class ReflectorPacket:
    """A Session-Reflector test packet (RFC 8762 §4.3.1/§4.3.2, RFC 8972 §3).

    ``sender_*`` fields are copies of the Session-Sender packet's fields;
    ``sender_ttl`` is the TTL / Hop Limit it arrived with.
    """

    seq: int
    timestamp: int
    error_estimate: ErrorEstimate
    receive_timestamp: int
    sender_seq: int
    sender_timestamp: int
    sender_error_estimate: ErrorEstimate
    sender_ttl: int
    ssid: int = 0
    tlvs: TlvList = field(default_factory=TlvList)

    def __post_init__(self):
        _check("sequence number", self.seq, _U32_MAX)
        _check("Session-Sender sequence number", self.sender_seq, _U32_MAX)
        for name in ("timestamp", "receive_timestamp", "sender_timestamp"):
            _check(name.replace("_", " "), getattr(self, name), _U64_MAX)
        _check("SSID", self.ssid, 0xFFFF)
        _check("Session-Sender TTL", self.sender_ttl, 0xFF)

    @property
    def seq_field(self) -> bytes:
        return _SEQ.pack(self.seq)

    def _fields(self, timestamp: int | None) -> tuple:
        return (self.seq, self.timestamp if timestamp is None else timestamp, self.error_estimate.value, self.ssid,
                self.receive_timestamp, self.sender_seq, self.sender_timestamp, self.sender_error_estimate.value,
                self.sender_ttl)

    def pack(self, key: bytes | None = None, *, timestamp: int | None = None) -> bytes:
        """Wire bytes; TLVs are packed as they are (a reflector signs them itself, see :meth:`pack_signed`).

        ``timestamp``, if given, is written instead of :attr:`timestamp` (a
        reflector stamps the packet at the last moment).
        """
        if timestamp is not None:
            _check("timestamp", timestamp, _U64_MAX)
        if key is None:
            return _REFLECTOR_OPEN.pack(*self._fields(timestamp)) + self.tlvs.pack()
        head = _REFLECTOR_AUTH.pack(*self._fields(timestamp), bytes(16))
        return head[:HMAC_COVERED] + _tag(key, head) + self.tlvs.pack()

    def pack_signed(self, key: bytes | None) -> bytes:
        """Like :meth:`pack`, but with the HMAC TLV (if any) recomputed under ``key`` first."""
        if key is None:
            return self.pack(None)
        tlvs = TlvList(tlvmod.sign(self.tlvs.tlvs, self.seq_field, key), self.tlvs.rest, self.tlvs.malformed)
        return replace(self, tlvs=tlvs).pack(key)

    @classmethod
    def unpack(cls, data: bytes, key: bytes | None = None) -> "ReflectorPacket":
        """Decode; with ``key`` the authenticated layout whose base HMAC must verify."""
        data, tlvs = _split(data, key is not None, "Session-Reflector packet")
        if key is None:
            seq, ts, ee, ssid, rx, s_seq, s_ts, s_ee, ttl = _REFLECTOR_OPEN.unpack_from(data)
        else:
            _verify(key, data, "Session-Reflector packet")
            seq, ts, ee, ssid, rx, s_seq, s_ts, s_ee, ttl, _tag_ = _REFLECTOR_AUTH.unpack_from(data)
        return cls(seq, ts, ErrorEstimate.from_value(ee), rx, s_seq, s_ts, ErrorEstimate.from_value(s_ee), ttl,
                   ssid, tlvs)
