"""RFC 8972 TLV framing and flags, RFC 9503 Destination Node Address and Return Path TLVs, the SRH.

Expected bytes are written out field by field: Flags (U=0x80, M=0x40, I=0x20),
Type, Length (2 octets), Value.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from srv6pm.stamp.errors import MalformedPacket
from srv6pm.stamp.srh import SegmentRoutingHeader, parse_segments
from srv6pm.stamp.tlv import (
    ClassOfService, DirectMeasurement, parse_sent,
    FLAG_I, FLAG_M, FLAG_U, ControlCode, DestinationNodeAddress, ReturnAddress, ReturnPath, SrMplsLabelStack,
    Srv6SegmentList, SubTlvType, Tlv, TlvType, extra_padding, hmac_placeholder, parse, sign, verify,
)

SID1 = "fcff0002000000000000000000000001"  # fcff:2::1
SID2 = "fcff0003000000000000000000000001"  # fcff:3::1
KEY = b"\x5a" * 32


def h(*fields: str) -> bytes:
    return bytes.fromhex("".join(fields))


def test_code_points():
    # IANA "STAMP TLV Types" and "Return Path Sub-TLV Types", "STAMP TLV Flags" bits 0..2
    assert [int(t) for t in TlvType] == list(range(1, 11))
    assert (TlvType.EXTRA_PADDING, TlvType.HMAC, TlvType.DESTINATION_NODE_ADDRESS, TlvType.RETURN_PATH) == (1, 8, 9, 10)
    assert (SubTlvType.CONTROL_CODE, SubTlvType.RETURN_ADDRESS, SubTlvType.SR_MPLS_LABEL_STACK,
            SubTlvType.SRV6_SEGMENT_LIST) == (1, 2, 3, 4)
    assert (FLAG_U, FLAG_M, FLAG_I) == (0x80, 0x40, 0x20)


def test_header_and_flags():
    tlv = Tlv(0xF0, b"\x01\x02\x03")
    assert tlv.pack() == h("80", "f0", "0003", "010203")  # a sender sets U=1, M=0, I=0
    assert tlv.unrecognized and not tlv.malformed and not tlv.integrity_failed
    assert tlv.with_flags(u=False).pack()[0] == 0x00
    assert tlv.with_flags(m=True).pack()[0] == 0xC0
    assert tlv.with_flags(u=False, i=True).pack()[0] == 0x20
    assert Tlv(1, flags=0x1F).with_flags(u=True).flags == 0x80  # reserved bits are zeroed when flags are set


def test_extra_padding():
    pad = extra_padding(10, random=False)
    assert pad.pack() == h("80", "01", "0006", "00" * 6)
    assert len(extra_padding(1000).pack()) == 1000
    assert extra_padding(40).value != extra_padding(40).value  # pseudo-random (RFC 8972 §4.1 SHOULD)
    with pytest.raises(ValueError):
        extra_padding(3)


def test_destination_node_address():
    v6 = DestinationNodeAddress(ipaddress.ip_address("fd01:4::2"))
    assert v6.to_tlv().pack() == h("80", "09", "0010", "fd010004000000000000000000000002")
    v4 = DestinationNodeAddress(ipaddress.ip_address("192.0.2.1"))
    assert v4.to_tlv().pack() == h("80", "09", "0004", "c0000201")
    assert DestinationNodeAddress.from_tlv(parse(v6.to_tlv().pack()).tlvs[0]) == v6
    with pytest.raises(MalformedPacket, match="neither 4"):
        DestinationNodeAddress.from_tlv(Tlv(9, b"\x01\x02\x03"))


def test_return_path_with_srv6_segment_list():
    rp = ReturnPath.build(Srv6SegmentList((ipaddress.IPv6Address("fcff:2::1"), ipaddress.IPv6Address("fcff:3::1"))))
    expected = h("80", "0a", "0024",             # Return Path TLV, Length 36
                 "80", "04", "0020", SID1, SID2)  # SRv6 Segment List sub-TLV, Length 32, Segment(1), Segment(2)
    assert rp.to_tlv().pack() == expected
    back = ReturnPath.from_tlv(parse(expected).tlvs[0])
    assert back.srv6_segment_list.segments == (ipaddress.IPv6Address("fcff:2::1"), ipaddress.IPv6Address("fcff:3::1"))
    assert back.control_code is None and back.return_address is None


def test_return_path_other_sub_tlvs():
    assert ReturnPath.build(ControlCode(1)).to_tlv().pack() == h("800a0008", "80010004", "00000001")
    addr = ReturnPath.build(ReturnAddress(ipaddress.ip_address("fd01:1::2")))
    assert addr.to_tlv().pack() == h("800a0014", "80020010", "fd010001000000000000000000000002")
    mpls = ReturnPath.build(SrMplsLabelStack((0x00064140, 0x000C81FF)))
    assert mpls.to_tlv().pack() == h("800a000c", "80030008", "00064140", "000c81ff")
    parsed = ReturnPath.from_tlv(parse(mpls.to_tlv().pack()).tlvs[0])
    assert parsed.sr_mpls_label_stack.entries == (0x00064140, 0x000C81FF)
    assert not ReturnPath.from_tlv(parse(h("800a0008", "80010004", "00000000")).tlvs[0]).control_code.reply_requested


@pytest.mark.parametrize("value", [
    "",                                   # no sub-TLV
    "800400",                             # a sub-TLV header cut short
    "80040010" + SID1[:16],               # value shorter than its Length
    "80040008" + SID1[:16],               # SRv6 segment list not a multiple of 16
    "80040000",                           # SRv6 segment list of length 0
    "80010002" + "0001",                  # Control Code not 4 octets
    "80020005" + "0102030405",            # Return Address neither 4 nor 16
])
def test_malformed_return_paths(value):
    tlv = Tlv(TlvType.RETURN_PATH, bytes.fromhex(value))
    with pytest.raises(MalformedPacket):
        ReturnPath.from_tlv(tlv)


def test_parse_is_lenient_and_marks_malformed():
    good = h("80010002", "abcd", "80f00000")
    parsed = parse(good)
    assert [(t.type, t.value) for t in parsed.tlvs] == [(1, b"\xab\xcd"), (0xF0, b"")] and not parsed.malformed
    assert parsed.pack() == good
    # the last TLV claims more than is left: M set, the original Length kept for the echo
    cut = parse(h("80010002", "abcd", "800a0010", "0102"))
    assert cut.malformed and cut.tlvs[-1].malformed and cut.tlvs[-1].length == 0x10
    assert cut.pack() == h("80010002", "abcd", "c00a0010", "0102")
    # 1-3 octets that cannot be a TLV header: kept, malformed
    frag = parse(h("80010000", "8001"))
    assert frag.malformed and frag.rest == h("8001")
    # all-zero trailing octets are padding (TWAMP Light style), not TLVs
    zeros = parse(bytes(20))
    assert zeros.tlvs == () and zeros.rest == bytes(20) and not zeros.malformed


def test_hmac_tlv_sign_and_verify():
    seq = h("00000007")
    rp = ReturnPath.build(Srv6SegmentList((ipaddress.IPv6Address("fcff:2::1"),))).to_tlv()
    pad = extra_padding(8, random=False)
    tlvs = sign((rp, hmac_placeholder(), pad), seq, KEY)
    assert tlvs[1].pack()[:4] == h("80080010")
    assert tlvs[1].value == hmac.new(KEY, seq + rp.pack(), hashlib.sha256).digest()[:16]
    assert verify(tlvs, seq, KEY)
    assert not verify(tlvs, seq, b"\x00" * 32)                           # wrong key
    assert not verify(tlvs, h("00000008"), KEY)                           # other sequence number
    assert not verify((rp.with_flags(u=False), *tlvs[1:]), seq, KEY)      # a flag changed in a covered TLV
    assert not verify((tlvs[1], rp), seq, KEY)                            # HMAC not last (only padding may follow)
    assert not verify((rp,), seq, KEY)                                    # TLVs but no HMAC TLV
    assert not verify(tlvs, seq, None)                                    # no key: cannot verify
    assert verify((pad,), seq, KEY) and verify((), seq, None)              # only Extra Padding: no HMAC needed


def test_srh_layout_and_kernel_convention():
    srh = SegmentRoutingHeader.for_path(["fcff:2::1", "fcff:3::1"], "fd01:4::2")
    wire = srh.pack()
    # Next Header 0 (kernel fills it), Hdr Ext Len 6 (3 segments * 2), Type 4, Segments Left 2, Last Entry 2
    assert wire[:8] == h("00", "06", "04", "02", "02", "00", "0000")
    assert wire[8:] == h("fd010004000000000000000000000002", SID2, SID1)  # Segment List[0] is the destination
    assert SegmentRoutingHeader.unpack(wire) == srh
    assert [str(a) for a in srh.path] == ["fcff:2::1", "fcff:3::1", "fd01:4::2"]
    with pytest.raises(MalformedPacket):
        SegmentRoutingHeader.unpack(wire[:20])


def test_parse_segments():
    assert parse_segments("fcff:2::1, fcff:3::1") == (ipaddress.IPv6Address("fcff:2::1"),
                                                      ipaddress.IPv6Address("fcff:3::1"))
    for bad in ("", "fcff:2::1,", "10.0.0.1", "fcff::1,zz"):
        with pytest.raises(ValueError):
            parse_segments(bad)


def test_class_of_service_layout():
    # DSCP1 46 | DSCP2 10 | ECN 1 | RP 1 | Reserved: 1011 1000 1010 0101, 0x0000
    wire = ClassOfService(46, 10, 1, 1).to_tlv().pack()
    assert wire == bytes.fromhex("80040004" "b8a5" "0000")
    assert ClassOfService.from_tlv(parse(wire).tlvs[0]) == ClassOfService(46, 10, 1, 1)
    with pytest.raises(MalformedPacket):
        ClassOfService.from_tlv(parse(bytes.fromhex("80040002" "b8a5")).tlvs[0])
    with pytest.raises(ValueError):
        ClassOfService(64)


def test_direct_measurement_layout():
    wire = DirectMeasurement(7).to_tlv().pack()
    assert wire == bytes.fromhex("8005000c" "00000007" "00000000" "00000000")
    filled = parse(bytes.fromhex("0005000c" "00000007" "00000006" "00000005")).tlvs[0]
    assert DirectMeasurement.from_tlv(filled) == DirectMeasurement(7, 6, 5)
    with pytest.raises(MalformedPacket):
        DirectMeasurement.from_tlv(parse(bytes.fromhex("80050004" "00000007")).tlvs[0])


def test_parse_sent_tells_padding_from_tlvs():
    tlv = bytes.fromhex("80010002" "abcd")
    assert [t.type for t in parse_sent(tlv).tlvs] == [1]
    assert [t.type for t in parse_sent(bytes.fromhex("00f00000")).tlvs] == [0xF0]  # U = 0 is still a TLV
    for padding in (bytes(12), b"\xff" * 12, bytes.fromhex("c0010000"), bytes.fromhex("a0010000"),
                    bytes.fromhex("800100ff") + bytes(4), bytes.fromhex("80000000"), b"\x80\x01"):
        parsed = parse_sent(padding)
        assert parsed.tlvs == () and parsed.rest == padding and not parsed.malformed and parsed.pack() == padding
    # after a whole first TLV, a cut-short one is still a malformed TLV
    cut = parse_sent(tlv + bytes.fromhex("800a0040" "0102"))
    assert cut.malformed and cut.tlvs[-1].malformed
