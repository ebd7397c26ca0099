"""STAMP over a real SRv6 network in namespaces (root): both directions follow their segment lists.

The lab builds four routers a - b - c - d - a (namespaces with test-unique
names). The Session-Sender runs in a on its measurement address fcff:1::2,
the Session-Reflector in d on fcff:4::2; both processes stay in the root
namespace, only their sockets live in the nodes. The direct link a - d is
the shortest path, so packets that show up at b and c, and nowhere on a - d,
took the segment lists: forward [b, c] in the test packets' SRH, backward
[c, b] in their Return Path TLV. nftables counters of the test's own (per
direction, matched on the SRH, the outer destination SID and the source)
prove it, and the Hop Limit the reflector echoes counts the routers passed.
The first test runs with both reflector backends: the eBPF one must answer
every test packet in the kernel, its replies taking the same return path.
Every namespace is removed at the end, even when a test fails.
"""

from __future__ import annotations

import json
import random
import secrets
import socket
import subprocess
import sys
import threading
import time

import pytest
from netns_support import skip_reason

from srv6pm import netns as nsutil
from srv6pm import srv6
from srv6pm.nft import Nft
from srv6pm.exporter.probes import _reply_fields
from srv6pm.lab import network, scenario, topology
from srv6pm.processor.delay import results
from srv6pm.records import StampSample, decode_stamp
from srv6pm.stamp.packet import SenderPacket
from srv6pm.stamp import ebpf
from srv6pm.stamp.backends import BACKENDS, make_reflector
from srv6pm.stamp.reflector import TIMESTAMP_KINDS, Reflector, ReflectorConfig
from srv6pm.stamp.sender import Sender, SenderConfig


_REASON = skip_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
PORT = 862


def _scenario_text(tag: str) -> str:
    a, b, c, d = (f"ts{tag}{x}" for x in "abcd")
    return f"""
period: 1
nodes: [{a}, {b}, {c}, {d}]
links: [[{a}, {b}], [{b}, {c}], [{c}, {d}], [{a}, {d}]]
flows: []
stamp:
  - {{name: s1, from: {a}, to: {d}, via: [{b}, {c}], return_via: [{c}, {b}], rate: 10}}
"""


@pytest.fixture(scope="module")
def lab():
    plan = topology.plan(scenario.parse(_scenario_text(secrets.token_hex(2)), source="test"))
    nfts: list[Nft] = []
    try:
        network.build(plan, srv6=srv6.missing() is None)  # the underlay alone where the kernel has no SRv6
        yield plan, nfts
    finally:
        for nft in nfts:
            nft.close()
        network.teardown(plan)
        left = [ns for ns in plan.namespaces if nsutil.exists(ns)]
        assert not left, f"namespaces left behind: {left}"


def _match(field: str, value) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": field}}, "right": value}}


def _probe(nft: Nft, rules: dict[str, list[dict]]) -> None:
    """Table ip6 stamp_probe: one counting rule per name in ``rules`` (a list of match expressions)."""
    t = {"family": "ip6", "table": "stamp_probe"}
    commands = [
        {"add": {"table": {"family": "ip6", "name": "stamp_probe"}}},
        {"add": {"chain": {**t, "name": "pre", "type": "filter", "hook": "prerouting", "prio": -300,
                           "policy": "accept"}}},
    ]
    for name, exprs in rules.items():
        commands.append({"add": {"rule": {**t, "chain": "pre", "comment": name,
                                          "expr": [*exprs, {"counter": None}]}}})
    nft.run(commands)


def _counts(nft: Nft) -> dict[str, int]:
    out = {}
    for obj in nft.run([{"list": {"chain": {"family": "ip6", "table": "stamp_probe", "name": "pre"}}}]):
        rule = obj.get("rule")
        if rule:
            out[rule["comment"]] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return out


def _srh_rule(saddr: str, daddr: str) -> list[dict]:
    return [_match("nexthdr", 43), {"match": {"op": "==", "left": {"exthdr": {"name": "srh"}}, "right": True}},
            _match("saddr", saddr), _match("daddr", daddr)]


@pytest.fixture(scope="module")
def probes(lab):
    plan, nfts = lab
    a, b, c, d = plan.scenario.nodes
    s = plan.stamp["s1"]
    for node in (b, c):
        nft = Nft(node)
        nfts.append(nft)
        sid = plan.nodes[node].end_sid
        _probe(nft, {"forward": _srh_rule(s.sender_addr, sid), "backward": _srh_rule(s.reflector_addr, sid)})
    at_d = Nft(d)
    nfts.append(at_d)
    stamp_from = [_match("saddr", s.sender_addr)]
    _probe(at_d, {"via_c": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": c}}, *stamp_from],
                  "direct": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": a}},
                             *stamp_from]})

    def read() -> dict[str, dict[str, int]]:
        return {"b": _counts(nfts[0]), "c": _counts(nfts[1]), "d": _counts(nfts[2])}

    return read


