"""The Session-Reflector's per-packet decisions (Reflector.handle), without sockets.

RFC 8762 §4.3 (stateless/stateful, copies, TTL), RFC 8972 §4 (U/M/I flags,
HMAC TLV), RFC 9503 (Destination Node Address, Return Path).
"""

from __future__ import annotations

import ipaddress

import pytest

from srv6pm.stamp import udp
from srv6pm.stamp.errors import AuthenticationError, MalformedPacket, StampError
from srv6pm.stamp.packet import ReflectorPacket, SenderPacket
from srv6pm.stamp.reflector import Reflector, ReflectorConfig
from srv6pm.stamp.timestamp import ErrorEstimate, TimestampFormat, unix_ns_from_ntp
from srv6pm.stamp.tlv import (
    FLAG_I, FLAG_M, FLAG_U, ControlCode, DestinationNodeAddress, ReturnAddress, ReturnPath, SrMplsLabelStack,
    Srv6SegmentList, Tlv, TlvList, TlvType, extra_padding, hmac_placeholder, parse,
)

KEY = bytes(range(100, 132))
SENDER = ("fd01:1::2", 40000)
LOCAL = "fd01:4::2"
RX_NS = 1_700_000_000_000_000_000
SID_B, SID_C = ipaddress.IPv6Address("fcff:2::1"), ipaddress.IPv6Address("fcff:3::1")


def rx(data: bytes, *, source=SENDER, ttl=61, destination=LOCAL, rx_ns=RX_NS) -> udp.Received:
    return udp.Received(data, source, destination, ttl, rx_ns, "kernel", False)


def request(seq=3, tlvs=(), key=None, ssid=0, rest=b"") -> bytes:
    ee = ErrorEstimate(True, TimestampFormat.NTP, 10, 3)
    return SenderPacket(seq, 0x1122334455667788, ee, ssid, TlvList(tuple(tlvs), rest)).pack(key)


def reflector(**kw) -> Reflector:
    return Reflector(ReflectorConfig(bind=kw.pop("bind", "::"), port=0, **kw))


def test_stateless_reply_copies_and_stamps():
    r = reflector()
    reply = r.handle(rx(request(seq=3, ssid=77)))
    p = reply.packet
    assert p.seq == 3 and p.sender_seq == 3                      # stateless: the sender's number
    assert p.sender_timestamp == 0x1122334455667788
    assert p.sender_error_estimate == ErrorEstimate(True, TimestampFormat.NTP, 10, 3)
    assert p.sender_ttl == 61                                    # the Hop Limit it arrived with
    assert p.ssid == 77
    assert unix_ns_from_ntp(p.receive_timestamp, RX_NS) == RX_NS  # t2 = the kernel's receive timestamp
    assert reply.destination == SENDER and reply.source == LOCAL and reply.waypoints == ()
    assert len(p.pack()) == 44


def test_unknown_ttl_is_zero():
    assert reflector().handle(rx(request(), ttl=None)).packet.sender_ttl == 0


def test_stateful_numbers_each_session_from_zero():
    r = reflector(stateful=True)
    a = [r.handle(rx(request(seq=s))).packet.seq for s in (100, 101, 105)]
    b = [r.handle(rx(request(seq=9), source=("fd01:9::2", 1))).packet.seq for _ in range(2)]
    c = r.handle(rx(request(seq=100, ssid=5))).packet.seq  # another SSID: another session
    assert a == [0, 1, 2] and b == [0, 1] and c == 0
    assert r.stats().sessions == 3


def test_stateful_sessions_are_bounded():
    r = reflector(stateful=True, max_sessions=2)
    for port in range(10):
        r.handle(rx(request(), source=("fd01:1::2", 1000 + port)))
    assert r.stats().sessions == 2


def test_authenticated_mode():
    r = reflector(key=KEY)
    reply = r.handle(rx(request(key=KEY)))
    wire = reply.packet.pack(KEY)
    assert len(wire) == 112 and ReflectorPacket.unpack(wire, KEY).sender_seq == 3
    with pytest.raises(AuthenticationError):
        r.handle(rx(request(key=b"\x01" * 32)))     # wrong key
    with pytest.raises(MalformedPacket):
        r.handle(rx(request()))                     # an unauthenticated (44-octet) packet


