"""The node exporter's southbound API: real gRPC over 127.0.0.1, a real namespace, routes, nftables, STAMP, Kafka.

Needs root. Each test builds a network namespace with a random name (deleted
at the end) and runs an Exporter in-process with its API on a free port,
publishing to the real embedded broker; one test runs ``srv6pm exporter run``
as a process.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaConsumer, TopicPartition
from netns_support import skip_reason
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from srv6pm import records, srv6
from srv6pm.config import KafkaSettings
from srv6pm.exporter.api import SERVICE_NAME, ServerSettings
from srv6pm.exporter.config import parse
from srv6pm.nft import Nft
from srv6pm.exporter.routes import Routes
from srv6pm.exporter.service import Exporter
from srv6pm.netns import NetnsThread
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.southbound.v1 import southbound_pb2_grpc as rpc

pytestmark = [pytest.mark.netns, pytest.mark.services,
              pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

ADDR = "fc00:1::1"  # the node's address on v0 (v0/v1: a veth pair, up); d0/d1: a veth pair left down


def _setup(ns: str) -> None:
    def build():
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="v0", kind="veth", peer="v1")
            ipr.link("add", ifname="d0", kind="veth", peer="d1")
            for name in ("v0", "v1"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            ipr.addr("add", index=ipr.link_lookup(ifname="v0")[0], address=ADDR, prefixlen=64, flags=0x02)
            for _ in range(100):
                if any(a.get("address") == ADDR and not a["flags"] & 0x40 for a in ipr.addr("dump", family=10)):
                    break
                time.sleep(0.02)
    with NetnsThread(ns) as t:
        t.call(build)


@pytest.fixture
def ns():
    name = "api" + secrets.token_hex(4)
    pr_netns.create(name)
    try:
        _setup(name)
        yield name
    finally:
        pr_netns.remove(name)


class Running:
    """An Exporter running in a thread, and a channel to its API."""

    def __init__(self, ns: str, broker: str, state_file=None, extra: str = "", dataplane: str = "nftables",
                 node: str = "n1"):
        # most tests read the nftables table's sets to see what the node counts; the ebpf ones say so
        config = parse(f"node: {node}\nnetns: {ns}\nperiod: 1\ndataplane: {dataplane}\n"
                       + (f"state_file: {state_file}\n" if state_file else "") + extra)
        self.exporter = Exporter(config, KafkaSettings(bootstrap=broker),
                                 api=ServerSettings("127.0.0.1:0", None))
        self.thread = threading.Thread(target=self.exporter.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while getattr(self.exporter._server, "port", None) is None:
            assert self.thread.is_alive() and time.monotonic() < deadline, "exporter did not start"
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.exporter._server.port}")
        self.stub = rpc.NodeExporterStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def stop(self):
        self.channel.close()
        self.exporter.stop()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


@pytest.fixture
def running(ns, broker, tmp_path):
    r = Running(ns, broker, state_file=tmp_path / "state.json")
    yield r
    r.stop()


# ---------------------------------------------------------------- what the node holds

def kernel(ns: str) -> tuple:
    """srv6pm's routes and the sets of the srv6pm nftables table (elements and their counters) in the namespace.

    Rules are left out: the colour switch rewrites the marking rule every period.
    """
    with Routes(ns) as routes:
        dump = routes.dump()
    nft = Nft(ns)
    try:
        listing = nft.run([{"list": {"tables": {"family": "ip6"}}}])
        table = []
        if any(o.get("table", {}).get("name") == "srv6pm" for o in listing):
            table = nft.run([{"list": {"table": {"family": "ip6", "name": "srv6pm"}}}])
    finally:
        nft.close()
    sets = {o["set"]["name"]: json.dumps(o["set"], sort_keys=True) for o in table if "set" in o}
    return dump, sets


def elements(ns: str, set_name: str) -> list:
    nft = Nft(ns)
    try:
        out = nft.run([{"list": {"set": {"family": "ip6", "table": "srv6pm", "name": set_name}}}])
    finally:
        nft.close()
    s = next(o["set"] for o in out if "set" in o)
    return [e["elem"]["val"]["concat"] if "elem" in e else e["concat"] for e in s.get("elem", [])]


# ---------------------------------------------------------------- the objects

def objects() -> list:
    return [
        pb.LocalSid(sid="fcff:1::1", behavior=pb.SID_BEHAVIOR_END),
        pb.LocalSid(sid="FCFF:1:0::2", behavior=pb.SID_BEHAVIOR_END_X, nexthop="fc00:1::2", device="v0"),
        pb.LocalSid(sid="fcff:1::3", behavior=pb.SID_BEHAVIOR_END_DT6),
        pb.LocalSid(sid="fcff:1::4", behavior=pb.SID_BEHAVIOR_END_DX6, nexthop="fc00:1::2", device="v0"),
        pb.Policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9", "fcff:3::1"]),
        pb.Policy(name="p2", destination="fd00:5::1", segments=["fc00:1::9"], mode=pb.ENCAP_MODE_INLINE,
                  device="v0"),
        pb.FlowMonitor(flow="f1", role=pb.ROLE_INGRESS, source_prefix="fd01::1", destination_prefix="fd00:4::/64"),
        pb.FlowMonitor(flow="f1", role=pb.ROLE_EGRESS, source_prefix="fd01::1", destination_prefix="fd00:4::/64"),
        pb.StampReflector(bind=ADDR),
        pb.StampSession(name="s1", destination=ADDR, source=ADDR, rate=20, reflector_node="n1"),
    ]


APPLY = {pb.LocalSid: "ApplyLocalSid", pb.Policy: "ApplyPolicy", pb.FlowMonitor: "StartFlowMonitoring",
         pb.StampSession: "StartStampSession", pb.StampReflector: "StartStampReflector"}
REMOVE = {pb.LocalSidRef: "RemoveLocalSid", pb.PolicyRef: "RemovePolicy", pb.FlowMonitorRef: "StopFlowMonitoring",
          pb.StampSessionRef: "StopStampSession", pb.StampReflectorRef: "StopStampReflector"}


def apply(stub, message):
    return getattr(stub, APPLY[type(message)])(message, timeout=10)


def remove(stub, ref):
    return getattr(stub, REMOVE[type(ref)])(ref, timeout=10)


def intent_of(state: pb.NodeState) -> list:
    out = list(state.local_sids) + list(state.policies) + list(state.flows) + list(state.stamp_sessions)
    return out + ([state.stamp_reflector] if state.HasField("stamp_reflector") else [])


def normalised(messages) -> list:
    by_kind = {}
    for m in messages:
        by_kind.setdefault(type(m), []).append(validate.request(m))
    out = []
    for kind in (pb.LocalSid, pb.Policy, pb.FlowMonitor, pb.StampSession, pb.StampReflector):
        out += sorted(by_kind.get(kind, []), key=lambda m: str(validate.key_of(m)))
    return out


def refused(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


# ---------------------------------------------------------------- tests

def test_info_and_health(running):
    info = running.stub.GetInfo(pb.GetInfoRequest(), timeout=5)
    assert info.node == "n1" and info.period_s == 1.0 and len(info.boot_id) == 32 and info.version
    assert abs(info.started_ns - time.time_ns()) < 60e9
    deadline = time.monotonic() + 5
    while True:  # SERVING once the loop runs
        answers = [running.health.Check(health_pb2.HealthCheckRequest(service=s), timeout=5).status
                   for s in ("", SERVICE_NAME)]
        if answers == [health_pb2.HealthCheckResponse.SERVING] * 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answers == [health_pb2.HealthCheckResponse.SERVING] * 2


def test_an_empty_exporter_touches_nothing(running, ns):
    assert kernel(ns) == ([], {})
    state = running.stub.GetState(pb.GetStateRequest(), timeout=5)
    assert intent_of(state) == [] and not state.HasField("reflector_status")
    assert list(running.stub.ReadCounters(pb.ReadCountersRequest(), timeout=5).counters) == []


@pytest.mark.srv6
def test_applying_everything_twice_changes_nothing_the_second_time(running, ns):
    assert [apply(running.stub, m).changed for m in objects()] == [True] * len(objects())
    before = kernel(ns)
    assert [r["dst"] for r in before[0]] == ["fcff:1::1/128", "fcff:1::2/128", "fcff:1::3/128", "fcff:1::4/128",
                                            "fd00:4::/64", "fd00:5::1/128"]
    replies = [apply(running.stub, m) for m in objects()]
    assert [r.changed for r in replies] == [False] * len(objects())
    assert all("already applied" in r.detail for r in replies)
    assert kernel(ns) == before
    state = running.stub.GetState(pb.GetStateRequest(), timeout=5)
    assert intent_of(state) == normalised(objects())
    assert state.local_sids[0].device == "lo" and state.local_sids[1].sid == "fcff:1::2"
    assert state.policies[1].destination == "fd00:5::1/128"
    # STAMP runs: the session's test packets come back from the reflector in the same namespace.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = running.stub.GetState(pb.GetStateRequest(), timeout=5)
        if state.session_status and state.session_status[0].received >= 3:
            break
        time.sleep(0.2)
    (status,) = state.session_status
    assert status.name == "s1" and status.running and not status.error and status.received >= 3
    assert state.reflector_status.running and state.reflector_status.reflected >= 3


@pytest.mark.srv6
def test_a_route_removed_behind_the_exporters_back_is_repaired(running, ns):
    p = pb.Policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9"])
    assert apply(running.stub, p).changed
    with Routes(ns) as routes:
        assert routes.remove_policy("fd00:4::/64")
    reply = apply(running.stub, p)
    assert reply.changed and reply.detail.startswith("repaired")
    assert [r["dst"] for r in kernel(ns)[0]] == ["fd00:4::/64"]
    assert not apply(running.stub, p).changed


@pytest.mark.parametrize("message, field", [
    (pb.LocalSid(sid="fcff::zz", behavior=pb.SID_BEHAVIOR_END), "sid"),
    (pb.LocalSid(sid="fcff::1", behavior=9), "behavior"),
    (pb.LocalSid(sid="fcff::1", behavior=pb.SID_BEHAVIOR_END_DX6), "nexthop"),
    (pb.LocalSid(sid="fcff::1", behavior=pb.SID_BEHAVIOR_END, device="a/b"), "device"),
    (pb.Policy(name="p 1", destination="fd00::/64", segments=["fc00::1"]), "name"),
    (pb.Policy(name="p1", destination="fd00::1/64", segments=["fc00::1"]), "destination"),
    (pb.Policy(name="p1", destination="fd00::/64", segments=["fc00::1", "fcff::zz"]), "segments[1]"),
    (pb.Policy(name="p1", destination="fd00::/64", segments=["fc00::1"], mode=7), "mode"),
    (pb.FlowMonitor(flow="f1", source_prefix="fd01::1", destination_prefix="fd00::/64"), "role"),
    (pb.FlowMonitor(flow="f1", role=pb.ROLE_EGRESS, source_prefix="10.0.0.1", destination_prefix="fd00::/64"),
     "source_prefix"),
    (pb.StampSession(name="s1", destination=ADDR, rate=0), "rate"),
    (pb.StampSession(name="s1", destination=ADDR, rate=1, port=70000), "port"),
    (pb.StampReflector(bind="nowhere"), "bind"),
    (pb.StampReflector(bind=ADDR, auth_key_file="relative.key"), "auth_key_file"),
])
def test_invalid_arguments_name_the_field(running, ns, message, field):
    error = refused(apply, running.stub, message)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ")
    assert intent_of(running.stub.GetState(pb.GetStateRequest(), timeout=5)) == []
    assert kernel(ns) == ([], {})


def test_invalid_refs_name_the_field(running):
    for ref, field in ((pb.LocalSidRef(sid="x"), "sid"), (pb.PolicyRef(), "name"),
                       (pb.FlowMonitorRef(flow="f1"), "role"), (pb.StampSessionRef(name="-"), "name")):
        error = refused(remove, running.stub, ref)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith(f"{field}: ")
    error = refused(running.stub.ReadCounters, pb.ReadCountersRequest(flow="no such"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("flow: ")


@pytest.mark.srv6
def test_kernel_refusals_are_failed_precondition_and_change_nothing(running, ns):
    """d0 is down: the kernel refuses routes through it; a source address the node lacks cannot be bound."""
    good = objects()[:2] + [objects()[4]]
    for m in good:
        assert apply(running.stub, m).changed
    state, before = running.stub.GetState(pb.GetStateRequest(), timeout=5), kernel(ns)
    bad = [
        (pb.LocalSid(sid="fcff:1::1", behavior=pb.SID_BEHAVIOR_END_DX6, nexthop="fc00:1::2", device="d0"),
         "Network is down"),
        (pb.LocalSid(sid="fcff:1::9", behavior=pb.SID_BEHAVIOR_END, device="d0"), "Network is down"),
        (pb.LocalSid(sid="fcff:1::9", behavior=pb.SID_BEHAVIOR_END, device="nosuch0"), "No such device"),
        (pb.Policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9"], device="d0"), "Network is down"),
        # a moved policy whose new route is refused keeps its old route
        (pb.Policy(name="p1", destination="fd00:6::/64", segments=["fc00:1::9"], device="d0"), "Network is down"),
        (pb.Policy(name="p9", destination="fd00:9::/64", segments=["fcff:99::1"]), "Network is unreachable"),
        (pb.StampSession(name="s1", destination=ADDR, source="fc00:9::9", rate=1), "Cannot assign requested address"),
        (pb.StampReflector(bind="fc00:9::9"), "Cannot assign requested address"),
    ]
    for message, reason in bad:
        error = refused(apply, running.stub, message)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (message, error.details())
        assert reason in error.details(), error.details()
    assert running.stub.GetState(pb.GetStateRequest(), timeout=5) == state
    assert kernel(ns) == before


@pytest.mark.srv6
def test_conflicts_are_failed_precondition(running, ns):
    assert apply(running.stub, objects()[4]).changed
    error = refused(apply, running.stub, pb.Policy(name="other", destination="fd00:4::/64", segments=["fc00:1::9"]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error.details().startswith("destination: ")
    assert apply(running.stub, objects()[6]).changed
    twin = pb.FlowMonitor(flow="f2", role=pb.ROLE_INGRESS, source_prefix="fd01::1", destination_prefix="fd00:4::/64")
    error = refused(apply, running.stub, twin)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error.details().startswith("source_prefix: ")


@pytest.mark.srv6
def test_a_policy_moved_to_another_destination_leaves_no_old_route(running, ns):
    assert apply(running.stub, objects()[4]).changed
    moved = pb.Policy(name="p1", destination="fd00:6::/64", segments=["fc00:1::9"])
    assert apply(running.stub, moved).changed
    assert [r["dst"] for r in kernel(ns)[0]] == ["fd00:6::/64"]
    assert remove(running.stub, pb.PolicyRef(name="p1")).changed
    assert not remove(running.stub, pb.PolicyRef(name="p1")).changed
    assert kernel(ns)[0] == []


def test_start_and_stop_flow_monitoring_change_the_set_elements(running, ns):
    f1 = objects()[6]
    f2 = pb.FlowMonitor(flow="f2", role=pb.ROLE_INGRESS, source_prefix="fd01::2", destination_prefix="fd00:7::/64")
    assert apply(running.stub, f1).changed
    assert elements(ns, "ingress_c0") == [["fd01::1", {"prefix": {"addr": "fd00:4::", "len": 64}}]]
    assert elements(ns, "egress_c0") == []
    assert apply(running.stub, f2).changed
    assert len(elements(ns, "ingress_c0")) == 2 and len(elements(ns, "ingress_c1")) == 2
    counters = running.stub.ReadCounters(pb.ReadCountersRequest(), timeout=5).counters
    assert sorted((c.flow, c.role, c.colour) for c in counters) == [
        ("f1", pb.ROLE_INGRESS, 0), ("f1", pb.ROLE_INGRESS, 1), ("f2", pb.ROLE_INGRESS, 0), ("f2", pb.ROLE_INGRESS, 1)]
    assert all(c.packets == 0 and c.generation for c in counters)
    only = running.stub.ReadCounters(pb.ReadCountersRequest(flow="f2"), timeout=5).counters
    assert {c.flow for c in only} == {"f2"}
    assert remove(running.stub, pb.FlowMonitorRef(flow="f1", role=pb.ROLE_INGRESS)).changed
    assert not remove(running.stub, pb.FlowMonitorRef(flow="f1", role=pb.ROLE_INGRESS)).changed
    assert not remove(running.stub, pb.FlowMonitorRef(flow="f1", role=pb.ROLE_EGRESS)).changed
    assert len(elements(ns, "ingress_c0")) == 1
    assert [f.flow for f in running.stub.GetState(pb.GetStateRequest(), timeout=5).flows] == ["f2"]
    assert remove(running.stub, pb.FlowMonitorRef(flow="f2", role=pb.ROLE_INGRESS)).changed
    assert elements(ns, "ingress_c0") == [] and elements(ns, "egress_c0") == []


def published_counters(bootstrap: str, node: str) -> list[dict]:
    """Every srv6pm.counters record of ``node`` on the broker so far, each checked against the schema."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(records.COUNTERS, p) for p in sorted(consumer.partitions_for_topic(records.COUNTERS)
                                                                    or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=300).values():
                for m in messages:
                    records.decode_counters(m.value)
                    if json.loads(m.value)["node"] == node:
                        out.append(json.loads(m.value))
        return out
    finally:
        consumer.close()