def _sender(plan, **kw) -> Sender:
    s = plan.stamp["s1"]
    return Sender(SenderConfig(**{
        "dest": s.reflector_addr, "port": PORT, "session": "s1", "source": s.sender_addr, "netns": s.sender,
        "count": 20, "interval": 0.01, "timeout": 2.0, "segments": s.segments, "return_segments": s.return_segments,
        "reflector_timestamps": TIMESTAMP_KINDS, **kw}))


def _delta(before, after):
    return {node: {k: after[node][k] - before[node].get(k, 0) for k in after[node]} for node in after}


def _check_samples(samples, count, kernel_t3=False, kinds=TIMESTAMP_KINDS):
    assert len(samples) == count and not any(s.lost for s in samples)
    for s in samples:
        assert s.t1 <= s.t2 <= s.t3 <= s.t4, s        # one clock in the lab
        assert s.t1 <= s.t4 and s.t2 <= s.t3
        if kernel_t3:
            assert s.t3 - s.t2 < 1_000_000, s          # answered in the kernel, within a millisecond
        assert s.return_path is True                  # the reflector honoured the Return Path TLV
        assert s.ttl == 62                            # forwarded by b and c (the direct path would give 64)
        assert s.reply_ttl == 62                      # the reply came back through c and b
        assert s.timestamps == {"t1": "software-tx", "t2": kinds[0], "t3": kinds[1], "t4": "kernel"}


@pytest.mark.srv6
@pytest.mark.parametrize("backend", BACKENDS)
def test_stamp_follows_forward_and_return_segment_lists(lab, probes, backend):
    """With either backend; the eBPF one answers every test packet in the kernel (tc on these veths)."""
    plan, _ = lab
    s = plan.stamp["s1"]
    assert s.segments == (plan.nodes[plan.scenario.nodes[1]].end_sid, plan.nodes[plan.scenario.nodes[2]].end_sid)
    if backend == "ebpf" and not ebpf.OBJECT.exists():
        pytest.skip(f"{ebpf.OBJECT} is not built (./setup.sh)")
    config = ReflectorConfig(bind=s.reflector_addr, port=PORT, netns=s.reflector)
    with make_reflector(config, backend, instance="t" + secrets.token_hex(3)) as r:
        # one packet first: d resolves c's address (the program passes up a reply with no neighbour yet)
        assert not list(_sender(plan, count=1).samples())[0].lost
        before = probes()
        # the eBPF reflector takes t3 in the kernel, not as the socket reflector does: a sender that is not
        # told which reflector answers claims nothing about t2 and t3 (the exporter's senders do so)
        kinds = TIMESTAMP_KINDS if backend == "socket" else ("remote", "remote")
        samples = list(_sender(plan, reflector_timestamps=kinds).samples())
        time.sleep(0.1)
        after = probes()
    stats = r.stats()  # after close(): the loop thread has finished counting
    _check_samples(samples, 20, kernel_t3=backend == "ebpf", kinds=kinds)
    delta = _delta(before, after)
    assert delta["b"] == {"forward": 20, "backward": 20}
    assert delta["c"] == {"forward": 20, "backward": 20}
    # at d the eBPF program takes the test packets before netfilter's prerouting: d's probe sees none of
    # them (the Hop Limit, 62, and b's and c's counters show the way they came)
    assert delta["d"] == ({"via_c": 0, "direct": 0} if backend == "ebpf" else {"via_c": 20, "direct": 0})
    assert stats.reflected == 21 and stats.return_path_srv6 == 21 and stats.return_path_refused == 0
    assert stats.kernel_reflected >= (20 if backend == "ebpf" else 0)


def test_without_segments_the_direct_path_is_used(lab, probes):
    plan, _ = lab
    s = plan.stamp["s1"]
    with Reflector(ReflectorConfig(bind="::", port=PORT, netns=s.reflector)) as r:
        before = probes()
        samples = list(_sender(plan, segments=(), return_segments=(), count=5).samples())
        time.sleep(0.1)
        after = probes()
    assert r.stats().reflected == 5
    assert [s.ttl for s in samples] == [64] * 5 and all(x.return_path is None for x in samples)
    delta = _delta(before, after)
    assert delta["d"] == {"via_c": 0, "direct": 5} and delta["b"] == {"forward": 0, "backward": 0}


@pytest.mark.srv6
def test_authenticated_over_srv6_and_wrong_key(lab, probes):
    plan, _ = lab
    s = plan.stamp["s1"]
    with Reflector(ReflectorConfig(bind=s.reflector_addr, port=PORT, netns=s.reflector, key=KEY,
                                   stateful=True)) as r:
        samples = list(_sender(plan, key=KEY, size=256).samples())
        wrong = list(_sender(plan, key=bytes(32), count=4, timeout=0.5).samples())
    stats = r.stats()  # after close(): the loop thread has finished counting
    _check_samples(samples, 20)
    assert all(x.size == 256 for x in samples)
    assert [x.reflector_seq for x in samples] == list(range(20))  # stateful numbering
    assert all(x.lost for x in wrong)
    assert stats.dropped_auth == 4 and stats.reflected == 20


