"""The eBPF Session-Reflector against the socket reflector: the same hand-built test packets, the same replies.

Two namespaces with random names, a sender S and a reflector R, one veth
between them. The test builds every test packet as a whole Ethernet frame
(IPv6, optionally an SRH, UDP with a full checksum, the STAMP packet) and
sends it from an AF_PACKET socket in S, so that it reaches both reflectors
byte for byte the same; it captures the replies, as frames, from another
AF_PACKET socket in S. Each reply must be a valid frame (its UDP checksum
verifies) and equal, octet for octet, to the socket reflector's reply to the
same packet, except for the two timestamps (Timestamp and Receive Timestamp)
and what follows from them (the UDP checksum, the HMAC), and the IPv6 flow
label (the socket path's kernel sets an automatic one, the program sends 0).

The eBPF reflector runs attached at tc ingress, in generic XDP, and in native
XDP (with an XDP program on the peer veth, without which veth drops XDP_TX
frames: checked too). Its counters must show which packets the kernel
answered and which it passed up, by reason, and the passed ones must have
been answered by user space (the same replies). Needs root, the compiled
object (./setup.sh), and the test's own namespaces, which are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import secrets
import socket
import struct
import subprocess
import sys
import time

import pytest
from netns_support import skip_reason

from srv6pm import bpf
from srv6pm import netns as nsutil
from srv6pm.stamp import ebpf, reflector as reflector_mod
from srv6pm.stamp.backends import BackendUnavailable, make_reflector, open_reflector
from srv6pm.stamp.packet import ReflectorPacket, SenderPacket
from srv6pm.stamp.reflector import ReflectorConfig, ReflectorStats
from srv6pm.stamp.srh import SegmentRoutingHeader
from srv6pm.stamp.timestamp import ClockState, ErrorEstimate, TimestampFormat, decode, encode
from srv6pm.stamp.tlv import (
    FLAG_M, ClassOfService, ControlCode, DestinationNodeAddress, DirectMeasurement, ReturnAddress, ReturnPath, SrMplsLabelStack, Srv6SegmentList,
    Tlv, TlvList, TlvType, extra_padding, hmac_placeholder,
)

_REASON = skip_reason() or (None if ebpf.OBJECT.exists() else f"{ebpf.OBJECT} is not built (./setup.sh)")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

SENDER = "fd5e:1::1"
REFLECTOR = "fd5e:1::2"
WAYPOINT = "fd5e:9::1"      # another address of S: a reply through it is SRv6-routed back to SENDER
ELSEWHERE = "fd5e:7::1"     # a forward segment the test packets claim to have visited
SPORT = 40862
PORT = 862
KEY = bytes(range(32))
ETH_P_IPV6 = 0x86DD
PACKET_HOST = 0
PACKET_OTHERHOST = 3
HOP_LIMIT = 61              # as if three routers had forwarded the test packets
CLOCK = ClockState(synchronized=True, error_ns=1500, tai_utc=37)  # the Error Estimate both paths must use


# -- the network --------------------------------------------------------------------------

class Net:
    def __init__(self, tag: str):
        self.s, self.r = f"tes{tag}", f"ter{tag}"
        self.s_if, self.r_if = f"ves{tag}", f"ver{tag}"

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def sysctl(self, ns: str, *settings: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", *settings], check=True)

    def build(self) -> None:
        self.ip("netns", "add", self.s)
        self.ip("netns", "add", self.r)
        self.ip("link", "add", self.s_if, "netns", self.s, "type", "veth", "peer", "name", self.r_if, "netns", self.r)
        for ns, dev, addr in ((self.s, self.s_if, SENDER), (self.r, self.r_if, REFLECTOR)):
            self.ip("-n", ns, "link", "set", "lo", "up")
            self.ip("-n", ns, "link", "set", dev, "up")
            self.ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        self.ip("-n", self.s, "addr", "add", f"{WAYPOINT}/128", "dev", "lo")
        self.ip("-n", self.r, "-6", "route", "add", "fd5e:9::/64", "via", SENDER, "dev", self.r_if)
        self.sysctl(self.r, "net.ipv6.conf.all.forwarding=1")
        for ns, dev in ((self.s, self.s_if), (self.r, self.r_if)):
            self.sysctl(ns, "net.ipv6.conf.all.seg6_enabled=1", f"net.ipv6.conf.{dev}.seg6_enabled=1")
        with nsutil.NetnsThread(self.s) as t:
            self.s_index = t.call(socket.if_nametoindex, self.s_if)
            self.s_mac = _mac(t, self.s_if)
        with nsutil.NetnsThread(self.r) as t:
            self.r_mac = _mac(t, self.r_if)
            t.call(_no_tx_checksum_offload, self.r_if)
        # both neighbours known for good, so that no test packet meets an unresolved one
        for ns, dev, addr, mac in ((self.s, self.s_if, REFLECTOR, self.r_mac), (self.r, self.r_if, SENDER, self.s_mac)):
            self.ip("-n", ns, "neigh", "replace", addr, "lladdr", mac.hex(":"), "dev", dev, "nud", "permanent")

    def teardown(self) -> None:
        for ns in (self.s, self.r):
            if nsutil.exists(ns):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _no_tx_checksum_offload(ifname: str) -> None:
    """Make the socket path write whole UDP checksums on ``ifname`` (a veth hands partial, offloaded ones to
    its peer, which the test could not verify on the wire)."""
    from pyroute2.ethtool import Ethtool
    with contextlib.closing(Ethtool()) as tool:
        features = tool.get_features(ifname)
        for name in ("tx-checksum-ip-generic", "tx-checksum-ipv6"):
            if name in features.features:
                features.features[name].enable = False
        tool.set_features(ifname, features)
        assert not tool.get_features(ifname).features["tx-checksum-ip-generic"].enable


def _mac(thread: nsutil.NetnsThread, ifname: str) -> bytes:
    def read() -> bytes:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            return s.getsockname()[4]
    return thread.call(read)


@pytest.fixture(scope="module")
def net():
    n = Net(secrets.token_hex(3))
    try:
        n.build()
        yield n
    finally:
        n.teardown()
    assert not nsutil.exists(n.s) and not nsutil.exists(n.r)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    """One kernel clock state for both paths, so that their Error Estimates can be compared."""
    monkeypatch.setattr(reflector_mod, "local_clock", lambda: CLOCK)
    monkeypatch.setattr(ebpf, "local_clock", lambda: CLOCK)


# -- frames -------------------------------------------------------------------------------

def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def udp_checksum(src: str, dst: str, udp: bytes) -> int:
    """The UDP checksum of ``udp`` (its checksum field zero) between ``src`` and final destination ``dst``."""
    pseudo = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
              + struct.pack("!IxxxB", len(udp), 17))
    value = 0xFFFF - _sum16(pseudo + udp)
    return value or 0xFFFF


def frame(net: Net, payload: bytes, *, forward: tuple[str, ...] = (), checksum: str = "full",
          sport: int = SPORT) -> bytes:
    """A test packet from SENDER:sport to REFLECTOR:PORT as S sends it on the wire.

    ``forward``: an SRH (Segments Left 0) listing the segments visited before the reflector.
    ``checksum``: "full", "zero" or "bad".
    """
    udp = struct.pack("!HHHH", sport, PORT, 8 + len(payload), 0) + payload
    value = {"full": udp_checksum(SENDER, REFLECTOR, udp), "zero": 0}.get(checksum)
    if value is None:
        value = udp_checksum(SENDER, REFLECTOR, udp) ^ 0x0101
    udp = udp[:6] + struct.pack("!H", value) + udp[8:]
    srh = b""
    if forward:
        header = SegmentRoutingHeader((ipaddress.IPv6Address(REFLECTOR), *map(ipaddress.IPv6Address, forward)), 0,
                                      next_header=17)
        srh = header.pack()
    ip6 = (struct.pack("!IHBB", 6 << 28, len(srh) + len(udp), 43 if srh else 17, HOP_LIMIT)
           + ipaddress.IPv6Address(SENDER).packed + ipaddress.IPv6Address(REFLECTOR).packed)
    return net.r_mac + net.s_mac + struct.pack("!H", ETH_P_IPV6) + ip6 + srh + udp


def split(reply: bytes) -> dict:
    """The parts of a captured reply frame; asserts it is IPv6 [+ SRH] + UDP with a valid checksum."""
    ip6 = reply[14:54]
    assert reply[12:14] == struct.pack("!H", ETH_P_IPV6)
    rest = reply[54:]
    srh = b""
    final = socket.inet_ntop(socket.AF_INET6, ip6[24:40])
    if ip6[6] == 43:
        size = (rest[1] + 1) * 8
        srh, rest = rest[:size], rest[size:]
        final = socket.inet_ntop(socket.AF_INET6, srh[8:24])  # Segment List[0]
    src = socket.inet_ntop(socket.AF_INET6, ip6[8:24])
    check = struct.unpack("!H", rest[6:8])[0]
    assert udp_checksum(src, final, rest[:6] + b"\0\0" + rest[8:]) == check, "the reply's UDP checksum verifies"
    return {"eth": reply[:14], "ip6": ip6, "srh": srh, "udp": rest[:8], "stamp": rest[8:]}


def checksum_ok(reply: bytes) -> bool:
    try:
        split(reply)
    except AssertionError:
        return False
    return True


def comparable(reply: bytes | None, *, authenticated: bool = False):
    """A reply with what may differ between the two paths taken out (see the module docstring)."""
    if reply is None:
        return None
    parts = split(reply)
    ip6 = bytearray(parts["ip6"])
    ip6[1] &= 0xF0
    ip6[2] = ip6[3] = 0                                   # flow label
    udp = parts["udp"][:6]                                # checksum
    stamp = bytearray(parts["stamp"])
    if authenticated:
        stamp[16:24] = stamp[32:40] = bytes(8)            # Timestamp, Receive Timestamp
        stamp[96:112] = bytes(16)                         # HMAC over them
    else:
        stamp[4:12] = stamp[16:24] = bytes(8)
    return parts["eth"], bytes(ip6), parts["srh"], udp, bytes(stamp)


class Wire:
    """S's side: send frames, capture the reflector's replies (to SPORT and SPORT + 1)."""

    def __init__(self, net: Net):
        with nsutil.NetnsThread(net.s) as t:
            self.tx = t.call(socket.socket, socket.AF_PACKET, socket.SOCK_RAW)
            self.rx = t.call(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
            self.sinks = [t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(2)]
        self.tx.bind((net.s_if, 0))
        self.rx.bind((net.s_if, ETH_P_IPV6))
        for port, sink in enumerate(self.sinks, SPORT):  # the replies' ports are open: no ICMP back to R
            sink.bind((SENDER, port))
            sink.setblocking(False)

    def close(self) -> None:
        for s in (self.tx, self.rx, *self.sinks):
            s.close()

    def exchange(self, data: bytes, timeout: float = 0.5, sport: int = SPORT,
                 pkttypes: tuple[int, ...] = (PACKET_HOST,)) -> bytes | None:
        """Send ``data``; the first reply frame to SENDER:sport (None if none within ``timeout``) of one of
        ``pkttypes`` (PACKET_HOST: addressed to S's MAC)."""
        self.rx.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.rx.recv(65536)
        self.tx.send(data)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.rx.settimeout(left)
            try:
                got, address = self.rx.recvfrom(65536)
            except socket.timeout:
                break
            if address[2] in pkttypes and _is_reply(got, sport):
                return got
        return None


def _is_reply(got: bytes, sport: int) -> bool:
    if len(got) < 62 or got[12:14] != struct.pack("!H", ETH_P_IPV6):
        return False
    off = 54
    if got[20] == 43:
        off += (got[55] + 1) * 8
    elif got[20] != 17:
        return False
    return got[off:off + 4] == struct.pack("!HH", PORT, sport)


# -- the test packets ---------------------------------------------------------------------

def stamp(seq: int = 1, tlvs=(), *, ssid: int = 0, rest: bytes = b"", key: bytes | None = None) -> bytes:
    ee = ErrorEstimate(True, TimestampFormat.NTP, 10, 3)
    return SenderPacket(seq, 0x0102030405060708, ee, ssid, TlvList(tuple(tlvs), rest)).pack(key)


def _rp(*parts, flags: int = 0x80) -> Tlv:
    return ReturnPath.build(*parts).to_tlv(flags)


def _segments(*addrs: str) -> Srv6SegmentList:
    return Srv6SegmentList(tuple(map(ipaddress.IPv6Address, addrs)))


def _raw_tlv(flags: int, kind: int, length: int, value: bytes) -> bytes:
    return struct.pack("!BBH", flags, kind, length) + value


# name -> (payload, frame options, who answers: "kernel", "user" or None (no reply), why it is passed up)
CASES = {
    "base": (stamp(), {}, "kernel", None),
    "padded 64": (stamp(tlvs=[extra_padding(20)]), {}, "kernel", None),
    "padded to the MTU": (stamp(tlvs=[extra_padding(1452 - 44)]), {}, "kernel", None),
    "flags of every kind": (stamp(tlvs=[
        DestinationNodeAddress(ipaddress.IPv6Address(REFLECTOR)).to_tlv(),
        DestinationNodeAddress(ipaddress.IPv6Address(ELSEWHERE)).to_tlv(),
        DestinationNodeAddress(ipaddress.IPv4Address("192.0.2.1")).to_tlv(),
        Tlv(20, b"abc", flags=0x80 | FLAG_M | 0x05),
        Tlv(TlvType.EXTRA_PADDING, bytes(7), flags=0x9F)]), {}, "kernel", None),
    "return path through SRv6": (stamp(tlvs=[_rp(_segments(WAYPOINT, SENDER))]), {}, "kernel", None),
    "return path of the waypoint only": (stamp(tlvs=[_rp(_segments(WAYPOINT))]), {}, "kernel", None),
    "return path with a label stack": (stamp(tlvs=[_rp(_segments(WAYPOINT), SrMplsLabelStack((1600,)))]), {},
                                       "kernel", None),
    "control code: no reply": (stamp(tlvs=[_rp(ControlCode(0))]), {}, None, None),
    "control code: reply": (stamp(tlvs=[_rp(_segments(WAYPOINT), ControlCode(1))]), {}, "kernel", None),
    "forward SRH": (stamp(tlvs=[extra_padding(16)]), {"forward": (ELSEWHERE,)}, "kernel", None),
    "a TLV cut short": (stamp(tlvs=[extra_padding(8)], rest=_raw_tlv(0x80, 2, 40, bytes(8))), {}, "kernel", None),
    "a first TLV header that does not fit": (stamp(rest=_raw_tlv(0x80, 2, 40, bytes(8))), {}, "user",
                                             "passed_tlv"),
    "non-zero padding": (stamp(rest=bytes([0xA5]) * 20), {}, "user", "passed_tlv"),
    "class of service": (stamp(tlvs=[ClassOfService(46).to_tlv()]), {}, "user", "passed_tlv"),
    "direct measurement": (stamp(tlvs=[DirectMeasurement(1).to_tlv()]), {}, "user", "passed_tlv"),
    "zero padding": (stamp(rest=bytes(60)), {}, "kernel", None),
    "a fragment after a TLV": (stamp(tlvs=[extra_padding(8)], rest=b"\x01\x02"), {}, "kernel", None),
    "two return paths": (stamp(tlvs=[_rp(_segments(WAYPOINT)), _rp(_segments(ELSEWHERE))]), {}, "kernel", None),
    "an HMAC TLV": (stamp(tlvs=[extra_padding(8), hmac_placeholder()]), {}, "user", "passed_tlv"),
    "a return address": (stamp(tlvs=[_rp(ReturnAddress(ipaddress.IPv6Address(WAYPOINT)))]), {}, "user",
                         "passed_tlv"),
    "a malformed TLV": (stamp(tlvs=[Tlv(TlvType.DESTINATION_NODE_ADDRESS, bytes(5)), extra_padding(8)]), {},
                        "user", "passed_malformed"),
    "seventeen TLVs": (stamp(tlvs=[extra_padding(4)] * 17), {}, "user", "passed_tlv"),
    "nine return segments": (stamp(tlvs=[_rp(_segments(*[f"fd5e:9::{i}" for i in range(1, 10)]))]), {}, "user",
                             "passed_tlv"),
    "too short": (stamp()[:30], {}, "user", "passed_malformed"),  # TWAMP-Light: a 44-octet reply
    "zero checksum": (stamp(), {"checksum": "zero"}, None, "passed_checksum"),
}
KERNEL_CASES = [name for name, case in CASES.items() if case[2] == "kernel"]


def passed_by_reason() -> dict[str, int]:
    out: dict[str, int] = {}
    for _payload, _opts, _who, why in CASES.values():
        if why:
            out[why] = out.get(why, 0) + 1
    return out


@contextlib.contextmanager
def running(net: Net, backend: str, attach: str = "auto", **config):
    r = make_reflector(ReflectorConfig(**{"bind": REFLECTOR, "port": PORT, "netns": net.r, **config}), backend,
                       instance=f"t{secrets.token_hex(4)}", attach=attach)
    open_reflector(r, "--backend socket")
    r.start()
    try:
        yield r
    finally:
        r.close()


@contextlib.contextmanager
def peer_xdp(net: Net):
    """An XDP program on S's veth (the reflector's, with nothing configured: it passes everything), which
    native XDP on R's veth needs for its XDP_TX frames to arrive."""
    obj = bpf.BpfObject(ebpf.OBJECT)
    thread = nsutil.NetnsThread(net.s)
    try:
        thread.call(bpf.xdp_attach, net.s_index, obj.program_fd("stamp_reflect_xdp"), "native")
        yield
    finally:
        thread.call(bpf.xdp_detach, net.s_index, "native")
        thread.close()
        obj.close()


@dataclasses.dataclass
class Outcome:
    replies: dict             # case name -> the reply frame, or None
    stats: ReflectorStats     # both paths together
    kernel: dict              # the program's counters ({} for the socket backend)


def exchange_all(net: Net, backend: str, attach: str, config: dict, packets) -> Outcome:
    """Run a reflector and send ``packets`` ((name, frame, timeout, source port)) one after the other."""
    wire = Wire(net)
    try:
        with running(net, backend, attach, **config) as r:
            got = {name: wire.exchange(data, timeout, sport) for name, data, timeout, sport in packets}
            time.sleep(0.05)  # the socket loop has counted its last packet
            kernel = r.kernel_counters() if backend == "ebpf" else {}
            return Outcome(got, r.stats(), kernel)
    finally:
        wire.close()


def replies(net: Net, cases: dict, backend: str, attach: str = "auto", **config) -> Outcome:
    return exchange_all(net, backend, attach, config, [
        (name, frame(net, payload, **opts), 0.5 if who else 0.25, SPORT)
        for name, (payload, opts, who, _why) in cases.items()])


@pytest.fixture(scope="module")
def socket_replies(net):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reflector_mod, "local_clock", lambda: CLOCK)
        return replies(net, CASES, "socket")


