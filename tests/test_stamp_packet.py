"""STAMP base packets (RFC 8762 §4.2, §4.3 with the RFC 8972 SSID), field by field against hand-built bytes.

Each expected packet is written out field by field in hex, independently of
the struct layouts in srv6pm.stamp.packet; HMACs are computed with the
standard library over the bytes the RFC says (the first 96 octets).
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from srv6pm.stamp.errors import AuthenticationError, MalformedPacket
from srv6pm.stamp.packet import AUTH_BASE, UNAUTH_BASE, ReflectorPacket, SenderPacket
from srv6pm.stamp.timestamp import ErrorEstimate, TimestampFormat
from srv6pm.stamp.tlv import TlvList, TlvType, extra_padding, parse

KEY = bytes(range(32))
SEQ = "01020304"
TS = "e8fe6f801f9add37"          # NTP 1_700_000_000.123456789
EE = "852a"                      # S=1 Z=0 Scale=5 Multiplier=42
SSID = "beef"
RX_TS = "e8fe6f8020000000"       # NTP, fraction 0x20000000 = 0.125 s
SS_SEQ = "0a0b0c0d"
SS_TS = "6553f125075bcd15"       # PTP 1_700_000_037 s TAI + 123_456_789 ns
SS_EE = "4101"                   # S=0 Z=1 Scale=1 Multiplier=1
TTL = "3c"                       # 60


def h(*fields: str) -> bytes:
    return bytes.fromhex("".join(fields))


def z(octets: int) -> str:
    return "00" * octets


def tag(data: bytes) -> bytes:
    return hmac.new(KEY, data[:96], hashlib.sha256).digest()[:16]


EE_VALUE = ErrorEstimate(True, TimestampFormat.NTP, 5, 42)
SS_EE_VALUE = ErrorEstimate(False, TimestampFormat.PTP, 1, 1)


def test_sender_unauthenticated_layout():
    expected = h(SEQ, TS, EE, SSID, z(28))
    assert len(expected) == UNAUTH_BASE == 44
    packet = SenderPacket(0x01020304, 0xE8FE6F801F9ADD37, EE_VALUE, 0xBEEF)
    assert packet.pack() == expected
    assert SenderPacket.unpack(expected) == packet


def test_sender_authenticated_layout():
    head = h(SEQ, z(12), TS, EE, SSID, z(68))
    assert len(head) == 96
    expected = head + tag(head)
    assert len(expected) == AUTH_BASE == 112
    packet = SenderPacket(0x01020304, 0xE8FE6F801F9ADD37, EE_VALUE, 0xBEEF)
    assert packet.pack(KEY) == expected
    assert SenderPacket.unpack(expected, KEY) == packet


def test_reflector_unauthenticated_layout():
    expected = h(SEQ, TS, EE, SSID, RX_TS, SS_SEQ, SS_TS, SS_EE, z(2), TTL, z(3))
    assert len(expected) == 44
    packet = ReflectorPacket(0x01020304, 0xE8FE6F801F9ADD37, EE_VALUE, 0xE8FE6F8020000000, 0x0A0B0C0D,
                             0x6553F125075BCD15, SS_EE_VALUE, 60, ssid=0xBEEF)
    assert packet.pack() == expected
    assert ReflectorPacket.unpack(expected) == packet


def test_reflector_authenticated_layout():
    head = h(SEQ, z(12), TS, EE, SSID, z(4), RX_TS, z(8), SS_SEQ, z(12), SS_TS, SS_EE, z(6), TTL, z(15))
    assert len(head) == 96
    expected = head + tag(head)
    packet = ReflectorPacket(0x01020304, 0xE8FE6F801F9ADD37, EE_VALUE, 0xE8FE6F8020000000, 0x0A0B0C0D,
                             0x6553F125075BCD15, SS_EE_VALUE, 60, ssid=0xBEEF)
    assert packet.pack(KEY) == expected
    assert ReflectorPacket.unpack(expected, KEY) == packet
    # the transmit timestamp can be written at the last moment
    later = packet.pack(KEY, timestamp=0x1122334455667788)
    assert later[16:24] == h("1122334455667788") and later[96:] == tag(later)


def test_mbz_ignored_on_receipt_but_zero_on_transmit():
    noisy = bytearray(h(SEQ, TS, EE, SSID, z(28)))
    noisy[16:44] = b"\xff" * 28
    packet = SenderPacket.unpack(bytes(noisy))
    assert packet.seq == 0x01020304 and packet.pack()[16:44] == bytes(28)


@pytest.mark.parametrize("size", [0, 1, 13, 43])
def test_short_unauthenticated_packets_are_malformed(size):
    with pytest.raises(MalformedPacket, match="shorter than the 44-octet"):
        SenderPacket.unpack(bytes(size))
    with pytest.raises(MalformedPacket):
        ReflectorPacket.unpack(bytes(size))


def test_authenticated_packets_need_112_octets_and_the_right_key():
    packet = SenderPacket(7, 1, EE_VALUE).pack(KEY)
    with pytest.raises(MalformedPacket, match="112-octet"):
        SenderPacket.unpack(packet[:111], KEY)
    with pytest.raises(AuthenticationError, match="HMAC does not verify"):
        SenderPacket.unpack(packet, bytes(32))
    for index in (0, 20, 95, 100):  # any change in the covered octets or the HMAC itself
        tampered = bytearray(packet)
        tampered[index] ^= 1
        with pytest.raises(AuthenticationError):
            SenderPacket.unpack(bytes(tampered), KEY)
    # octets after the HMAC (TLVs) are not covered by the base HMAC
    assert SenderPacket.unpack(packet + b"\x00" * 8, KEY).seq == 7
    # an unauthenticated reader of an authenticated packet sees other fields (the modes must match)
    assert SenderPacket.unpack(packet).timestamp != 1


def test_tlvs_follow_the_base_packet_and_hmac_tlv_is_signed():
    pad = extra_padding(12, random=False)
    rp = parse(h("800a0014", "80040010", "fcff0002000000000000000000000001")).tlvs[0]
    packet = SenderPacket(5, 9, EE_VALUE, 0, TlvList((rp, pad)))
    wire = packet.pack()
    assert wire[44:] == h("800a0014", "80040010", "fcff0002000000000000000000000001", "80010008", z(8))
    back = SenderPacket.unpack(wire)
    assert [t.type for t in back.tlvs] == [TlvType.RETURN_PATH, TlvType.EXTRA_PADDING]

    from srv6pm.stamp.tlv import hmac_placeholder
    signed = SenderPacket(5, 9, EE_VALUE, 0, TlvList((rp, hmac_placeholder(), pad))).pack(KEY)
    tlv_area = signed[112:]
    rp_bytes = h("800a0014", "80040010", "fcff0002000000000000000000000001")
    assert tlv_area[:24] == rp_bytes
    assert tlv_area[24:28] == h("80080010")
    # RFC 8972 §4.8: HMAC over the Sequence Number field and the TLVs before the HMAC TLV
    assert tlv_area[28:44] == hmac.new(KEY, h("00000005") + rp_bytes, hashlib.sha256).digest()[:16]
    assert tlv_area[44:] == h("80010008", z(8))


def test_field_ranges_are_checked():
    with pytest.raises(ValueError):
        SenderPacket(1 << 32, 0)
    with pytest.raises(ValueError):
        SenderPacket(0, 1 << 64)
    with pytest.raises(ValueError):
        ReflectorPacket(0, 0, EE_VALUE, 0, 0, 0, EE_VALUE, 256)
