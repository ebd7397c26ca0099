"""The eBPF data plane on a real SRv6 lab network: RFC 9343 marking, counting at every hop, DSCP untouched.

Builds real namespaces, veths and SRv6 routes (the lab's network code), loads
the compiled programs with libbpf, sends real UDP packets and checks exact
per-point counters, the packet's bytes on the wire (tcpdump at a transit
node, compared with a hand-built RFC 9343 vector) and the DSCP the
destination host receives. Needs root, clang-built objects (./setup.sh) and
tcpdump; every namespace and pin is removed again.

Every test runs twice: with the ingress routes the eBPF exporter makes (their
SRH ends in the reserved padding (two PadN TLVs), which ``altmark_mark`` turns into the option
without changing the packet's length) and with the lab's own routes (no
reserved octets: the program inserts the header with ``bpf_skb_adjust_room``).
The packets on the wire must be the same.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
import subprocess
import time

import pytest
from netns_support import send, skip_reason, square_plan, wait_for

from srv6pm import bpf
from srv6pm import netns as nsutil
from srv6pm.exporter import ebpf
from srv6pm.exporter.ebpf import EbpfTable, Point
from srv6pm.exporter.routes import Routes
from srv6pm.nft import Nft
from srv6pm.lab import network
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

_REASON = skip_reason() or (None if ebpf.OBJECT.exists() else f"{ebpf.OBJECT} is not built (./setup.sh)")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

PAYLOAD = 100
PACKET_BYTES = 40 + 8 + PAYLOAD  # the inner IPv6 packet: header + UDP header + payload


def _delete_route(dst: str) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.route("del", dst=dst)


def exporter_routes(plan) -> None:
    """Every encap route of the lab replaced by the one an eBPF exporter makes (``Routes(reserve=True)``)."""
    for node in plan.nodes.values():
        if not node.encap_routes:
            continue
        with nsutil.NetnsThread(node.netns) as t:
            for e in node.encap_routes:
                t.call(_delete_route, e.dst)
        with Routes(node.netns, reserve=True) as routes:
            for e in node.encap_routes:
                policy = validate.policy(pb.Policy(name=e.flow, destination=e.dst, segments=list(e.segments),
                                                   device=e.dev))
                assert routes.apply_policy(policy) is True
                assert routes.policy_route(e.dst)["encap"]["tlvs"] == "0402000004020000"


@pytest.fixture(scope="module", params=["reserved", "inserted"])
def lab(request):
    plan = square_plan("te")
    try:
        network.build(plan)
        if request.param == "reserved":
            exporter_routes(plan)
        yield plan
    finally:
        network.teardown(plan)
        for node in plan.scenario.nodes:
            bpf.unpin(ebpf.pin_dir(node))
        assert not [ns for ns in plan.namespaces if nsutil.exists(ns)]


@pytest.fixture(scope="module")
def tables(lab):
    """One EbpfTable per node, as the exporters would hold them; f1 a->b->c->d, f2 a->d->c."""
    a, b, c, d = lab.scenario.nodes
    f1, f2 = (lab.flow_match(n) for n in ("f1", "f2"))
    # warm the neighbour caches first, so that no test packet waits in one
    send(lab.flow("f1").src_netns, lab.flow("f1").dst_addr, 3)
    send(lab.flow("f2").src_netns, lab.flow("f2").dst_addr, 3)
    time.sleep(0.2)
    out = {n: EbpfTable(n, n) for n in (a, b, c, d)}
    out[a].install([Point("f1", "ingress", 101, 0, *f1), Point("f2", "ingress", 102, 0, *f2)], colour=0)
    out[b].install([Point("f1", "transit", 101, 1)], colour=0)
    out[c].install([Point("f1", "transit", 101, 2), Point("f2", "egress", 102, 2)], colour=0)
    out[d].install([Point("f1", "egress", 101, 3), Point("f2", "transit", 102, 1)], colour=0)
    yield out
    for t in out.values():
        t.remove()


def _counts(table: EbpfTable, colour: int) -> dict:
    return {role: r.counts for role, r in table.read_all(colour).items() if r.counts}


@pytest.mark.srv6
def test_counted_at_every_hop_by_colour(lab, tables):
    a, b, c, d = lab.scenario.nodes
    f1 = lab.flow("f1")
    n = 37
    send(f1.src_netns, f1.dst_addr, n)
    one = (n, n * PACKET_BYTES)
    assert wait_for(lambda: _counts(tables[d], 0)["egress"], {"f1": one}) == {"f1": one}
    assert _counts(tables[a], 0) == {"ingress": {"f1": one, "f2": (0, 0)}}
    assert _counts(tables[b], 0) == {"transit": {"f1": one}}
    assert _counts(tables[c], 0) == {"transit": {"f1": one}, "egress": {"f2": (0, 0)}}
    assert _counts(tables[d], 0) == {"egress": {"f1": one}, "transit": {"f2": (0, 0)}}

    tables[a].set_colour(1)
    m = 23
    send(f1.src_netns, f1.dst_addr, m)
    two = (m, m * PACKET_BYTES)
    assert wait_for(lambda: _counts(tables[d], 1)["egress"], {"f1": two}) == {"f1": two}
    for node, role in ((a, "ingress"), (b, "transit"), (c, "transit")):
        assert _counts(tables[node], 1)[role]["f1"] == two
        assert _counts(tables[node], 0)[role]["f1"] == one  # colour 0 untouched

    f2 = lab.flow("f2")
    k = 5
    send(f2.src_netns, f2.dst_addr, k)
    three = (k, k * PACKET_BYTES)
    assert wait_for(lambda: _counts(tables[c], 1)["egress"]["f2"], three) == three
    assert _counts(tables[d], 1)["transit"]["f2"] == three
    assert _counts(tables[a], 1)["ingress"]["f2"] == three
    assert _counts(tables[b], 1)["transit"]["f1"] == two  # f2 does not pass b
    tables[a].set_colour(0)


def _dscp_counter(netns: str, dscp: int) -> Nft:
    """A test-owned table in the host's namespace counting arriving packets of traffic class ``dscp``."""
    nft = Nft(netns)
    t = {"family": "ip6", "table": "tdscp"}
    nft.run([{"add": {"table": {"family": "ip6", "name": "tdscp"}}},
             {"add": {"chain": {**t, "name": "in", "type": "filter", "hook": "input", "prio": -10,
                                "policy": "accept"}}},
             {"add": {"rule": {**t, "chain": "in", "expr": [
                 {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
                 {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "dscp"}}, "right": dscp}},
                 {"counter": None}]}}}])
    return nft