@pytest.mark.srv6
def test_reflector_answers_while_flooded_with_garbage(lab):
    plan, _ = lab
    s = plan.stamp["s1"]
    a, b = plan.scenario.nodes[:2]
    with Reflector(ReflectorConfig(bind=s.reflector_addr, port=PORT, netns=s.reflector, key=KEY)) as r:
        stop = threading.Event()
        sent = [0]
        with nsutil.NetnsThread(b) as t:  # the flood comes from another router
            flooder = t.call(socket.socket, socket.AF_INET6, socket.SOCK_DGRAM)

        def flood():
            rng = random.Random(9503)
            junk = [rng.randbytes(rng.randrange(300)) for _ in range(40)]
            junk += [SenderPacket(7, 7).pack(bytes(32)), SenderPacket(7, 7).pack(KEY)[:111], bytes(112)]
            while not stop.is_set():
                for payload in junk:
                    try:
                        flooder.sendto(payload, (s.reflector_addr, PORT))
                        sent[0] += 1
                    except OSError:
                        pass
                time.sleep(0.001)

        thread = threading.Thread(target=flood)
        thread.start()
        try:
            samples = list(_sender(plan, key=KEY, count=50, interval=0.02).samples())
        finally:
            stop.set()
            thread.join()
            flooder.close()
        time.sleep(0.2)
    stats = r.stats()  # after close(): the loop thread has finished counting
    _check_samples(samples, 50)
    assert sent[0] > 2000
    assert stats.internal_errors == 0 and stats.dropped_auth + stats.dropped_malformed >= sent[0] * 0.9


@pytest.mark.srv6
def test_command_line_sender_in_a_namespace(lab):
    plan, _ = lab
    s = plan.stamp["s1"]
    with Reflector(ReflectorConfig(bind=s.reflector_addr, port=PORT, netns=s.reflector)) as r:
        out = subprocess.run(
            [sys.executable, "-m", "srv6pm.stamp", "sender", "--netns", s.sender, "--source", s.sender_addr,
             "--dest", s.reflector_addr, "--segments", ",".join(s.segments),
             "--return-segments", ",".join(s.return_segments), "--count", "5", "--interval", "0.01", "--json"],
            capture_output=True, text=True, timeout=60)
    assert r.stats().return_path_srv6 == 5
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [x["seq"] for x in records[:5]] == list(range(5)) and records[5]["summary"] and records[5]["lost"] == 0
    assert all(x["ttl"] == 62 and x["return_path"] is True for x in records[:5])


def _stamp_seq(offset: int, seq: int) -> dict:
    """Match a 32-bit sequence number ``offset`` octets into the STAMP packet (after the UDP header)."""
    return {"match": {"op": "==", "left": {"payload": {"base": "th", "offset": (8 + offset) * 8, "len": 32}},
                      "right": seq}}


@pytest.mark.srv6
@pytest.mark.parametrize("backend", BACKENDS)
def test_direct_measurement_tells_forward_from_backward_loss(lab, backend):
    """Router b drops test packet 5 on its way to the reflector and the reply to test packet 8 on its way
    back (nftables, matched on the STAMP sequence numbers); the processor's windows must say one of each.
    The eBPF reflector passes these packets up: the socket reflector keeps the counters."""
    if backend == "ebpf" and not ebpf.OBJECT.exists():
        pytest.skip(f"{ebpf.OBJECT} is not built (./setup.sh)")
    plan, _ = lab
    s = plan.stamp["s1"]
    b = plan.scenario.nodes[1]
    drop = Nft(b)
    t = {"family": "ip6", "table": "stamp_drop"}
    drop.run([
        {"add": {"table": {"family": "ip6", "name": "stamp_drop"}}},
        {"add": {"chain": {**t, "name": "pre", "type": "filter", "hook": "prerouting", "prio": -300,
                           "policy": "accept"}}},
        {"add": {"rule": {**t, "chain": "pre", "expr": [_match("saddr", s.sender_addr), _stamp_seq(0, 5),
                                                        {"drop": None}]}}},
        {"add": {"rule": {**t, "chain": "pre", "expr": [_match("saddr", s.reflector_addr), _stamp_seq(24, 8),
                                                        {"drop": None}]}}},
    ])
    config = ReflectorConfig(bind=s.reflector_addr, port=PORT, netns=s.reflector)
    try:
        with make_reflector(config, backend, instance="t" + secrets.token_hex(3)):
            assert not list(_sender(plan, count=1).samples())[0].lost  # neighbours resolved
            samples = list(_sender(plan, count=12, timeout=0.5, direct_measurement=True).samples())
    finally:
        drop.run([{"delete": {"table": {"family": "ip6", "name": "stamp_drop"}}}])
        drop.close()
    assert sorted(x.seq for x in samples if x.lost) == [5, 8]
    # as the exporter publishes them, through the schema, into the processor's figures for one period
    published = [decode_stamp(StampSample(session="s1", seq=x.seq, period_s=1.0, t1=x.t1, lost=x.lost,
                                          **_reply_fields(x)).to_json()) for x in sorted(samples, key=lambda x: x.seq)]
    assert {(r.lost, r.lost_forward, r.lost_backward) for r in results("s1", 0, published)} == {(2, 1, 1)}