def _check_times(reply: bytes, fmt: TimestampFormat, before_ns: int, after_ns: int) -> None:
    p = ReflectorPacket.unpack(split(reply)["stamp"])
    t2 = decode(p.receive_timestamp, fmt)
    t3 = decode(p.timestamp, fmt)
    assert before_ns - 1_000_000 <= t2 <= t3 <= after_ns + 1_000_000, (before_ns, t2, t3, after_ns)
    assert t3 - t2 < 1_000_000, "the kernel answers within a millisecond"
    # exactly what srv6pm.stamp.timestamp makes of those instants (NTP: rounded to the nearest 2**-32 s)
    assert (encode(t2, fmt), encode(t3, fmt)) == (p.receive_timestamp, p.timestamp)
    assert p.error_estimate == ErrorEstimate.for_error(CLOCK.error_ns, True, fmt)
    assert p.sender_ttl == HOP_LIMIT


def test_the_socket_reflector_answers_as_expected(socket_replies):
    got = socket_replies.replies
    assert {name for name, reply in got.items() if reply is not None} == {
        name for name, case in CASES.items() if case[2] is not None}
    assert socket_replies.stats.kernel_reflected == 0
    srh = split(got["return path through SRv6"])["srh"]
    # Segment List [SENDER, WAYPOINT], Segments Left 1: the IPV6_RTHDR the kernel builds
    assert srh == SegmentRoutingHeader((ipaddress.IPv6Address(SENDER), ipaddress.IPv6Address(WAYPOINT)), 1,
                                       next_header=17).pack()