def test_symmetric_size_and_padding_echo():
    r = reflector()
    pad = extra_padding(60)
    reply = r.handle(rx(request(tlvs=[pad])))
    assert len(reply.packet.pack()) == 44 + 60
    assert reply.packet.tlvs.tlvs[0].flags == 0 and reply.packet.tlvs.tlvs[0].value == pad.value
    zeros = r.handle(rx(request(rest=bytes(33))))  # TWAMP-Light style zero padding
    assert zeros.packet.pack()[44:] == bytes(33)


def test_unknown_tlv_is_copied_with_u_flag():
    r = reflector()
    unknown = Tlv(0xF1, b"hello", flags=0)
    location = Tlv(TlvType.LOCATION, bytes(4))  # defined by RFC 8972, not supported here
    reply = r.handle(rx(request(tlvs=[unknown, location])))
    out = reply.packet.tlvs.tlvs
    assert [(t.type, t.value, t.flags) for t in out] == [(0xF1, b"hello", FLAG_U), (2, bytes(4), FLAG_U)]


def test_malformed_tlv_sets_m_and_stops_processing():
    r = reflector()
    bad_rp = Tlv(TlvType.RETURN_PATH, bytes.fromhex("80040008") + bytes(8))  # SRv6 list not a multiple of 16
    good_rp = ReturnPath.build(Srv6SegmentList((SID_B,))).to_tlv()
    reply = r.handle(rx(request(tlvs=[bad_rp, good_rp])))
    out = reply.packet.tlvs.tlvs
    assert out[0].flags & FLAG_M and out[1] == good_rp  # the rest is copied unchanged, not acted upon
    assert reply.waypoints == ()
    # a TLV cut short by the end of the packet
    data = request(tlvs=[extra_padding(8)]) + bytes.fromhex("800a0040") + b"\x01\x02"
    reply = r.handle(rx(data))
    assert len(reply.packet.pack()) == len(data)
    assert reply.packet.tlvs.tlvs[-1].flags & FLAG_M and reply.packet.pack()[-6:] == bytes.fromhex("c00a00400102")


def test_destination_node_address():
    r = reflector()
    mine = DestinationNodeAddress(ipaddress.ip_address(LOCAL)).to_tlv()
    other = DestinationNodeAddress(ipaddress.ip_address("fd01:9::9")).to_tlv()
    out = r.handle(rx(request(tlvs=[mine, other]))).packet.tlvs.tlvs
    assert out[0].flags == 0 and out[1].flags == FLAG_U


def test_return_path_srv6_segment_list():
    r = reflector()
    rp = ReturnPath.build(Srv6SegmentList((SID_C, SID_B))).to_tlv()
    reply = r.handle(rx(request(tlvs=[rp])))
    assert reply.waypoints == (SID_C, SID_B) and reply.destination == SENDER
    out = reply.packet.tlvs.tlvs[0]
    assert out.flags == 0 and parse(out.value).tlvs[0].flags == 0  # honoured: U = 0 on the TLV and the sub-TLV
    assert reply.fallback_tlvs.tlvs[0].flags == FLAG_U
    # the sender's own address as the last segment is not repeated
    rp = ReturnPath.build(Srv6SegmentList((SID_B, ipaddress.IPv6Address(SENDER[0])))).to_tlv()
    assert r.handle(rx(request(tlvs=[rp]))).waypoints == (SID_B,)
    # only the first Return Path TLV counts; a second one is not processed (U = 1)
    second = ReturnPath.build(Srv6SegmentList((SID_C,))).to_tlv()
    reply = r.handle(rx(request(tlvs=[ReturnPath.build(Srv6SegmentList((SID_B,))).to_tlv(), second])))
    assert reply.waypoints == (SID_B,) and reply.packet.tlvs.tlvs[1].flags == FLAG_U


def test_return_path_over_ipv4_is_refused():
    r = reflector(bind="0.0.0.0")
    rp = ReturnPath.build(Srv6SegmentList((SID_B,))).to_tlv()
    reply = r.handle(rx(request(tlvs=[rp]), source=("192.0.2.1", 5), destination="192.0.2.2"))
    assert reply.waypoints == () and reply.packet.tlvs.tlvs[0].flags == FLAG_U