def test_nftables_counters_records_name_the_flowmon_id_without_a_position(ns, broker, tmp_path):
    """Issue 8 point 1 with the nftables data plane: the FlowMonID the collector gives a monitor is on every
    counters record (and ReadCounters) of its flow, with no position (nftables counts only at the two ends: no
    segments); a monitor without one (an exporter run from its own file) has records without it; a monitor
    given its id later, counted the same way, keeps its counters and names the id from then on."""
    node = "fmid" + secrets.token_hex(3)
    r = Running(ns, broker, state_file=tmp_path / "state.json", node=node)
    try:
        f1 = pb.FlowMonitor(flow="f1", role=pb.ROLE_INGRESS, source_prefix="fd01::1", destination_prefix="fd00:4::/64",
                            flowmon_id=21)
        f2 = pb.FlowMonitor(flow="f2", role=pb.ROLE_EGRESS, source_prefix="fd01::2", destination_prefix="fd00:5::/64",
                            flowmon_id=22, position=1)
        f3 = pb.FlowMonitor(flow="f3", role=pb.ROLE_INGRESS, source_prefix="fd01::3", destination_prefix="fd00:6::/64")
        for m in (f1, f2, f3):
            assert apply(r.stub, m).changed
        counters = r.stub.ReadCounters(pb.ReadCountersRequest(), timeout=5).counters
        assert sorted({(c.flow, c.flowmon_id) for c in counters}) == [("f1", 21), ("f2", 22), ("f3", 0)]
        time.sleep(5.5)  # 1 s periods: a baseline, then records of a few
        named = pb.FlowMonitor()
        named.CopyFrom(f3)
        named.flowmon_id = 23
        assert apply(r.stub, named).changed
        counters = r.stub.ReadCounters(pb.ReadCountersRequest(flow="f3"), timeout=5).counters
        assert {c.flowmon_id for c in counters} == {23}
        renamed_at = r.exporter.clock.period_at(time.time_ns())
        time.sleep(4.5)
    finally:
        r.stop()
    got = published_counters(broker, node)
    by_flow: dict[str, list[dict]] = {}
    for record in got:
        by_flow.setdefault(record["flow"], []).append(record)
    assert set(by_flow) == {"f1", "f2", "f3"}
    assert all("position" not in record for record in got)
    assert {(x["role"], x.get("flowmon_id")) for x in by_flow["f1"]} == {("ingress", 21)}
    assert {(x["role"], x.get("flowmon_id")) for x in by_flow["f2"]} == {("egress", 22)}
    early = [x.get("flowmon_id") for x in by_flow["f3"] if x["period"] < renamed_at - 1]
    late = [x.get("flowmon_id") for x in by_flow["f3"] if x["period"] > renamed_at + 1]
    assert early and set(early) == {None}  # without an id, the records leave it out
    assert late and set(late) == {23}
    periods = sorted(x["period"] for x in by_flow["f3"])
    assert periods == list(range(periods[0], periods[-1] + 1))  # its counters kept: no period lost to a new baseline


