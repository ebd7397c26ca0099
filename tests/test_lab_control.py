"""The control plane in the local lab: the collector drives real node exporters over gRPC.

The exporters start empty; every SID, policy, monitored flow and STAMP session
reaches them from the collector. These tests change the network under a
running lab -- a router that loses everything and comes back, a configuration
that drops and re-adds a flow -- and check that the collector brings the
kernel back to the configuration and that the loss results resume, exact.

The collector's graph is the in-memory GraphStore (ArangoDB cannot run here),
read through its JSON dump.

Needs root. Node names are random so that these tests never touch a lab that is running.
"""

import json
import socket
import os
import shutil
import time

import pytest
from pyroute2 import IPRoute

from srv6pm import bpf
from srv6pm.clock import PeriodClock
from srv6pm.exporter import ebpf
from srv6pm.nft import Nft
from srv6pm.netns import NetnsThread

from test_lab_e2e import PERIOD, by_flow_period, collect, complete_periods
from test_lab_e2e import lab  # noqa: F401  (the running-lab fixture)

pytestmark = [
    pytest.mark.srv6,
    pytest.mark.netns,
    pytest.mark.services,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, SRv6, nftables)"),
    # Both data planes: the kernel evidence is the nftables counting sets or the eBPF counter maps
    # (the lab fixture takes its data plane as an indirect parameter; ebpf is the scenario default).
    pytest.mark.parametrize("lab", ["ebpf", "nftables"], indirect=True),
]


def encap_routes(netns):
    """Destinations of the seg6 encap routes in ``netns``."""
    with IPRoute(netns=netns) as ipr:
        return sorted(r.get_attr("RTA_DST") for r in ipr.get_routes(family=10)
                      if r.get_attr("RTA_ENCAP_TYPE") == 5)  # LWTUNNEL_ENCAP_SEG6


def counted(lab, node):
    """How many (flow, role) counting points the node's data plane holds, read from the kernel."""
    if lab.scenario.dataplane == "ebpf":
        try:
            m = bpf.pinned_map(ebpf.pin_dir(node) / "counters0")
        except bpf.BpfError:
            return 0
        try:
            return m.dump()[2]
        finally:
            os.close(m.fd)
    return sum(flow_elements(node, f"{role}_c0") for role in ("ingress", "egress"))


def lose_counters(lab, node):
    """What a reboot does to the node's data plane: its counters (and marking) are gone."""
    if lab.scenario.dataplane == "ebpf":
        with NetnsThread(node) as t:
            for index, _ in t.call(socket.if_nameindex):
                for direction in ("ingress", "egress"):
                    t.call(bpf.tc_detach, index, direction, handle=ebpf.TC_HANDLE, priority=ebpf.TC_PRIORITY)
        bpf.unpin(ebpf.pin_dir(node))
    else:
        nft = Nft(node)
        nft.run([{"delete": {"table": {"family": "ip6", "name": "srv6pm"}}}])
        nft.close()


def flow_elements(netns, set_name):
    """Number of flow elements in the exporter's counting set ``set_name`` (0 if the table is gone)."""
    nft = Nft(netns)
    try:
        out = nft.run([{"list": {"set": {"family": "ip6", "table": "srv6pm", "name": set_name}}}])
    except Exception:
        return 0
    finally:
        nft.close()
    (s,) = [o["set"] for o in out if "set" in o]
    return len(s.get("elem", []))


def graph(lab):
    return json.loads((lab.workdir / "graph.json").read_text())


def path_edge(snapshot, key):
    edges = snapshot.get("paths", [])
    return next((e for e in edges if e.get("_key") == key), None)