def test_the_socket_reflector_fills_in_what_the_kernel_passes_up(socket_replies):
    got = {name: split(socket_replies.replies[name]) for name in (
        "too short", "non-zero padding", "a first TLV header that does not fit", "class of service",
        "direct measurement")}
    assert len(got["too short"]["stamp"]) == 44
    assert got["non-zero padding"]["stamp"][44:] == bytes([0xA5]) * 20
    assert got["a first TLV header that does not fit"]["stamp"][44:] == _raw_tlv(0x80, 2, 40, bytes(8))
    cos = got["class of service"]
    assert cos["stamp"][44:] == bytes.fromhex("00040004") + (46 << 10).to_bytes(2, "big") + bytes(2)
    assert (cos["ip6"][0] & 0x0F) << 4 | cos["ip6"][1] >> 4 == 46 << 2  # the reply's Traffic Class: DSCP1
    assert got["direct measurement"]["stamp"][44:] == bytes.fromhex("0005000c" "00000001" "00000001" "00000001")


@pytest.mark.parametrize("attach", ["tc", "xdp-generic", "xdp"])
def test_kernel_replies_equal_the_socket_reflectors(net, socket_replies, attach):
    expected = socket_replies.replies
    before = time.time_ns()
    with peer_xdp(net) if attach == "xdp" else contextlib.nullcontext():
        out = replies(net, CASES, "ebpf", attach)
    after = time.time_ns()
    got = out.replies
    assert [name for name, reply in got.items() if reply is not None and not checksum_ok(reply)] == []
    for name in CASES:
        assert comparable(got[name]) == comparable(expected[name]), name
    k = out.kernel
    passed = passed_by_reason()
    assert k["reflected"] == len(KERNEL_CASES)
    assert k["no_reply_requested"] == 1
    assert k["return_path_srv6"] == 4
    assert {name: v for name, v in k.items() if name.startswith("passed_") and v} == passed
    assert k["received"] == len(CASES)
    stats = out.stats
    assert stats.kernel_reflected == len(KERNEL_CASES)
    assert stats.reflected == len([c for c in CASES.values() if c[2]])  # both paths together
    assert stats.kernel_passed == sum(passed.values())
    for name in KERNEL_CASES:
        _check_times(got[name], TimestampFormat.NTP, before, after)


