"""The reconciliation engine against stand-in exporters over real gRPC sockets.

The stand-ins (tests/collector_standin.py) are real gRPC servers implementing
NodeExporter over an in-memory dict: they exercise only the collector's logic
(order across nodes, liveness and backoff, restarts, refused changes, config
changes). Each test drives the engine round by round, so nothing depends on timing
except the backoff tests, which wait for a delay's documented upper bound.
"""

from __future__ import annotations

import copy
import random
import time

import pytest
import yaml
from prometheus_client import CollectorRegistry

from collector_standin import CallLog, StandIn
from srv6pm import metrics
from srv6pm.collector import config, flowmon
from srv6pm.collector.events import Events
from srv6pm.collector.reconcile import Backoff, Engine
from srv6pm.southbound.v1 import southbound_pb2 as pb
from test_collector_config import GOOD

NAMES = ("r1", "r2", "r3", "r4")


@pytest.fixture
def calls() -> CallLog:
    return CallLog()


@pytest.fixture
def exporters(calls):
    nodes = {n: StandIn(n, calls).start() for n in NAMES}
    yield nodes
    for s in nodes.values():
        s.stop()


def make_config(addresses: dict[str, str], doc=GOOD, dataplane: str = "nftables",
                allocator: flowmon.Allocator | None = None) -> config.Config:
    """GOOD at the stand-ins' addresses. The tests that predate the ebpf data plane count its objects
    (ingress and egress monitors only): they run with nftables. FlowMonIDs come from ``allocator`` (default
    a fresh one: pass the same one to configurations that follow each other, as the collector keeps its own)."""
    doc = copy.deepcopy(doc)
    for n in doc["nodes"]:
        n["grpc"] = addresses[n["name"]]
    doc["tls"] = {"plaintext": True}
    doc["dataplane"] = dataplane
    return flowmon.assign(config.parse(yaml.safe_dump(doc), source="c.yaml"), allocator or flowmon.Allocator(None))


def addresses(exporters) -> dict[str, str]:
    return {n: s.address for n, s in exporters.items()}


@pytest.fixture
def engine():
    statuses = []
    e = Engine(Events(None), interval=0.1, backoff=Backoff(0.2, 0.4), timeout=2.0, probe_grace=2.0,
               on_status=lambda *a: statuses.append(a), metrics=metrics.get(CollectorRegistry()))
    e.statuses = statuses
    yield e
    e.close()


def metric(engine, name: str, **labels) -> float:
    value = engine.metrics.registry.get_sample_value(name, {"component": "collector", **labels})
    return 0.0 if value is None else value


def kinds(engine, kind=None):
    return [(e.kind, e.node, e.object) for e in engine.events.history if kind is None or e.kind == kind]


def converge(engine, rounds=6, pause_s=0.0):
    """Run up to ``rounds`` rounds, ``pause_s`` apart, until one reports converged."""
    for _ in range(rounds):
        if engine.round().converged:
            return
        time.sleep(pause_s)
    raise AssertionError(f"not converged after {rounds} rounds: {kinds(engine)}")


