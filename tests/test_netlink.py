"""The shared netlink codec (srv6pm.netlink): structures declared as data follow the kernel headers, attributes
round-trip through their policies, and a malformed attribute is refused (no root needed)."""

from __future__ import annotations

import socket
import struct

import pytest

from srv6pm import netlink
from srv6pm.netlink import AttrPolicy, CStruct, NfGenMsg, NlAttr, NlMsgErr, NlMsgHdr, RtMsg


def test_structures_have_the_kernel_s_sizes_and_offsets():
    # linux/netlink.h, linux/netfilter/nfnetlink.h, linux/rtnetlink.h
    assert (NlMsgHdr.size, NlAttr.size, NlMsgErr.size, NfGenMsg.size, RtMsg.size) == (16, 4, 4, 4, 12)
    assert [RtMsg.offset(name) for name in ("family", "dst_len", "table", "protocol", "flags")] == [0, 1, 4, 5, 8]
    assert NlMsgHdr.offset("seq") == 8


def test_pack_and_decode_by_field_name():
    raw = RtMsg.pack(family=socket.AF_INET6, table=254, protocol=77)
    assert raw == struct.pack("=BBBBBBBBI", socket.AF_INET6, 0, 0, 0, 254, 77, 0, 0, 0)  # as the kernel lays it out
    assert RtMsg.decode(raw)._asdict() == {"family": 10, "dst_len": 0, "src_len": 0, "tos": 0, "table": 254,
                                            "protocol": 77, "scope": 0, "type": 0, "flags": 0}
    assert NfGenMsg.pack(family=0, version=0, res_id=7) == b"\x00\x00\x00\x07"  # res_id is big endian
    with pytest.raises(TypeError, match="no field"):
        NlMsgHdr.pack(length=1)


def test_padding_fields_pack_as_zero_and_are_not_decoded():
    class Padded(CStruct):
        fields = (("a", "H"), ("_pad", "H"), ("b", "I"))
    assert Padded.pack(a=1, b=2) == struct.pack("=HHI", 1, 0, 2)
    assert Padded.decode(Padded.pack(a=1, b=2)) == Padded.Value(1, 2)


def test_attributes_round_trip_with_nesting_and_padding():
    inner = AttrPolicy("inner", {1: ("hooknum", netlink.BE32), 2: ("priority", netlink.BE32S)})
    outer = AttrPolicy("outer", {1: ("name", netlink.STRING), 2: ("hook", netlink.Nested(inner)),
                                 3: ("blob", netlink.BYTES)})
    raw = outer.encode([("name", "abc"), ("hook", [("hooknum", 4), ("priority", -500)]), ("blob", b"\x01")])
    assert len(raw) % 4 == 0
    hook_at = netlink.align(NlAttr.size + 4)
    assert NlAttr.decode(raw, hook_at).type == 2 | netlink.NLA_F_NESTED
    assert outer.decode(raw, 0, len(raw)) == {"name": "abc", "hook": {"hooknum": 4, "priority": -500}, "blob": b"\x01"}
    unknown = raw + netlink.nla(99, b"newer kernel")
    assert outer.decode(unknown, 0, len(unknown))["name"] == "abc"  # unknown types are skipped
    with pytest.raises(KeyError, match="unknown attribute"):
        outer.encode([("nothing", 1)])
    bad = raw + struct.pack("=HH", 200, 1) + b"\0" * 4  # longer than the message
    with pytest.raises(ValueError, match="malformed"):
        outer.decode(bad, 0, len(bad))


def test_an_nfnetlink_message_is_header_nfgenmsg_attributes():
    policy = AttrPolicy("p", {3: ("maxlen", netlink.BE32)})
    msg = netlink.nfnl_message(netlink.NFNL_SUBSYS_QUEUE, 2, netlink.NLM_F_REQUEST, 42, 0, 7, policy, [("maxlen", 9)])
    hdr = NlMsgHdr.decode(msg)
    assert (hdr.len, hdr.type, hdr.flags, hdr.seq) == (len(msg), 0x302, 1, 42)
    assert NfGenMsg.decode(msg, NlMsgHdr.size).res_id == 7
    assert policy.decode(msg, NlMsgHdr.size + NfGenMsg.size, len(msg)) == {"maxlen": 9}