def test_return_path_control_code():
    r = reflector()
    no_reply = ReturnPath.build(ControlCode(0)).to_tlv()
    assert r.handle(rx(request(tlvs=[no_reply]))) is None
    same_link = ReturnPath.build(ControlCode(1)).to_tlv()
    reply = r.handle(rx(request(tlvs=[same_link])))
    assert reply is not None and reply.packet.tlvs.tlvs[0].flags == 0


def test_return_address_only_when_allowed():
    rp = ReturnPath.build(ReturnAddress(ipaddress.ip_address("fd01:7::7"))).to_tlv()
    closed = reflector().handle(rx(request(tlvs=[rp])))
    assert closed.destination == SENDER and closed.packet.tlvs.tlvs[0].flags == FLAG_U
    opened = reflector(honour_return_address=True).handle(rx(request(tlvs=[rp])))
    assert opened.destination == ("fd01:7::7", SENDER[1]) and opened.packet.tlvs.tlvs[0].flags == 0


def test_sr_mpls_return_path_cannot_be_honoured():
    rp = ReturnPath.build(SrMplsLabelStack((0x00064140,))).to_tlv()
    reply = reflector().handle(rx(request(tlvs=[rp])))
    assert reply.waypoints == () and reply.packet.tlvs.tlvs[0].flags == FLAG_U


def test_hmac_tlv_verified_in_authenticated_mode():
    r = reflector(key=KEY)
    rp = ReturnPath.build(Srv6SegmentList((SID_B,))).to_tlv()
    good = r.handle(rx(request(tlvs=[rp, hmac_placeholder()], key=KEY)))
    assert good.waypoints == (SID_B,)
    assert all(not t.integrity_failed for t in good.packet.tlvs.tlvs)
    # the reflector signs its own TLVs (U/M/I as reflected) with the reflected Sequence Number
    from srv6pm.stamp.tlv import verify
    assert verify(good.packet.tlvs.tlvs, good.packet.seq_field, KEY)

    # no HMAC TLV although a Return Path is present: every TLV gets I = 1 and nothing is acted upon
    missing = r.handle(rx(request(tlvs=[rp], key=KEY)))
    assert missing.waypoints == () and all(t.flags & FLAG_I for t in missing.packet.tlvs.tlvs)
    # a tampered TLV
    data = bytearray(request(tlvs=[rp, hmac_placeholder()], key=KEY))
    data[112 + 10] ^= 0xFF
    tampered = r.handle(rx(bytes(data)))
    assert tampered.waypoints == () and all(t.flags & FLAG_I for t in tampered.packet.tlvs.tlvs)
    # Extra Padding alone needs no HMAC TLV
    assert not r.handle(rx(request(tlvs=[extra_padding(16)], key=KEY))).packet.tlvs.tlvs[0].integrity_failed


def test_hmac_tlv_without_a_key_cannot_be_verified():
    r = reflector()
    rp = ReturnPath.build(Srv6SegmentList((SID_B,))).to_tlv()
    reply = r.handle(rx(request(tlvs=[rp, hmac_placeholder()])))
    assert reply.waypoints == () and all(t.flags & FLAG_I for t in reply.packet.tlvs.tlvs)


def test_everything_wrong_is_a_stamp_error():
    r = reflector()
    for data in (b"", b"\x00" * 13):  # below the 14 octets of a TWAMP-Light test packet
        with pytest.raises(StampError):
            r.handle(rx(data))
    with pytest.raises(StampError):
        r.handle(udp.Received(b"\x00" * 60, SENDER, LOCAL, 64, RX_NS, "kernel", True))  # truncated by the socket


def test_config_validation_and_repr_hides_key():
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        ReflectorConfig(bind="nonsense")
    assert "key=set" in repr(ReflectorConfig(key=KEY)) and KEY.hex() not in repr(ReflectorConfig(key=KEY))


# -- RFC 8762 §4.6: TWAMP-Light senders, hand-built bytes --------------------------------------