def test_converges_from_empty_in_phase_order_across_nodes(engine, exporters, calls):
    c = make_config(addresses(exporters))
    engine.load(c, 1)
    first = engine.round()
    assert first.applied == 14 and first.failed == 0 and not first.converged
    assert engine.round().converged
    assert kinds(engine, "converged") == [("converged", None, None)]
    assert engine.events.history[-1].generation == 1
    # Every node holds exactly its desired objects.
    assert exporters["r1"].kinds() == {"local_sid fcff:1::1", "local_sid fcff:1::100", "policy f1",
                                       "flow f1 ingress", "flow f2 egress", "stamp_session s1"}
    assert exporters["r2"].kinds() == {"local_sid fcff:2::1"}
    assert exporters["r4"].kinds() == {"local_sid fcff:4::1", "local_sid fcff:4::100", "flow f1 egress",
                                       "policy f2", "flow f2 ingress", "stamp_reflector"}
    # Phase barrier across the network: all SIDs before any egress monitor, those before any policy,
    # policies before any ingress monitor or STAMP session.
    seq = {(n, o): s for s, n, v, o in calls.calls}
    last_sid = max(s for (n, o), s in seq.items() if o.startswith("local_sid"))
    egress = [s for (n, o), s in seq.items() if o.endswith("egress") or o == "stamp_reflector"]
    policies = [s for (n, o), s in seq.items() if o.startswith("policy")]
    starts = [s for (n, o), s in seq.items() if o.endswith("ingress") or o.startswith("stamp_session")]
    assert last_sid < min(egress) and max(egress) < min(policies) and max(policies) < min(starts)
    # Events: node_up per node with its boot_id, one "applied" per object.
    ups = {e.node: e.boot_id for e in engine.events.history if e.kind == "node_up"}
    assert ups == {n: s.boot_id for n, s in exporters.items()}
    assert len(kinds(engine, "applied")) == 14
    assert metric(engine, "srv6pm_collector_nodes_up") == 4
    assert metric(engine, "srv6pm_collector_reconcile_actions_total", action="apply") == 14
    assert metric(engine, "srv6pm_api_calls_total", method="ApplyPolicy", code="OK") == 2
    assert metric(engine, "srv6pm_api_calls_total", method="GetState", code="OK") == 8  # 2 rounds x 4 nodes
    assert {(name, alive) for name, alive, _, _ in engine.statuses} == {(n, True) for n in NAMES}
    # A further round has nothing to do and says nothing.
    before = len(engine.events.history)
    report = engine.round()
    assert (report.applied, report.unchanged, report.converged) == (0, 0, False)
    assert len(engine.events.history) == before


def test_ebpf_transit_monitors_are_in_place_with_the_egress_before_any_policy(engine, exporters, calls):
    engine.load(make_config(addresses(exporters), dataplane="ebpf"), 1)
    first = engine.round()
    assert first.applied == 17 and first.failed == 0  # 14 and a transit monitor at r2 and r3 for f1, r3 for f2
    assert engine.round().converged
    assert exporters["r2"].kinds() == {"local_sid fcff:2::1", "flow f1 transit"}
    assert exporters["r3"].kinds() == {"local_sid fcff:3::1", "flow f1 transit", "flow f2 transit"}
    transit = exporters["r3"].objects[("FlowMonitor", ("f2", pb.ROLE_TRANSIT))]
    assert (transit.flowmon_id, transit.position) == (2, 1)
    seq = {(n, o): s for s, n, v, o in calls.calls}
    monitors = [s for (n, o), s in seq.items() if o.endswith(("egress", "transit"))]
    policies = [s for (n, o), s in seq.items() if o.startswith("policy")]
    ingress = [s for (n, o), s in seq.items() if o.endswith("ingress")]
    assert len(monitors) == 5 and max(monitors) < min(policies) and max(policies) < min(ingress)