def test_native_xdp_on_veth_needs_a_program_on_the_peer(net):
    """Documented in srv6pm.stamp.ebpf: XDP_TX frames are dropped by a veth whose peer runs no XDP."""
    out = replies(net, {"base": CASES["base"]}, "ebpf", "xdp")
    assert out.replies["base"] is None and out.kernel["reflected"] == 1


STATEFUL = [  # (name, payload, source port offset): one session's numbers run through both paths
    ("a0", stamp(10), 0), ("a1", stamp(11), 0), ("a2 (user space)", stamp(12, [hmac_placeholder()]), 0),
    ("a3", stamp(13), 0), ("b0", stamp(10), 1), ("a4", stamp(14), 0), ("ssid 5", stamp(10, ssid=5), 0)]


def _stateful(net: Net, backend: str, attach: str = "auto") -> Outcome:
    return exchange_all(net, backend, attach, {"stateful": True}, [
        (name, frame(net, payload, sport=SPORT + offset), 0.5, SPORT + offset) for name, payload, offset in STATEFUL])


@pytest.mark.parametrize("attach", ["tc", "xdp-generic"])
def test_stateful_numbers_are_one_sequence_across_both_paths(net, attach):
    expected = _stateful(net, "socket").replies
    out = _stateful(net, "ebpf", attach)
    seqs = {name: ReflectorPacket.unpack(split(reply)["stamp"]).seq for name, reply in out.replies.items()}
    assert seqs == {"a0": 0, "a1": 1, "a2 (user space)": 2, "a3": 3, "b0": 0, "a4": 4, "ssid 5": 0}
    for name, *_ in STATEFUL:
        assert comparable(out.replies[name]) == comparable(expected[name]), name
    assert out.kernel["passed_tlv"] == 1 and out.stats.kernel_reflected == 6