def _dscp_count(nft: Nft) -> int:
    for obj in nft.run([{"list": {"chain": {"family": "ip6", "table": "tdscp", "name": "in"}}}]):
        if "rule" in obj:
            return next(e["counter"]["packets"] for e in obj["rule"]["expr"] if "counter" in e)
    raise AssertionError("no rule")


@pytest.mark.srv6
def test_customer_dscp_arrives_unchanged(lab, tables):
    f1 = lab.flow("f1")
    nft = _dscp_counter(f1.dst_netns, 46)
    try:
        before = _counts(tables[lab.scenario.nodes[3]], tables[lab.scenario.nodes[0]].colour)["egress"]["f1"][0]
        send(f1.src_netns, f1.dst_addr, 20, dscp=46)
        assert wait_for(lambda: _dscp_count(nft), 20) == 20
        colour = tables[lab.scenario.nodes[0]].colour
        assert _counts(tables[lab.scenario.nodes[3]], colour)["egress"]["f1"][0] == before + 20
    finally:
        nft.run([{"delete": {"table": {"family": "ip6", "name": "tdscp"}}}])
        nft.close()


def _captured(netns: str, ifname: str, expression: str, send_one) -> bytes:
    """The first frame tcpdump captures on ``ifname`` in ``netns`` matching ``expression`` once ``send_one()``
    sent a packet."""
    out = f"/tmp/srv6pm-test-{secrets.token_hex(4)}.pcap"
    with nsutil.NetnsThread(netns) as t:
        proc = t.call(subprocess.Popen, ["tcpdump", "-i", ifname, "-U", "-c", "1", "-w", out, expression],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # tcpdump is listening
        send_one()
        proc.wait(timeout=10)
        with open(out, "rb") as fh:
            pcap = fh.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        if os.path.exists(out):
            os.unlink(out)
    return pcap[24 + 16:]  # pcap global header, first record header


@pytest.mark.srv6
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_rfc9343_layout_on_the_wire(lab, tables):
    """The outer header as a transit node receives it, byte by byte, against a hand-built vector."""
    a, b, c, d = lab.scenario.nodes
    f1 = lab.flow("f1")
    colour = tables[a].colour
    frame = _captured(b, lab.nodes[b].interface(a).name, "ip6 proto 60",
                      lambda: send(f1.src_netns, f1.dst_addr, 1, dscp=46))
    outer = frame[14:]
    assert outer[6] == 60, "outer Next Header is Destination Options"
    # RFC 9343 §2 in an 8-octet Destination Options header: Next Header 43 (SRH), Hdr Ext Len 0,
    # Option Type 0x12, Opt Data Len 4, FlowMonID (20 bits) | L | D=0 | Reserved (10 bits) = 0
    expected = bytes([43, 0, 0x12, 4]) + struct.pack("!I", 101 << 12 | colour << 11)
    assert outer[40:48] == expected
    srh = outer[48:]
    assert srh[2] == 4 and srh[0] == 41  # the SRH follows, then the inner packet
    assert (srh[1] + 1) * 8 == 8 + 16 * (srh[4] + 1), "the SRH holds its Segment List and no TLV"
    payload_len = struct.unpack("!H", outer[4:6])[0]
    assert payload_len == 8 + (srh[1] + 1) * 8 + PACKET_BYTES
    inner = srh[(srh[1] + 1) * 8:]
    assert inner[0] >> 4 == 6
    tclass = (struct.unpack("!I", inner[:4])[0] >> 20) & 0xFF
    assert tclass >> 2 == 46, "the inner packet's DSCP is the sender's"
    assert socket.inet_ntop(socket.AF_INET6, inner[24:40]) == f1.dst_addr


@pytest.mark.srv6
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_a_flow_not_monitored_crosses_the_path_unmarked(lab, tables, request):
    """f2 not monitored at its ingress: its packets cross the transit node unmarked, with the reserved padding
    still in the SRH where the route has it (End and End.DX6 ignore it), and all arrive at the host."""
    a, b, c, d = lab.scenario.nodes
    f2 = lab.flow("f2")
    points = tables[a].points()
    tables[a].install([p for p in points if p.name != "f2"], colour=tables[a].colour)
    nft = _dscp_counter(f2.dst_netns, 0)
    try:
        frame = _captured(d, lab.nodes[d].interface(a).name, "ip6 proto 43",
                          lambda: send(f2.src_netns, f2.dst_addr, 1))
        send(f2.src_netns, f2.dst_addr, 9)
        assert wait_for(lambda: _dscp_count(nft), 10) == 10
    finally:
        tables[a].install(points, colour=tables[a].colour)
        nft.run([{"delete": {"table": {"family": "ip6", "name": "tdscp"}}}])
        nft.close()
    srh = frame[14 + 40:]
    segments_end = 8 + 16 * (srh[4] + 1)
    tlvs = srh[segments_end:(srh[1] + 1) * 8]
    assert tlvs == (bytes([4, 2, 0, 0]) * 2 if request.node.callspec.params["lab"] == "reserved" else b"")


UDP_SEGMENT = 103  # linux/udp.h


@pytest.mark.srv6
def test_gso_packets_are_marked_and_counted_at_every_hop(lab, tables, request):
    """UDP GSO: each datagram of 10 segments crosses the path as one packet (GSO across the veths) and is
    marked and counted as one at every point. Only where the route reserves the octets:
    ``bpf_skb_adjust_room`` refuses GSO packets other than TCP, so through the lab's own routes they are
    counted at the ingress but cross unmarked (seen by the next points as a loss)."""
    if request.node.callspec.params["lab"] != "reserved":
        pytest.skip("bpf_skb_adjust_room does not grow UDP GSO packets")
    a, b, c, d = lab.scenario.nodes
    f1 = lab.flow("f1")
    colour = tables[a].colour
    before = {n: _counts(tables[n], colour) for n in (a, b, d)}
    with nsutil.NetnsThread(f1.src_netns) as t:
        sock = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
        for _ in range(5):
            sock.sendto(b"y" * 10_000, (f1.dst_addr, 9999))
    want = (before[d]["egress"]["f1"][0] + 5, before[d]["egress"]["f1"][1] + 5 * (40 + 8 + 10_000))
    assert wait_for(lambda: _counts(tables[d], colour)["egress"]["f1"], want) == want
    for node, role in ((a, "ingress"), (b, "transit")):
        assert _counts(tables[node], colour)[role]["f1"][0] - before[node][role]["f1"][0] == 5


@pytest.mark.srv6
def test_tc_hooks_count_alike_and_tcx_takes_their_place(lab, tables):
    """The clsact path (kernels before 6.6) counts exactly as the tcx links do; an exporter attaching with tcx
    where a tc filter of srv6pm's is left (an upgrade) deletes it first: no packet is counted twice."""
    _a, b, _c, d = lab.scenario.nodes
    f1 = lab.flow("f1")
    colour = tables[b].colour
    assert tables[b].hook == "tcx"  # this kernel (6.6+) has tcx: auto takes it
    # the links, pinned beside the maps; a transit node needs only altmark_count, an ingress one altmark_mark
    assert _directions(tables[b]) == {"ingress"} and _directions(tables[lab.scenario.nodes[0]]) == {"egress"}
    tables[b].detach()
    assert not list(tables[b]._pins.glob("tcx-*"))
    old = EbpfTable(b, b, hook="tc")  # maps reused, programs on clsact
    try:
        old.install(tables[b].points(), colour=colour)
        assert not list(tables[b]._pins.glob("tcx-*"))
        for step in ("tc", "tcx over a tc filter left"):
            if step != "tc":
                assert not tables[b].counting_gap
                tables[b].attach()
                assert tables[b].counting_gap  # the hand-over's microseconds: counted by neither
                tables[b].counting_gap = False
            before_b = _counts(tables[b], colour)["transit"]["f1"]
            before_d = _counts(tables[d], colour)["egress"]["f1"]
            send(f1.src_netns, f1.dst_addr, 6)
            want_d = (before_d[0] + 6, before_d[1] + 6 * PACKET_BYTES)
            assert wait_for(lambda: _counts(tables[d], colour)["egress"]["f1"], want_d) == want_d, step
            assert _counts(tables[b], colour)["transit"]["f1"] == (before_b[0] + 6, before_b[1] + 6 * PACKET_BYTES), step
    finally:
        old.close()


@pytest.mark.srv6
def test_restart_keeps_counters_and_generation(lab, tables):
    a = lab.scenario.nodes[0]
    f1 = lab.flow("f1")
    colour = tables[a].colour
    before = _counts(tables[a], colour)["ingress"]
    gen = tables[a].generation
    again = EbpfTable(a, a)  # a restarted exporter: a new object reusing the pinned maps
    try:
        again.install(tables[a].points(), colour=colour)
        assert again.generation == gen
        assert _counts(again, colour)["ingress"] == before
        send(f1.src_netns, f1.dst_addr, 4)
        want = (before["f1"][0] + 4, before["f1"][1] + 4 * PACKET_BYTES)
        assert wait_for(lambda: _counts(again, colour)["ingress"]["f1"], want) == want
    finally:
        again.close()


@pytest.mark.srv6
def test_flows_change_one_by_one(lab):
    """Adding and removing flows keeps the others' counters; a removed flow's counters are gone."""
    node = lab.scenario.nodes[1]
    table = EbpfTable("tchg" + secrets.token_hex(2), node)
    try:
        p = [Point(f"g{i}", "transit", 5000 + i, 1) for i in range(3)]
        table.install(p, colour=0)
        assert set(_counts(table, 0)["transit"]) == {"g0", "g1", "g2"}
        table.install(p[:2], colour=0)
        assert set(_counts(table, 0)["transit"]) == {"g0", "g1"}
        assert set(_counts(table, 0)["transit"]) == {"g0", "g1"}  # the same keys again: named as they were
        table.install([p[0], Point("k1", "transit", 5001, 1)], colour=0)  # g1's FlowMonID under another name
        assert set(_counts(table, 0)["transit"]) == {"g0", "k1"}
        table.install(p[:2], colour=0)
        assert set(_counts(table, 0)["transit"]) == {"g0", "g1"}
        with pytest.raises(ValueError, match="same FlowMonID 5000"):
            table.install([p[0], Point("h", "transit", 5000, 2)], colour=0)
        with pytest.raises(ValueError, match="source prefixes .* nest"):
            table.install([Point("i1", "ingress", 1, 0, "fd00::/64", "fd01::/64"),
                           Point("i2", "ingress", 2, 0, "fd00::1/128", "fd02::/64")], colour=0)
        assert set(_counts(table, 0)["transit"]) == {"g0", "g1"}  # a refused change changed nothing
        # only the programs the points need are on the hooks: count (ingress) for transit, mark (egress) too
        # with an ingress point, mark alone without the others
        assert _directions(table) == {"ingress"}
        i1 = Point("i1", "ingress", 7000, 0, "fd77::/64", "fd78::/64")
        table.install([*p[:2], i1], colour=0)
        assert _directions(table) == {"ingress", "egress"}
        table.install([i1], colour=0)
        assert _directions(table) == {"egress"}
    finally:
        table.remove()
    assert not table._pins.exists()


def _directions(table: EbpfTable) -> set[str]:
    """The hook directions of the table's pinned tcx links (one per interface and direction)."""
    return {p.name.rsplit("-", 1)[1] for p in table._pins.glob("tcx-*")}


def test_point_validation():
    with pytest.raises(ValueError, match="FlowMonID in 1..1048575"):
        Point("f", "transit", 0, 1)
    with pytest.raises(ValueError, match="role must be one of"):
        Point("f", "middle", 1, 1)
    with pytest.raises(ValueError, match="src"):
        Point("f", "ingress", 1, 0, "fd00::1/64", "fd01::/64")
