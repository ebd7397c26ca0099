"""The alternate-marking eBPF programs run in the kernel on hand-built packets (BPF_PROG_TEST_RUN).

No network is built: the programs are loaded with libbpf, their maps filled by
:class:`~srv6pm.exporter.ebpf.EbpfTable` (not attached to any interface), and
each program runs on packets built here byte by byte from RFC 8754 (SRH) and
RFC 9343 (the Alternate-Marking option). Needs root and the compiled object.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import struct

import pytest

from srv6pm import bpf
from srv6pm.exporter import ebpf
from srv6pm.exporter.dataplane import DataplaneError
from srv6pm.exporter.ebpf import EbpfTable, Point

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not ebpf.OBJECT.exists(),
                                reason="needs root and the compiled eBPF object (./setup.sh)")

SRC, DST = "fd00:1::2", "fd00:4::100"
OUTER_SRC, SEGMENTS = "fcff:1::1", ["fcff:2::1", "fcff:4::100"]
TC_NEXT = 0xFFFFFFFF  # the programs' verdict, TC_ACT_UNSPEC = TCX_NEXT (-1) as test_run's u32: the hook goes on
ETH = bytes(12) + b"\x86\xdd"


def a(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def ipv6(src: str, dst: str, nh: int, payload: bytes, tclass: int = 0, flow_label: int = 0) -> bytes:
    first = 6 << 28 | tclass << 20 | flow_label
    return struct.pack("!IHBB", first, len(payload), nh, 64) + a(src) + a(dst) + payload


def inner_packet(dscp: int = 46) -> bytes:
    udp = struct.pack("!HHHH", 40000, 9, 8 + 20, 0x1234) + b"p" * 20
    return ipv6(SRC, DST, 17, udp, tclass=dscp << 2, flow_label=0xABCDE)


PADN = bytes([4, 2, 0, 0]) * 2  # RFC 8754 2.1.1: the 8 octets the exporter's encap routes reserve (dataplane ebpf)


def srh(next_header: int = 41, segments: list[str] = SEGMENTS, tlvs: bytes = b"") -> bytes:
    segs = b"".join(a(s) for s in reversed(segments))  # the Segment List is in reverse path order
    return struct.pack("!BBBBBBH", next_header, (len(segs) + len(tlvs)) // 8, 4, len(segments) - 1,
                       len(segments) - 1, 0, 0) + segs + tlvs


def encapsulated(inner: bytes, segments: list[str] = SEGMENTS, tlvs: bytes = b"") -> bytes:
    """What the ingress sends after H.Encaps: outer IPv6 (NH 43) + SRH (NH 41) + the inner packet."""
    return ETH + ipv6(OUTER_SRC, segments[0], 43, srh(segments=segments, tlvs=tlvs) + inner)


def doh(flowmon_id: int, colour: int) -> bytes:
    """RFC 9343 §2 in an 8-octet Destination Options header: NH 43, Hdr Ext Len 0, type 0x12, length 4, data."""
    return bytes([43, 0, 0x12, 4]) + struct.pack("!I", flowmon_id << 12 | colour << 11)


def marked(inner: bytes, flowmon_id: int, colour: int, segments: list[str] = SEGMENTS, tlvs: bytes = b"") -> bytes:
    return ETH + ipv6(OUTER_SRC, segments[0], 60, doh(flowmon_id, colour) + srh(segments=segments, tlvs=tlvs) + inner)


@pytest.fixture
def table():
    root = ebpf.PIN_ROOT.parent / f"srv6pm-test-{secrets.token_hex(3)}"
    t = EbpfTable("t", None, pin_root=root, attach=False)
    yield t
    t.remove()
    bpf.unpin(root)


def counts(t: EbpfTable, colour: int) -> dict:
    return {role: r.counts for role, r in t.read_all(colour).items() if r.counts}


def test_mark_inserts_the_option_and_leaves_the_inner_packet_alone(table):
    table.install([Point("f1", "ingress", 0xABCDE, 0, f"{SRC}/128", "fd00:4::/64")], colour=1)
    inner = inner_packet()
    run = bpf.test_run(table.program_fd("altmark_mark"), encapsulated(inner))
    assert run.retval == TC_NEXT
    assert run.packet == marked(inner, 0xABCDE, 1)
    assert counts(table, 1) == {"ingress": {"f1": (1, len(inner))}}
    assert counts(table, 0) == {"ingress": {"f1": (0, 0)}}


def test_mark_uses_the_colour_of_the_moment(table):
    table.install([Point("f1", "ingress", 7, 0, f"{SRC}/128", f"{DST}/128")], colour=0)
    inner = inner_packet(dscp=0)
    assert bpf.test_run(table.program_fd("altmark_mark"), encapsulated(inner)).packet == marked(inner, 7, 0)
    table.set_colour(1)
    assert bpf.test_run(table.program_fd("altmark_mark"), encapsulated(inner)).packet == marked(inner, 7, 1)
    assert counts(table, 0)["ingress"]["f1"][0] == 1 and counts(table, 1)["ingress"]["f1"][0] == 1


def test_an_install_s_first_marked_packet_has_the_install_s_colour(table, monkeypatch):
    """A packet sent the moment the match is in the map (here, run right after that map update) is marked with the
    colour the install asked for, not the one the map had (a new map's 0): the colour is set before the match."""
    inner, firsts = inner_packet(dscp=0), []
    update = table._run

    def run_then_send(op):
        done = update(op)
        if op.map == "exact":
            firsts.append(bpf.test_run(table.program_fd("altmark_mark"), encapsulated(inner)).packet)
        return done
    monkeypatch.setattr(table, "_run", run_then_send)
    table.install([Point("f1", "ingress", 7, 0, f"{SRC}/128", f"{DST}/128")], colour=1)
    assert firsts == [marked(inner, 7, 1)]


@pytest.mark.parametrize("count", [1, 2, 3, 16])
def test_mark_in_the_reserved_octets_gives_the_same_packet(table, count):
    """With the PadN TLV that the exporter's routes reserve at the SRH's end, the SRH moves over it and the
    option takes its place: the packet is exactly the one the length-changing path makes from an SRH without
    it (same length as the packet given), for every Segment List length up to the program's 16."""
    segments = [f"fcff:{i + 2:x}::1" for i in range(count - 1)] + ["fcff:4::100"]
    table.install([Point("f1", "ingress", 0xFEDCB, 0, f"{SRC}/128", f"{DST}/128")], colour=1)
    inner = inner_packet()
    given = encapsulated(inner, segments, PADN)
    run = bpf.test_run(table.program_fd("altmark_mark"), given)
    assert run.retval == TC_NEXT
    assert run.packet == marked(inner, 0xFEDCB, 1, segments)
    assert len(run.packet) == len(given)
    assert run.packet == bpf.test_run(table.program_fd("altmark_mark"), encapsulated(inner, segments)).packet
    assert counts(table, 1) == {"ingress": {"f1": (2, 2 * len(inner))}}


@pytest.mark.parametrize("tlvs", [
    pytest.param(bytes([4, 14]) + bytes(14), id="PadN of 16"),
    pytest.param(bytes([4, 6]) + bytes(6), id="one PadN of 8"),  # outside RFC 8754's 0-5: not the reserve
    pytest.param(bytes([3, 6]) + bytes(6), id="other TLV"),
])
def test_mark_with_other_tlvs_inserts_the_header(table, tlvs):
    """TLVs other than exactly the reserved PadN stay in the SRH; the header is inserted (length + 8)."""
    table.install([Point("f1", "ingress", 9, 0, f"{SRC}/128", f"{DST}/128")], colour=0)
    inner = inner_packet()
    run = bpf.test_run(table.program_fd("altmark_mark"), encapsulated(inner, tlvs=tlvs))
    assert run.packet == marked(inner, 9, 0, tlvs=tlvs)


@pytest.mark.parametrize("packet", [
    pytest.param(encapsulated(ipv6("fd00:9::1", DST, 17, bytes(28))), id="other source"),
    pytest.param(encapsulated(ipv6("fd00:9::1", DST, 17, bytes(28)), tlvs=PADN), id="other source, reserved"),
    pytest.param(encapsulated(ipv6(SRC, "fd00:5::1", 17, bytes(28))), id="other destination"),
    pytest.param(ETH + ipv6(SRC, DST, 17, bytes(28)), id="not encapsulated"),
    pytest.param(marked(inner_packet(), 3, 0), id="marked already"),
    pytest.param(ETH + ipv6(OUTER_SRC, SEGMENTS[0], 43, srh(next_header=17) + bytes(28)), id="SRH without inner IPv6"),
    pytest.param(ETH + ipv6(OUTER_SRC, SEGMENTS[0], 43, srh()[:6]), id="truncated SRH"),
])
def test_mark_ignores_what_is_not_a_monitored_flow(table, packet):
    table.install([Point("f1", "ingress", 3, 0, f"{SRC}/128", f"{DST}/128")], colour=0)
    run = bpf.test_run(table.program_fd("altmark_mark"), packet)
    assert run.retval == TC_NEXT and run.packet == packet
    assert counts(table, 0) == {"ingress": {"f1": (0, 0)}}


def test_count_reads_flowmon_id_and_colour_from_the_option(table):
    table.install([Point("f1", "transit", 42, 1), Point("f2", "egress", 43, 2)], colour=0)
    inner = inner_packet()
    prog = table.program_fd("altmark_count")
    for packet in (marked(inner, 42, 1), marked(inner, 42, 1), marked(inner, 43, 0), marked(inner, 44, 0)):
        run = bpf.test_run(prog, packet)
        assert run.retval == TC_NEXT and run.packet == packet  # counted, never changed
    assert counts(table, 1) == {"transit": {"f1": (2, 2 * len(inner))}, "egress": {"f2": (0, 0)}}
    assert counts(table, 0) == {"transit": {"f1": (0, 0)}, "egress": {"f2": (1, len(inner))}}


def test_count_finds_the_option_after_padding(table):
    table.install([Point("f1", "transit", 5, 1)], colour=0)
    # a 16-octet Destination Options header: PadN (4 octets), the option, Pad1 x 2 ... aligned as RFC 8200 allows
    opts = bytes([1, 2, 0, 0]) + bytes([0x12, 4]) + struct.pack("!I", 5 << 12 | 1 << 11) + bytes([1, 2, 0, 0])
    header = bytes([43, 1]) + opts
    assert len(header) == 16
    inner = inner_packet()
    packet = ETH + ipv6(OUTER_SRC, SEGMENTS[0], 60, header + srh() + inner)
    bpf.test_run(table.program_fd("altmark_count"), packet)
    assert counts(table, 1) == {"transit": {"f1": (1, len(inner))}}


def test_many_flows_installed(table):
    """With thousands of other flows in the maps, the right flow is marked and counted (each repeat once)."""
    points = [Point(f"o{i}", "ingress", i + 2, 0, f"fd99::{i:x}/128", f"fd98::{i:x}/128") for i in range(2000)]
    transit = [Point(f"t{i}", "transit", 5000 + i, 1) for i in range(2000)]
    table.install([Point("f1", "ingress", 1, 0, f"{SRC}/128", f"{DST}/128"), *points, *transit], colour=0)
    inner = inner_packet()
    assert bpf.test_run(table.program_fd("altmark_mark"), encapsulated(inner)).packet == marked(inner, 1, 0)
    bpf.test_run(table.program_fd("altmark_count"), marked(inner, 5999, 1), repeat=1000)  # repeats re-run it as given
    got = counts(table, 1)["transit"]
    assert got["t999"] == (1000, 1000 * len(inner)) and sum(p for p, _ in got.values()) == 1000
    assert counts(table, 0)["ingress"]["f1"] == (1, len(inner))


OLD_LAYOUT = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, __u64);
    __type(value, __u64);
} counters0 SEC(".maps");
SEC("tc")
int touch(struct __sk_buff *skb)
{
    __u64 k = 0, *v = bpf_map_lookup_elem(&counters0, &k);
    return v ? 1 : 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_tcx_asked_for_where_the_kernel_has_none_says_what_to_use(table, monkeypatch):
    """A kernel before 6.6 (no tcx hooks, as Debian 12's 6.1) is told apart by its answer to the query:
    asking for tcx there names the hook to use instead, and nothing is attached."""
    monkeypatch.setattr(bpf, "tcx_supported", lambda ifindex=1: False)
    table.hook = "tcx"
    with pytest.raises(DataplaneError, match=r"no tcx hooks \(Linux 6.6 or later has them\): attach with hook tc"):
        table.attach()
    with pytest.raises(ValueError, match="hook must be one of auto, tcx, tc"):
        EbpfTable("t", None, hook="xdp")


def test_the_kernel_here_answers_the_tcx_query():
    """The probe itself: this kernel (6.6 or later, as the test machine's) answers BPF_PROG_QUERY for tcx."""
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) < (6, 6):
        pytest.skip("a kernel before 6.6: no tcx")
    assert bpf.tcx_supported() is True


def test_pins_of_another_layout_are_replaced_not_fatal(tmp_path):
    """A map pinned by an older object (other key/value sizes) is dropped: counters restart, loading goes on."""
    src = tmp_path / "old.bpf.c"
    src.write_text(OLD_LAYOUT)
    (obj,) = bpf.build([src], tmp_path / "build")
    root = ebpf.PIN_ROOT.parent / f"srv6pm-test-{secrets.token_hex(3)}"
    try:
        bpf.BpfObject(obj, pin_dir=root / "t", pin=("counters0",)).close()
        assert (root / "t" / "counters0").exists()
        table = EbpfTable("t", None, pin_root=root, attach=False)
        table.install([Point("f1", "transit", 9, 1)], colour=0)
        assert counts(table, 0) == {"transit": {"f1": (0, 0)}}
        table.remove()
    finally:
        bpf.unpin(root)