def test_stamp_session_and_reflector_stop(running):
    for m in objects()[8:]:
        assert apply(running.stub, m).changed
    assert remove(running.stub, pb.StampSessionRef(name="s1")).changed
    assert not remove(running.stub, pb.StampSessionRef(name="s1")).changed
    assert remove(running.stub, pb.StampReflectorRef()).changed
    assert not remove(running.stub, pb.StampReflectorRef()).changed
    state = running.stub.GetState(pb.GetStateRequest(), timeout=5)
    assert intent_of(state) == [] and not state.session_status and not state.HasField("reflector_status")


@pytest.mark.srv6
def test_a_restarted_exporter_has_a_new_boot_id_and_the_same_state(ns, broker, tmp_path):
    first = Running(ns, broker, state_file=tmp_path / "state.json")
    try:
        for m in objects()[:8]:
            assert apply(first.stub, m).changed
        info = first.stub.GetInfo(pb.GetInfoRequest(), timeout=5)
        state = first.stub.GetState(pb.GetStateRequest(), timeout=5)
        before = kernel(ns)
    finally:
        first.stop()
    assert (tmp_path / "state.json.intent.db").exists()
    assert kernel(ns) == before  # routes and the table outlive the process
    second = Running(ns, broker, state_file=tmp_path / "state.json")
    try:
        again = second.stub.GetInfo(pb.GetInfoRequest(), timeout=5)
        assert again.boot_id != info.boot_id and again.started_ns > info.started_ns
        assert intent_of(second.stub.GetState(pb.GetStateRequest(), timeout=5)) == intent_of(state)
        assert kernel(ns) == before
        assert [apply(second.stub, m).changed for m in objects()[:8]] == [False] * 8
    finally:
        second.stop()