def test_authenticated_mode_is_answered_in_user_space(net):
    payload = stamp(3, [extra_padding(8), hmac_placeholder()], key=KEY)
    cases = {"authenticated": (payload, {}, "user", "passed_authenticated")}
    expected = replies(net, cases, "socket", key=KEY).replies["authenticated"]
    out = replies(net, cases, "ebpf", "tc", key=KEY)
    got = out.replies["authenticated"]
    assert comparable(got, authenticated=True) == comparable(expected, authenticated=True)
    ReflectorPacket.unpack(split(got)["stamp"], KEY)  # its HMAC verifies under the key
    assert out.kernel["passed_authenticated"] == 1 and out.stats.kernel_reflected == 0


def test_ptp_timestamps(net):
    cases = {"base": CASES["base"]}
    expected = replies(net, cases, "socket", timestamp_format=TimestampFormat.PTP).replies
    before = time.time_ns()
    out = replies(net, cases, "ebpf", "tc", timestamp_format=TimestampFormat.PTP)
    after = time.time_ns()
    assert comparable(out.replies["base"]) == comparable(expected["base"])
    _check_times(out.replies["base"], TimestampFormat.PTP, before, after)
    assert out.stats.kernel_reflected == 1


def test_bound_to_any_address(net):
    cases = {"base": CASES["base"], "padded 64": CASES["padded 64"]}
    expected = replies(net, cases, "socket", bind="::").replies
    out = replies(net, cases, "ebpf", "tc", bind="::")
    for name in cases:
        assert comparable(out.replies[name]) == comparable(expected[name]), name
    assert out.stats.kernel_reflected == 2