@pytest.mark.parametrize("size", [14, 20, 43])
def test_short_twamp_light_packet_gets_a_base_size_reply(size):
    # Sequence Number 7, Timestamp, Error Estimate (S=1, Z=0, scale 0, multiplier 1), then whatever
    # the sender sent of the rest (MBZ): 14 to 43 octets in all.
    data = (bytes.fromhex("00000007" "e8e8e8e8" "00000001" "8001") + bytes(30))[:size]
    reply = reflector().handle(rx(data))
    wire = reply.packet.pack()
    assert len(wire) == 44
    assert wire[:4] == bytes.fromhex("00000007")            # stateless: the sender's number
    assert wire[24:28] == bytes.fromhex("00000007")         # Session-Sender Sequence Number
    assert wire[28:36] == bytes.fromhex("e8e8e8e800000001")  # Session-Sender Timestamp
    assert wire[36:38] == bytes.fromhex("8001")             # Session-Sender Error Estimate
    assert wire[14:16] == bytes(2)                          # SSID: none
    assert wire[40] == 61


def test_short_packet_in_authenticated_mode_is_malformed():
    with pytest.raises(MalformedPacket):
        reflector(key=KEY).handle(rx(bytes.fromhex("00000007") + bytes(40)))


# -- padding that is not TLVs ----------------------------------------------------------------

@pytest.mark.parametrize("padding", [
    bytes([0xFF]) * 30,                        # M and I set: no sender sends that
    bytes.fromhex("a5") * 17,                  # I set
    bytes.fromhex("80010fff") + b"\x11" * 12,  # a TLV header whose Length exceeds the packet
    bytes.fromhex("0000") + b"\x07" * 10,      # Type 0
])
def test_non_tlv_padding_is_copied_unchanged(padding):
    data = request(seq=9) + padding
    reply = reflector().handle(rx(data))
    assert reply.packet.tlvs.tlvs == ()
    assert reply.packet.pack()[44:] == padding and len(reply.packet.pack()) == len(data)


# -- RFC 8972 §4.4 Class of Service, hand-built bytes ----------------------------------------

def test_class_of_service_reports_what_arrived_and_asks_for_dscp1():
    # Flags U, Type 4, Length 4; DSCP1 = 46 (EF), DSCP2 = 0, ECN 0, RP 0, Reserved 0
    cos = bytes.fromhex("80040004") + (46 << 10).to_bytes(2, "big") + bytes(2)
    data = request() + cos
    reply = reflector().handle(udp.Received(data, SENDER, LOCAL, 61, RX_NS, "kernel", False, tclass=(10 << 2) | 1))
    tail = reply.packet.pack()[44:]
    assert tail[:4] == bytes.fromhex("00040004")                            # understood: U = 0
    assert int.from_bytes(tail[4:6], "big") == 46 << 10 | 10 << 4 | 1 << 2  # DSCP2 10 (AF11), ECN 1, RP 0
    assert tail[6:8] == bytes(2)
    assert reply.tclass == 46 << 2                                          # the reply goes with DSCP1


def test_class_of_service_unknown_tclass_and_bad_length():
    cos = bytes.fromhex("80040004") + (46 << 10).to_bytes(2, "big") + bytes(2)
    reply = reflector().handle(rx(request() + cos))  # the kernel did not say
    assert reply.packet.pack()[44:] == cos and reply.tclass is None
    bad = bytes.fromhex("80040002") + bytes(2)
    reply = reflector().handle(rx(request() + bad))
    assert reply.packet.tlvs.tlvs[0].flags & FLAG_M


# -- RFC 8972 §4.5 Direct Measurement, hand-built bytes --------------------------------------

def test_direct_measurement_counts_per_session():
    r = reflector()

    def dm(sender_tx: int) -> bytes:  # Flags U, Type 5, Length 12; S_TxC, R_RxC 0, R_TxC 0
        return bytes.fromhex("8005000c") + sender_tx.to_bytes(4, "big") + bytes(8)

    first = r.handle(rx(request(seq=0) + dm(1)))
    assert first.packet.pack()[44:] == bytes.fromhex("0005000c" "00000001" "00000001" "00000001")
    assert first.counted is not None
    # the reply was not sent (handle only): the next one counts one more received, the same sent
    second = r.handle(rx(request(seq=1) + dm(2)))
    assert second.packet.pack()[48:] == bytes.fromhex("00000002" "00000002" "00000001")
    other = r.handle(rx(request(seq=0) + dm(1), source=("fd01:1::3", 40000)))  # another session
    assert other.packet.pack()[48:] == bytes.fromhex("00000001" "00000001" "00000001")
    bad = r.handle(rx(request() + bytes.fromhex("8005000800000001") + bytes(4)))
    assert bad.packet.tlvs.tlvs[0].flags & FLAG_M and bad.counted is None