@pytest.mark.srv6
def test_a_persisted_object_that_no_longer_applies_is_dropped(ns, broker, tmp_path):
    first = Running(ns, broker, state_file=tmp_path / "state.json")
    try:
        assert apply(first.stub, objects()[0]).changed
        assert apply(first.stub, pb.LocalSid(sid="fcff:1::8", behavior=pb.SID_BEHAVIOR_END, device="v1")).changed
    finally:
        first.stop()

    def drop_v1():
        with IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname="v1")[0])  # also deletes v0, its peer
    with NetnsThread(ns) as t:
        t.call(drop_v1)
    second = Running(ns, broker, state_file=tmp_path / "state.json")
    try:
        state = second.stub.GetState(pb.GetStateRequest(), timeout=5)
        assert [s.sid for s in state.local_sids] == ["fcff:1::1"]
    finally:
        second.stop()


def test_config_file_flows_are_applied_through_the_api_path(ns, broker):
    extra = "flows: [{name: f9, role: egress, src: 'fd01::9', dst: 'fd00:9::/64'}]\n"
    r = Running(ns, broker, extra=extra)
    try:
        state = r.stub.GetState(pb.GetStateRequest(), timeout=5)
        assert [(f.flow, f.role) for f in state.flows] == [("f9", pb.ROLE_EGRESS)]
        assert len(elements(ns, "egress_c0")) == 1
        assert not apply(r.stub, pb.FlowMonitor(flow="f9", role=pb.ROLE_EGRESS, source_prefix="fd01::9",
                                                destination_prefix="fd00:9::/64")).changed
    finally:
        r.stop()