def wait_graph(lab, check, timeout=30):
    """The graph dump once ``check(snapshot)`` holds (the collector's results consumer runs at its own pace)."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = graph(lab)
        if check(snapshot):
            return snapshot
        assert time.monotonic() < deadline, f"graph never got there: {snapshot.get('paths')}"
        lab.check_children()
        time.sleep(0.3)


def events_of(lab, kind, node=None):
    lab.events.poll(0.2)
    return [e for e in lab.events.seen if e.get("kind") == kind and (node is None or e.get("node") == node)]


def test_the_collector_configured_the_empty_exporters(lab):
    a, b, c, d = lab.nodes
    plan = lab.plan
    assert encap_routes(a) == sorted([plan.flows["f1"].dst_addr, plan.flows["f2"].dst_addr])
    assert encap_routes(b) == encap_routes(c) == encap_routes(d) == []
    if lab.scenario.dataplane == "ebpf":  # f1 a-b-c-d and f2 a-d-c, each counted at every node of its path
        assert [counted(lab, n) for n in (a, b, c, d)] == [2, 1, 2, 2]
    else:  # ingress and egress only
        assert flow_elements(a, "ingress_c0") == 2 and flow_elements(d, "egress_c0") == 1
        assert flow_elements(c, "egress_c1") == 1 and flow_elements(b, "ingress_c0") == 0
    applied = events_of(lab, "applied")
    assert {e["node"] for e in applied} == {a, b, c, d}  # every node got at least its SIDs
    collect(lab, lambda rs: len(complete_periods(rs, "f1")) >= 2 and len(complete_periods(rs, "f2")) >= 2)
    assert all(r["lost_packets"] == 0 for r in lab.seen if r.get("flow") and r["complete"])


def test_a_router_that_lost_everything_is_reconciled_and_its_loss_results_resume(lab):
    a, b, c, d = lab.nodes
    clock = PeriodClock(PERIOD)
    collect(lab, lambda rs: len(complete_periods(rs, "f1")) >= 2)
    boot_ids = {e.get("boot_id") for e in events_of(lab, "node_up", a)}

    # The ingress router "reboots": its exporter dies, its SRv6 routes, counters and state are gone.
    lab.kill(f"exporter-{a}")
    with IPRoute(netns=a) as ipr:
        for flow in ("f1", "f2"):
            ipr.route("del", dst=f"{lab.plan.flows[flow].dst_addr}/128")
    lose_counters(lab, a)
    for path in lab.workdir.glob(f"exporter-{a}.state*"):  # the state files and the unpublished-records buffer
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert encap_routes(a) == []
    time.sleep(2 * PERIOD)
    assert events_of(lab, "node_down", a), "the collector did not notice the exporter was gone"
    generation = lab.generation()
    down_at = clock.current()

    lab.restart(f"exporter-{a}")
    deadline = time.monotonic() + 30
    while not events_of(lab, "node_restarted", a):
        assert time.monotonic() < deadline, "no node_restarted event"
        lab.check_children()
    restarted = events_of(lab, "node_restarted", a)[-1]
    assert restarted["boot_id"] not in boot_ids
    deadline = time.monotonic() + 30
    while sorted(encap_routes(a)) != sorted([lab.plan.flows["f1"].dst_addr, lab.plan.flows["f2"].dst_addr]):
        assert time.monotonic() < deadline, f"routes not re-applied: {encap_routes(a)}"
        time.sleep(0.2)
    while counted(lab, a) != 2:  # the monitors come after the policies (phase 4)
        assert time.monotonic() < deadline, f"flows not re-applied: {counted(lab, a)}"
        time.sleep(0.2)

    # Loss results resume: complete periods after the restart, with no invented loss anywhere.
    collect(lab, lambda rs: any(k > down_at + 2 for k in complete_periods(rs, "f1"))
            and any(k > down_at + 2 for k in complete_periods(rs, "f2")), timeout=60)
    results = by_flow_period(lab.seen)
    assert all(r["lost_packets"] == 0 for r in results.values() if r["complete"]), \
        [(r["flow"], r["period"], r["tx_packets"], r["rx_packets"], down_at) for r in results.values()
         if r["complete"] and r["lost_packets"]]
    assert all(r["lost_packets"] is None for r in results.values() if not r["complete"])
    assert any(not r["complete"] for (f, k), r in results.items() if f == "f1" and k >= down_at - 1), \
        "the periods without an ingress exporter must show as incomplete"
    assert lab.generation() == generation, "a restart is not a configuration change"


def test_a_config_change_removes_and_adds_a_flow_while_the_lab_runs(lab):
    a, b, c, d = lab.nodes
    clock = PeriodClock(PERIOD)
    pids = {name: child.pid for name, child in lab.children.items()}
    collect(lab, lambda rs: len(complete_periods(rs, "f1")) >= 2 and len(complete_periods(rs, "f2")) >= 2)
    wait_graph(lab, lambda g: ((path_edge(g, "flow:f2") or {}).get("loss") or {}).get("complete") is True)

    # Remove f2: its policy at a and its monitoring at a and c go; f1 and everything else stay.
    generation = lab.generation()
    lab.write_collector_config(flows={"f1"})
    lab.wait_converged(after=generation, timeout=30)
    removed_at = clock.current()
    assert encap_routes(a) == [lab.plan.flows["f1"].dst_addr]
    if lab.scenario.dataplane == "ebpf":  # f2's points at a, d (transit) and c (egress) are gone
        assert [counted(lab, n) for n in (a, b, c, d)] == [1, 1, 1, 1]
    else:
        assert flow_elements(a, "ingress_c0") == 1 and flow_elements(c, "egress_c0") == 0
        assert flow_elements(d, "egress_c0") == 1
    wait_graph(lab, lambda g: path_edge(g, "flow:f2") is None, timeout=5)
    collect(lab, lambda rs: max(complete_periods(rs, "f1")) >= removed_at + 4)
    f2_periods = [r["period"] for r in lab.seen if r.get("flow") == "f2"]
    # Blocks of periods that had started before the removal may still pair; nothing later.
    assert max(f2_periods) <= removed_at + 1, (removed_at, sorted(f2_periods)[-5:])

    # Add it back: f2 is measured again, exactly.
    generation = lab.generation()
    lab.write_collector_config(flows=None)
    lab.wait_converged(after=generation, timeout=30)
    added_at = clock.current()
    assert encap_routes(a) == sorted([lab.plan.flows["f1"].dst_addr, lab.plan.flows["f2"].dst_addr])
    collect(lab, lambda rs: len([k for k in complete_periods(rs, "f2") if k > added_at]) >= 2, timeout=60)
    results = by_flow_period(lab.seen)
    assert all(r["lost_packets"] == 0 for r in results.values() if r["complete"]), \
        [r for r in results.values() if r["complete"] and r["lost_packets"]]
    wait_graph(lab, lambda g: path_edge(g, "flow:f2") is not None, timeout=5)
    # f1 has a result for every period while f2 came and went. On a loaded 2-core machine one guard read
    # has been seen to miss its window while the exporter applied a change (1 s periods): the block of
    # that period and the next one of its colour are then published as incomplete, never as loss, so at
    # most those two may be incomplete.
    results = by_flow_period(lab.seen)
    f1 = complete_periods(lab.seen, "f1")
    f1_all = sorted(k for (flow, k) in results if flow == "f1" and f1[0] <= k <= f1[-1])
    assert f1_all == list(range(f1[0], f1[-1] + 1)), "f1 has periods without any result while f2 came and went"
    unmeasured = sorted(set(f1_all) - set(f1))
    assert len(unmeasured) <= 1 or unmeasured == [unmeasured[0], unmeasured[0] + 2], \
        f"f1 periods incomplete beyond one missed guard read: {unmeasured}"
    # Nothing was restarted to apply the changes.
    assert {name: child.pid for name, child in lab.children.items()} == pids
    kinds = {e["kind"] for e in lab.events.seen}
    assert {"config_loaded", "applied", "removed", "converged"} <= kinds