def test_a_bad_checksum(net):
    """No delivered reply either way. XDP passes the packet up (the stack drops it); tc answers with a
    reply whose checksum is wrong in the same way, which the sender's stack drops: the same loss."""
    cases = {"bad checksum": (stamp(), {"checksum": "bad"}, None, "passed_checksum")}
    for backend, attach in (("socket", "auto"), ("ebpf", "xdp-generic")):
        assert replies(net, cases, backend, attach).replies["bad checksum"] is None, backend
    reply = replies(net, cases, "ebpf", "tc").replies["bad checksum"]
    with pytest.raises(AssertionError, match="checksum verifies"):
        split(reply)


def test_no_program_is_left_behind(net):
    with running(net, "ebpf", "tc") as r:
        pins = r._pins
        assert pins.exists()
    assert not pins.exists()
    with nsutil.NetnsThread(net.r) as t:
        out = t.call(subprocess.run, ["tc", "filter", "show", "dev", net.r_if, "ingress"], capture_output=True,
                     text=True)
        index = t.call(socket.if_nametoindex, net.r_if)
        assert t.call(bpf.xdp_program, index, "native") == 0
        assert t.call(bpf.xdp_program, index, "generic") == 0
    assert "stamp_reflect" not in out.stdout


def test_an_ipv4_bind_is_refused(net):
    with pytest.raises(ValueError, match="answers IPv6 test packets"):
        make_reflector(ReflectorConfig(bind="127.0.0.1", port=PORT, netns=net.r), "ebpf", instance="x")