def test_unreachable_node_is_down_retried_with_backoff_then_up(engine, exporters, calls, free_port):
    port = free_port()
    addr = addresses(exporters)
    addr["r4"] = f"127.0.0.1:{port}"  # nothing listens there yet
    exporters["r4"].stop()
    engine.load(make_config(addr), 1)
    report = engine.round()
    assert report.down == ["r4"] and not report.converged
    assert metric(engine, "srv6pm_collector_nodes_up") == 3
    assert metric(engine, "srv6pm_api_calls_total", method="GetState", code="UNAVAILABLE") == 1
    assert ("node_down", "r4", None) in kinds(engine)
    down = next(e for e in engine.events.history if e.kind == "node_down")
    assert f"127.0.0.1:{port}" in down.detail
    # The others went ahead: their SIDs, policies... but the ingress monitor of f1 waits for its egress at r4,
    # and the STAMP session for r4's reflector (no loss invented while r4 is away).
    assert "policy f1" in exporters["r1"].kinds()
    assert "flow f1 ingress" not in exporters["r1"].kinds()
    assert "stamp_session s1" not in exporters["r1"].kinds()
    assert report.waiting == 2
    # Backoff: right after the failure, a round does not try r4 again.
    status = engine.nodes["r4"]
    assert status.failures == 1 and status.retry_at > time.monotonic()
    engine.round()
    assert status.failures == 1
    time.sleep(0.25)  # past the first delay's upper bound (0.2 s)
    engine.round()
    assert status.failures == 2  # tried again, failed again: the next delay is longer
    assert [e for e in kinds(engine, "node_down")] == [("node_down", "r4", None)]  # said once
    # r4 starts: the next due probe finds it up, and everything is completed.
    late = StandIn("r4", calls, port=port).start()
    try:
        time.sleep(0.45)  # past the second delay's upper bound (0.4 s)
        # gRPC's channel may still be in its own reconnect backoff (about 1 s after a refused connect): the
        # rounds are spread over a few seconds so that the next due probe after it finds r4 up.
        converge(engine, rounds=50, pause_s=0.1)
        assert ("node_up", "r4", None) in kinds(engine)
        assert "flow f1 ingress" in exporters["r1"].kinds() and "stamp_session s1" in exporters["r1"].kinds()
        assert "flow f1 egress" in late.kinds()
        assert calls.index("r4", "apply", "flow f1 egress") < calls.index("r1", "apply", "flow f1 ingress")
        assert ("r4", False) in {(n, a) for n, a, _, _ in engine.statuses}
        assert engine.statuses[-1][:2] == ("r4", True)
    finally:
        late.stop()


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    random.seed(7)
    b = Backoff(0.5, 30)
    for attempt, cap in ((1, 0.5), (2, 1), (3, 2), (4, 4), (7, 30), (20, 30)):
        delays = [b.delay(attempt) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 100  # jittered, not a fixed value
    with pytest.raises(ValueError, match="backoff"):
        Backoff(5, 1)


def test_restart_with_new_boot_id_reapplies_everything(engine, exporters, calls):
    engine.load(make_config(addresses(exporters)), 1)
    converge(engine)
    r4 = exporters["r4"]
    old_boot = r4.boot_id
    want = r4.kinds()
    calls.clear()
    r4.restart(keep_state=True)  # the exporter's state survived; the kernel's may not have
    report = engine.round()
    restarted = [e for e in engine.events.history if e.kind == "node_restarted"]
    assert len(restarted) == 1 and restarted[0].node == "r4" and restarted[0].boot_id == r4.boot_id
    assert old_boot in restarted[0].detail
    # EVERYTHING desired for r4 was applied again, not only a diff (which is empty here).
    assert set(calls.of("r4", "apply")) == want
    assert calls.of("r1") == [] and calls.of("r2") == []
    assert report.unchanged == len(want)
    assert engine.round().converged  # work was done: converged is said again
    assert len(kinds(engine, "converged")) == 2
    # A restart that lost the state: the objects come back, as "applied" events.
    r4.restart(keep_state=False)
    converge(engine)
    assert r4.kinds() == want
    assert {o for k, n, o in kinds(engine, "applied") if n == "r4"} >= want


def test_refused_change_is_an_event_retried_with_backoff_and_the_rest_goes_on(engine, exporters, calls):
    exporters["r1"].refuse[("Policy", "f1")] = "Network is unreachable (route towards fcff:2::1)"
    engine.load(make_config(addresses(exporters)), 1)
    report = engine.round()
    assert report.failed == 1
    failed = [e for e in engine.events.history if e.kind == "apply_failed"]
    assert [(e.node, e.object) for e in failed] == [("r1", "policy f1")]
    assert "FAILED_PRECONDITION" in failed[0].detail and "Network is unreachable" in failed[0].detail
    assert metric(engine, "srv6pm_collector_apply_failures_total", node="r1") == 1
    assert metric(engine, "srv6pm_api_calls_total", method="ApplyPolicy", code="FAILED_PRECONDITION") == 1
    assert "policy f2" in exporters["r4"].kinds() and "flow f1 ingress" in exporters["r1"].kinds()
    # Within the backoff, no second attempt (and no second event), and not converged.
    report = engine.round()
    assert report.waiting == 1 and not report.converged
    assert calls.of("r1", "apply").count("policy f1") == 1
    # Fixed on the node: the retry after the backoff succeeds, then converged.
    del exporters["r1"].refuse[("Policy", "f1")]
    time.sleep(0.25)
    converge(engine)
    assert "policy f1" in exporters["r1"].kinds()
    assert len([e for e in engine.events.history if e.kind == "apply_failed"]) == 1


def test_config_change_adds_and_removes_in_order(engine, exporters, calls):
    ids = flowmon.Allocator(None)
    engine.load(make_config(addresses(exporters), allocator=ids), 1)
    converge(engine)
    calls.clear()
    doc = copy.deepcopy(GOOD)
    doc["flows"] = [f for f in doc["flows"] if f["name"] != "f1"]
    doc["flows"].append({"name": "f3", "from": "r2", "to": "r1", "via": ["r3"], "source": "fd01:2::2/128",
                         "destination": "fd01:1::102/128"})
    engine.load(make_config(addresses(exporters), doc, allocator=ids), 2)
    report = engine.round()
    assert report.removed == 3 and report.applied == 3  # f2 keeps its FlowMonID, so its monitors stay
    assert metric(engine, "srv6pm_collector_reconcile_actions_total", action="remove") == 3
    assert metric(engine, "srv6pm_api_calls_total", method="StopFlowMonitoring", code="OK") == 2
    assert "policy f1" not in exporters["r1"].kinds() and "flow f1 egress" not in exporters["r4"].kinds()
    assert {"policy f3", "flow f3 ingress"} <= exporters["r2"].kinds()
    assert "flow f3 egress" in exporters["r1"].kinds()
    # Removal: the ingress stops counting before the egress does, and before the policy goes.
    assert calls.index("r1", "remove", "flow f1 ingress") < calls.index("r1", "remove", "policy f1")
    assert calls.index("r1", "remove", "flow f1 ingress") < calls.index("r4", "remove", "flow f1 egress")
    # Every removal comes before any apply; the new flow's egress before its ingress.
    removes = [s for s, n, v, o in calls.calls if v == "remove"]
    applies = [s for s, n, v, o in calls.calls if v == "apply"]
    assert max(removes) < min(applies)
    assert calls.index("r1", "apply", "flow f3 egress") < calls.index("r2", "apply", "flow f3 ingress")
    assert {(n, o) for k, n, o in kinds(engine, "removed")} == {
        ("r1", "flow f1 ingress"), ("r1", "policy f1"), ("r4", "flow f1 egress")}
    assert engine.round().converged
    assert engine.events.history[-1].kind == "converged" and engine.generation == 2


def test_objects_nobody_wants_are_removed_and_a_changed_object_replaced(engine, exporters, calls):
    stray = pb.Policy(name="stray", destination="fd09::/64", segments=["fcff:2::1"], mode=pb.ENCAP_MODE_ENCAP)
    exporters["r1"].objects[("Policy", "stray")] = stray
    engine.load(make_config(addresses(exporters)), 1)
    converge(engine)
    assert "policy stray" not in exporters["r1"].kinds()
    # Someone changes f1's policy behind the collector's back: it is put right.
    with exporters["r1"].lock:
        exporters["r1"].objects[("Policy", "f1")].segments[:] = ["fcff:3::1", "fcff:4::100"]
    engine.round()
    assert list(exporters["r1"].objects[("Policy", "f1")].segments) == ["fcff:2::1", "fcff:3::1", "fcff:4::100"]


def test_node_that_stops_answering_goes_down_and_comes_back(engine, exporters):
    engine.load(make_config(addresses(exporters)), 1)
    converge(engine)
    exporters["r2"].unavailable = True
    report = engine.round()
    assert report.down == ["r2"] and not report.converged
    assert kinds(engine)[-1] == ("node_down", "r2", None)
    exporters["r2"].unavailable = False
    time.sleep(0.25)
    report = engine.round()
    assert ("node_up", "r2", None) in kinds(engine)
    assert not [e for e in engine.events.history if e.kind == "node_restarted"]  # same boot_id: not a restart
    # Nothing changed on r2, so coming back is no work and not a new convergence.
    assert report.applied == 0 and report.unchanged == 0


def test_thousands_of_objects_go_in_batches_and_an_exporter_without_them_gets_one_call_each(engine, exporters):
    """2,500 more flows r1 -> r4: r1 and r4 get them in ApplyBatch calls of at most BATCH objects; r2 answers
    ApplyBatch UNIMPLEMENTED (an older exporter) and still converges, one call per object."""
    from srv6pm.collector.reconcile import BATCH
    doc = copy.deepcopy(GOOD)
    doc["flows"] += [{"name": f"g{i}", "from": "r1", "to": "r4", "via": ["r2", "r3"], "source": "fd01:1::2/128",
                      "destination": f"fd01:4::{0x1000 + i:x}"} for i in range(2500)]
    exporters["r2"].no_batch = True
    engine.load(make_config(addresses(exporters), doc), 1)
    converge(engine)
    # SIDs, the egress monitors of f1 and the g flows, the reflector, f2's policy and ingress monitor
    assert len(exporters["r4"].objects) == 2 + 2501 + 1 + 2
    assert len(exporters["r1"].objects) == 2 + 2 * 2501 + 1 + 1  # SIDs, policy + ingress per flow, f2's egress, s1
    for node in ("r1", "r4"):
        sizes = exporters[node].batches
        assert sizes and max(sizes) <= BATCH and sum(sizes) == len(exporters[node].log.of(node))
    assert exporters["r4"].batches.count(BATCH) == 2  # one step of 2501 egress monitors and the reflector
    assert exporters["r2"].batches == [] and exporters["r2"].kinds() == {"local_sid fcff:2::1"}
    assert metric(engine, "srv6pm_api_calls_total", method="ApplyBatch", code="UNIMPLEMENTED") == 1
    assert metric(engine, "srv6pm_api_calls_total", method="StartFlowMonitoring", code="OK") == 2 * 2502  # f1, f2 and the g flows


def test_a_round_normalises_only_the_reported_objects_that_changed(engine, exporters, monkeypatch):
    """The objects of a GetState answer are validated again only where they differ from the answer before, byte
    for byte (every object every round cost seconds at 50,000 objects); a changed one is still seen and put
    right, and the memo holds one answer's objects."""
    from srv6pm.southbound import validate
    engine.load(make_config(addresses(exporters)), 1)
    converge(engine)
    engine.round()
    checked = []
    for kind, check in list(validate._BY_TYPE.items()):
        monkeypatch.setitem(validate._BY_TYPE, kind, lambda m, check=check: checked.append(type(m).__name__)
                            or check(m))
    assert not engine.round().applied
    assert checked == []
    with exporters["r1"].lock:
        exporters["r1"].objects[("Policy", "f1")].segments[:] = ["fcff:3::1", "fcff:4::100"]
    assert engine.round().applied == 1
    assert checked.count("Policy") <= 2 and set(checked) == {"Policy"}  # the changed one (and the stand-in's apply)
    assert list(exporters["r1"].objects[("Policy", "f1")].segments) == ["fcff:2::1", "fcff:3::1", "fcff:4::100"]
    status = engine.nodes["r1"]
    assert not engine.round().applied  # the memo: this answer's objects (and what was applied since, until then)
    assert len(status.normalised) == len(status.state.local_sids) + len(status.state.policies) + len(
        status.state.flows) + len(status.state.stamp_sessions) + status.state.HasField("stamp_reflector")


def test_what_the_collector_applied_is_not_validated_again_when_reported(engine, exporters, monkeypatch):
    """An object applied and acknowledged is the normal form the exporter now holds: the next GetState's copy of
    it, byte for byte the same, is taken from the memo (at 10,000 new flows, validating the 50,000 reported
    objects once more cost seconds); one reported otherwise is validated and put right."""
    from srv6pm.southbound import validate
    checked = []
    for kind, check in list(validate._BY_TYPE.items()):
        monkeypatch.setitem(validate._BY_TYPE, kind, lambda m, check=check: checked.append(type(m).__name__)
                            or check(m))
    engine.load(make_config(addresses(exporters)), 1)
    first = engine.round()
    assert first.applied and not first.waiting
    checked.clear()  # the stand-ins validate what they are sent
    assert engine.round().converged
    assert checked == []
    with exporters["r1"].lock:
        exporters["r1"].objects[("Policy", "f1")].segments[:] = ["fcff:3::1", "fcff:4::100"]
    assert engine.round().applied == 1
    assert set(checked) == {"Policy"}
