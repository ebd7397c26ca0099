"""Fuzzing the Session-Reflector: any byte string gets a reply or a StampError, never anything else.

Properties checked for every input, in unauthenticated and authenticated mode:

* ``Reflector.handle`` returns a Reply (or None when no reply is requested)
  or raises StampError; never another exception;
* a reply has exactly the size of the request (RFC 8762 symmetric size) and
  decodes again as a Session-Reflector packet with the reflector's key;
* decoders (SenderPacket/ReflectorPacket.unpack, tlv.parse, ReturnPath.from_tlv)
  raise nothing but StampError.

Then the real socket loop gets thousands of such packets interleaved with good
ones and must answer every good one without an internal error.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srv6pm.stamp import udp
from srv6pm.stamp.errors import StampError
from srv6pm.stamp.packet import ReflectorPacket, SenderPacket
from srv6pm.stamp.reflector import Reflector, ReflectorConfig
from srv6pm.stamp.timestamp import ErrorEstimate
from srv6pm.stamp.tlv import (
    ControlCode, DestinationNodeAddress, ReturnAddress, ReturnPath, SrMplsLabelStack, Srv6SegmentList, Tlv,
    TlvList, extra_padding, hmac_placeholder, parse,
)

KEY = b"fuzz-key-0123456789abcdef0123456"
SENDER = ("fd01:1::2", 4242)

REFLECTORS = {
    None: Reflector(ReflectorConfig(bind="::", port=0, stateful=True)),
    KEY: Reflector(ReflectorConfig(bind="::", port=0, key=KEY, honour_return_address=True)),
}

ipv6 = st.integers(min_value=0, max_value=(1 << 128) - 1).map(ipaddress.IPv6Address)
tlv_parts = st.one_of(
    st.integers(min_value=4, max_value=64).map(lambda n: extra_padding(n)),
    st.builds(lambda a: DestinationNodeAddress(a).to_tlv(), ipv6),
    st.builds(lambda segs: ReturnPath.build(Srv6SegmentList(tuple(segs))).to_tlv(), st.lists(ipv6, min_size=1,
                                                                                             max_size=4)),
    st.builds(lambda c: ReturnPath.build(ControlCode(c)).to_tlv(), st.integers(0, 3)),
    st.builds(lambda a: ReturnPath.build(ReturnAddress(a)).to_tlv(), ipv6),
    st.builds(lambda e: ReturnPath.build(SrMplsLabelStack(tuple(e))).to_tlv(),
              st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=3)),
    st.builds(lambda t, v, f: Tlv(t, v, f), st.integers(0, 255), st.binary(max_size=40), st.integers(0, 255)),
    st.just(hmac_placeholder()),
)


@st.composite
def valid_requests(draw, key):
    tlvs = draw(st.lists(tlv_parts, max_size=4))
    if key is not None and draw(st.booleans()):
        tlvs.append(hmac_placeholder())
    packet = SenderPacket(draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, (1 << 64) - 1)),
                          ErrorEstimate.from_value(draw(st.integers(0, 0xFFFF))), draw(st.integers(0, 0xFFFF)),
                          TlvList(tuple(tlvs)))
    return packet.pack(key)


@st.composite
def mutated(draw, key):
    data = bytearray(draw(valid_requests(key)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite-length"]))
        if action == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif action == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif action == "extend":
            data += draw(st.binary(max_size=30))
        elif action == "overwrite-length" and len(data) > 48:
            i = draw(st.integers(44, len(data) - 2))
            data[i:i + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    return bytes(data)


def check(data: bytes, key) -> None:
    r = REFLECTORS[key]
    received = udp.Received(data, SENDER, "fd01:4::2", 60, time.time_ns(), "kernel", False)
    try:
        reply = r.handle(received)
    except StampError:
        return
    if reply is None:
        return
    wire = reply.packet.pack(key, timestamp=1)
    assert len(wire) == max(len(data), 44), "reply size differs from request size (44 for a shorter one)"
    back = ReflectorPacket.unpack(wire, key)
    assert back.sender_ttl == 60
    if reply.fallback_tlvs is not None:
        assert reply.fallback_tlvs.size == reply.packet.tlvs.size


FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([None, KEY]))
def test_arbitrary_bytes(data, key):
    check(data, key)


@FUZZ
@given(st.data())
def test_valid_requests_are_answered_symmetrically(data):
    key = data.draw(st.sampled_from([None, KEY]))
    check(data.draw(valid_requests(key)), key)


@FUZZ
@given(st.data())
def test_mutated_requests(data):
    key = data.draw(st.sampled_from([None, KEY]))
    check(data.draw(mutated(key)), key)


@FUZZ
@given(st.binary(max_size=200))
def test_decoders_raise_only_stamp_errors(data):
    for decode in (lambda d: SenderPacket.unpack(d), lambda d: SenderPacket.unpack(d, KEY),
                   lambda d: ReflectorPacket.unpack(d), lambda d: ReflectorPacket.unpack(d, KEY),
                   lambda d: ReturnPath.from_tlv(Tlv(10, d[:0xFFFF]))):
        try:
            decode(data)
        except StampError:
            pass
    parsed = parse(data)
    again = parsed.pack()  # lenient parsing keeps every octet; only a cut-short TLV gains the M flag
    assert len(again) == len(data) and sum(a != b for a, b in zip(again, data, strict=True)) <= 1


def test_socket_loop_survives_a_fuzz_storm():
    """Thousands of bad packets interleaved with good ones on a real socket: every good one is answered."""
    rng = random.Random(8762)
    with Reflector(ReflectorConfig(bind="::1", port=0, key=KEY)) as r:
        client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        client.bind(("::1", 0))
        client.settimeout(0.05)
        good_sent, answered = 0, set()
        bad = 0
        for i in range(3000):
            if i % 30 == 0:
                seq = 1_000_000 + i
                client.sendto(SenderPacket(seq, 1).pack(KEY), r.address)
                good_sent += 1
            else:
                choice = rng.random()
                if choice < 0.3:
                    payload = rng.randbytes(rng.randrange(0, 200))
                elif choice < 0.6:
                    payload = SenderPacket(i, 2).pack(b"wrong-key-wrong-key-wrong-key!!!")
                else:
                    payload = bytearray(SenderPacket(i, 3, tlvs=TlvList((extra_padding(20),))).pack(KEY))
                    payload[rng.randrange(len(payload))] ^= 0xFF
                    payload = bytes(payload[:rng.randrange(len(payload) + 1)])
                client.sendto(payload, r.address)
                bad += 1
            if i % 200 == 0:
                time.sleep(0.01)  # let the loop breathe: we test robustness, not throughput
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(answered) < good_sent:
            try:
                data = client.recv(2000)
            except socket.timeout:
                continue
            answered.add(ReflectorPacket.unpack(data, KEY).sender_seq)
        client.close()
        time.sleep(0.1)
    stats = r.stats()  # after close(): the loop thread has finished counting
    assert len(answered) == good_sent
    assert stats.internal_errors == 0
    assert stats.received == good_sent + bad
    assert stats.dropped_malformed + stats.dropped_auth >= bad - stats.reflected + good_sent
    assert stats.dropped_auth > 0 and stats.dropped_malformed > 0