def test_missing_btf_is_one_clear_error(net, monkeypatch):
    monkeypatch.setattr(bpf, "BTF_PATH", "/nonexistent/btf/vmlinux")
    reflector = make_reflector(ReflectorConfig(bind=REFLECTOR, port=PORT, netns=net.r), "ebpf", instance="x")
    with pytest.raises(BackendUnavailable) as info:
        open_reflector(reflector, "--backend socket")
    assert str(info.value) == ("the ebpf reflector cannot run here: the kernel has no BTF (/nonexistent/btf/vmlinux "
                               "is missing): the eBPF programs are compiled against the running kernel's BTF; "
                               "choose the socket reflector instead (--backend socket)")


def test_command_line_runs_the_ebpf_backend_by_default(net):
    """``srv6pm stamp reflector`` without --backend: the kernel answers a plain UDP socket's test packets
    (sent with offloaded checksums, as any local socket over veth does: tc is auto's choice on veth)."""
    port = 8629
    proc = subprocess.Popen([sys.executable, "-m", "srv6pm.stamp", "reflector", "--bind", REFLECTOR,
                             "--port", str(port), "--netns", net.r, "--duration", "3"],
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert f"listening on [{REFLECTOR}]:{port} in network namespace {net.r}" in first, first
        assert "ebpf backend (tc on 1 interface)" in first
        with nsutil.NetnsThread(net.s) as t:
            sock = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)
        with sock:
            sock.settimeout(2)
            for seq in range(3):
                sock.sendto(stamp(seq, [extra_padding(20)]), (REFLECTOR, port))
                assert ReflectorPacket.unpack(sock.recv(2048)).sender_seq == seq
        report = json.loads(proc.stderr.read().strip().splitlines()[-1])
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert report["reflector"]["reflected"] == 3 and report["reflector"]["kernel_reflected"] == 3
    assert report["kernel"]["received"] == 3 and report["kernel"]["passed_checksum"] == 0