def test_the_command_serves_the_api_and_refuses_to_start_without_a_security_choice(ns, broker, tmp_path):
    """Where the kernel has no SRv6 routes the local SID is refused, FAILED_PRECONDITION with the reason."""
    no_srv6 = srv6.missing()
    cfg = tmp_path / "n1.yaml"
    cfg.write_text(f"node: n1\nnetns: {ns}\nperiod: 1\n")
    base = [sys.executable, "-m", "srv6pm", "exporter", "run", "--config", str(cfg), "--kafka", broker]
    out = subprocess.run(base + ["--grpc-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "needs TLS" in out.stderr and "--grpc-plaintext" in out.stderr and len(out.stderr.splitlines()) == 1
    proc = subprocess.Popen(base + ["--grpc-listen", "127.0.0.1:0", "--grpc-plaintext"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        event = json.loads(proc.stdout.readline())
        assert event["event"] == "listening" and event["tls"] is False and event["node"] == "n1"
        host, port = event["address"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        with grpc.insecure_channel(event["address"]) as channel:
            stub = rpc.NodeExporterStub(channel)
            assert stub.GetInfo(pb.GetInfoRequest(), timeout=5).node == "n1"
            sid = pb.LocalSid(sid="fcff:1::1", behavior=pb.SID_BEHAVIOR_END)
            if no_srv6 is None:
                assert stub.ApplyLocalSid(sid, timeout=5).changed
            else:
                with pytest.raises(grpc.RpcError) as info:
                    stub.ApplyLocalSid(sid, timeout=5)
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert info.value.details() == f"local SID fcff:1::1 (End dev lo): {no_srv6}"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143, proc.stderr.read()  # 128 + SIGTERM, after a clean stop
    assert [r["dst"] for r in kernel(ns)[0]] == (["fcff:1::1/128"] if no_srv6 is None else [])