def test_a_routing_change_reaches_the_kernel_path_at_once(net):
    """The program caches reply routes; a neighbour's new MAC address must be in the very next reply."""
    other = "02:00:5e:00:53:01"
    wire = Wire(net)
    data = frame(net, stamp())
    try:
        with running(net, "ebpf", "tc") as r:
            assert wire.exchange(data)[:6] == net.s_mac
            net.ip("-n", net.r, "neigh", "replace", SENDER, "lladdr", other, "dev", net.r_if, "nud", "permanent")
            time.sleep(0.1)
            got = wire.exchange(data, pkttypes=(PACKET_HOST, PACKET_OTHERHOST))
            assert got is not None and got[:6].hex(":") == other
            net.ip("-n", net.r, "neigh", "replace", SENDER, "lladdr", net.s_mac.hex(":"), "dev", net.r_if, "nud",
                   "permanent")
            time.sleep(0.1)
            assert wire.exchange(data)[:6] == net.s_mac
            assert r.kernel_counters()["reflected"] == 3
    finally:
        wire.close()
        net.ip("-n", net.r, "neigh", "replace", SENDER, "lladdr", net.s_mac.hex(":"), "dev", net.r_if, "nud",
               "permanent")


REFUSED = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); }
    settings SEC(".maps"), sessions SEC(".maps"), counters SEC(".maps"), hop_limits SEC(".maps");
SEC("xdp")
int stamp_reflect_xdp(struct xdp_md *ctx)
{
    unsigned char *data = (void *)(long)ctx->data;
    return data[60];   /* no bounds check against data_end: the verifier must refuse this */
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_a_refused_program_is_one_clear_error_and_leaves_nothing(net, tmp_path):
    src = tmp_path / "refused.bpf.c"
    src.write_text(REFUSED)
    (obj,) = bpf.build([src], tmp_path / "build")
    instance = "t" + secrets.token_hex(4)
    reflector = ebpf.EbpfReflector(ReflectorConfig(bind=REFLECTOR, port=PORT, netns=net.r), instance=instance,
                                   obj_path=obj)
    with pytest.raises(BackendUnavailable) as info:
        open_reflector(reflector, "--backend socket")
    first, *log = str(info.value).splitlines()
    assert first.startswith("the ebpf reflector cannot run here: ") and first.endswith(
        "choose the socket reflector instead (--backend socket)")
    assert any("invalid access to packet" in line for line in log)  # the verifier's own words
    assert not (ebpf.PIN_ROOT / instance).exists()
