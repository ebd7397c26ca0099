"""Desired state per node and the diff's order: pure functions, no I/O (but for the FlowMonID state file).

The tests that predate the ebpf data plane run with ``dataplane: nftables`` (ingress and egress monitors
only, which carry the FlowMonID and positions 0 and 1); those of the ebpf data plane (FlowMonIDs, positions, transit monitors) follow.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from srv6pm.collector import config, desired, flowmon
from srv6pm.collector.desired import Action
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

from test_collector_config import GOOD


def small(dataplane: str = "nftables", doc=GOOD, allocator: flowmon.Allocator | None = None) -> config.Config:
    """GOOD parsed with ``dataplane``; with ebpf, its FlowMonIDs from ``allocator`` (default: a fresh one in memory)."""
    doc = {**copy.deepcopy(doc), "dataplane": dataplane}
    parsed = config.parse(yaml.safe_dump(doc), source="c.yaml")
    return flowmon.assign(parsed, allocator or flowmon.Allocator(None))


def objects(state, node) -> set[str]:
    return {desired.describe(m) for m in state[node].values()}


def test_desired_state_of_a_small_config():
    state = desired.desired_state(small())
    assert objects(state, "r1") == {"local_sid fcff:1::1", "local_sid fcff:1::100", "policy f1",
                                    "flow f1 ingress", "flow f2 egress", "stamp_session s1"}
    assert objects(state, "r2") == {"local_sid fcff:2::1"}
    assert objects(state, "r3") == {"local_sid fcff:3::1"}
    assert objects(state, "r4") == {"local_sid fcff:4::1", "local_sid fcff:4::100", "flow f1 egress",
                                    "policy f2", "flow f2 ingress", "stamp_reflector"}
    r1 = state["r1"]
    assert r1[("Policy", "f1")] == pb.Policy(name="f1", destination="fd01:4::101/128",
                                             segments=["fcff:2::1", "fcff:3::1", "fcff:4::100"],
                                             mode=pb.ENCAP_MODE_ENCAP)
    assert r1[("FlowMonitor", ("f1", pb.ROLE_INGRESS))] == pb.FlowMonitor(
        flow="f1", role=pb.ROLE_INGRESS, source_prefix="fd01:1::2/128", destination_prefix="fd01:4::101/128",
        flowmon_id=1)
    assert r1[("StampSession", "s1")] == pb.StampSession(
        name="s1", destination="fcff:4::2", source="fcff:1::2", port=862, segments=["fcff:2::1", "fcff:3::1"],
        return_segments=["fcff:3::1", "fcff:2::1"], rate=10, timeout_s=2, reflector_node="r4",
        auth_key_file="/etc/srv6pm/stamp.key")
    assert state["r4"][("StampReflector", "reflector")] == pb.StampReflector(
        bind="fcff:4::2", port=862, auth_key_file="/etc/srv6pm/stamp.key")
    assert state["r4"][("LocalSid", "fcff:4::100")].table == 254


def test_desired_messages_are_in_normal_form():
    """What the collector wants must compare equal to what a conforming exporter reports."""
    for node_objects in desired.desired_state(small()).values():
        for m in node_objects.values():
            assert validate.request(m) == m


def test_phases():
    state = desired.desired_state(small())
    phases = {desired.describe(m): desired.phase_of(m) for n in state.values() for m in n.values()}
    assert phases["local_sid fcff:1::1"] == 1
    assert phases["flow f1 egress"] == 2 and phases["stamp_reflector"] == 2
    assert phases["policy f1"] == 3
    assert phases["flow f1 ingress"] == 4 and phases["stamp_session s1"] == 4


def test_diff_from_nothing_applies_everything_in_phase_order():
    want = desired.desired_state(small())["r1"]
    actions = desired.diff(want, {})
    assert all(a.verb == "apply" and not a.replaces for a in actions)
    assert [a.phase for a in actions] == sorted(a.phase for a in actions)
    assert {a.key for a in actions} == set(want)


def test_diff_of_equal_state_is_empty_unless_full():
    want = desired.desired_state(small())["r4"]
    state = pb.NodeState(local_sids=[want[("LocalSid", "fcff:4::1")], want[("LocalSid", "fcff:4::100")]],
                         policies=[want[("Policy", "f2")]],
                         flows=[want[("FlowMonitor", ("f1", pb.ROLE_EGRESS))],
                                want[("FlowMonitor", ("f2", pb.ROLE_INGRESS))]],
                         stamp_reflector=want[("StampReflector", "reflector")])
    actual = desired.actual_state(state)
    assert desired.diff(want, actual) == []
    full = desired.diff(want, actual, full=True)
    assert {a.key for a in full} == set(want) and all(a.verb == "apply" for a in full)


def test_diff_removes_in_reverse_phase_order_then_applies_and_replaces():
    want = desired.desired_state(small())["r1"]
    stale = {
        ("LocalSid", "fcff:1::9"): validate.local_sid(pb.LocalSid(sid="fcff:1::9", behavior=pb.SID_BEHAVIOR_END)),
        ("Policy", "old"): validate.policy(pb.Policy(name="old", destination="fd09::/64", segments=["fcff:2::1"])),
        ("FlowMonitor", ("old", pb.ROLE_INGRESS)): validate.flow_monitor(pb.FlowMonitor(
            flow="old", role=pb.ROLE_INGRESS, source_prefix="fd09::1/128", destination_prefix="fd09::/64")),
        ("FlowMonitor", ("gone", pb.ROLE_EGRESS)): validate.flow_monitor(pb.FlowMonitor(
            flow="gone", role=pb.ROLE_EGRESS, source_prefix="fd09::1/128", destination_prefix="fd09::/64")),
    }
    changed = pb.Policy()
    changed.CopyFrom(want[("Policy", "f1")])
    changed.segments[:] = ["fcff:3::1", "fcff:4::100"]
    actual = {**stale, ("Policy", "f1"): changed,
              **{k: m for k, m in want.items() if k != ("Policy", "f1")}}
    actions = desired.diff(want, actual)
    assert [(a.verb, a.object) for a in actions] == [
        ("remove", "flow old ingress"),     # phase 4
        ("remove", "policy old"),           # phase 3
        ("remove", "flow gone egress"),     # phase 2
        ("remove", "local_sid fcff:1::9"),  # phase 1
        ("apply", "policy f1"),             # the replacement, in its own phase
    ]
    assert actions[-1].replaces and actions[-1].message == want[("Policy", "f1")]
    assert [a.step for a in actions] == sorted(a.step for a in actions)


def test_steps_are_removals_4_to_1_then_applies_1_to_4():
    assert desired.STEPS == (("remove", 4), ("remove", 3), ("remove", 2), ("remove", 1),
                             ("apply", 1), ("apply", 2), ("apply", 3), ("apply", 4))
    sid = validate.local_sid(pb.LocalSid(sid="fcff::1", behavior=pb.SID_BEHAVIOR_END))
    assert Action("remove", sid, 1).step == 3 and Action("apply", sid, 1).step == 4


def test_prerequisites_tie_ingress_to_egress_and_sessions_to_reflectors():
    c = small()
    state = desired.desired_state(c)
    ingress = state["r1"][("FlowMonitor", ("f1", pb.ROLE_INGRESS))]
    assert desired.prerequisite(c, "r1", ingress) == ("r4", ("FlowMonitor", ("f1", pb.ROLE_EGRESS)))
    session = state["r1"][("StampSession", "s1")]
    assert desired.prerequisite(c, "r1", session) == ("r4", ("StampReflector", "reflector"))
    assert desired.prerequisite(c, "r1", state["r1"][("Policy", "f1")]) is None


def test_unconforming_reported_object_is_kept_as_reported():
    """An object the validator refuses still shows up in the actual state (and so gets replaced)."""
    bad = pb.Policy(name="f1", destination="fd01:4::101/128", segments=["not-an-address"])
    actual = desired.actual_state(pb.NodeState(policies=[bad]))
    assert actual == {("Policy", "f1"): bad}
    want = desired.desired_state(small())["r1"]
    assert any(a.key == ("Policy", "f1") and a.replaces for a in desired.diff(want, actual))


def test_to_json_lists_objects_per_node_with_phase():
    doc = desired.to_json(desired.desired_state(small()))
    assert set(doc) == {"r1", "r2", "r3", "r4"}
    policy = next(o for o in doc["r1"] if o["object"] == "policy f1")
    assert policy["phase"] == 3 and policy["segments"] == ["fcff:2::1", "fcff:3::1", "fcff:4::100"]
    assert [o["phase"] for o in doc["r1"]] == sorted(o["phase"] for o in doc["r1"])


def test_nftables_data_plane_names_flows_by_flowmon_id_without_transit_monitors():
    """The collector allocates FlowMonIDs with nftables too (issue 8 point 1): every monitor of a flow carries
    its id; only the two ends count, the ingress at 0 and the egress at 1, both accepted by the southbound rules."""
    c = small("nftables")
    assert dict(c.flowmon_ids) == {"f1": 1, "f2": 2}
    state = desired.desired_state(c)
    monitors = [m for n in state.values() for m in n.values() if isinstance(m, pb.FlowMonitor)]
    assert sorted((m.flow, m.role, m.flowmon_id, m.position) for m in monitors) == [
        ("f1", pb.ROLE_INGRESS, 1, 0), ("f1", pb.ROLE_EGRESS, 1, 1),
        ("f2", pb.ROLE_INGRESS, 2, 0), ("f2", pb.ROLE_EGRESS, 2, 1)]
    assert monitors_of(state, "f1") == [("r1", "ingress", 0, 1), ("r4", "egress", 1, 1)]  # no transit r2, r3
    assert all(validate.request(m) == m for m in monitors)


def test_every_data_plane_needs_the_flowmon_ids():
    for dataplane in ("nftables", "ebpf"):
        unassigned = config.parse(yaml.safe_dump({**copy.deepcopy(GOOD), "dataplane": dataplane}), source="c.yaml")
        with pytest.raises(ValueError, match=r"^flow 'f1' has no FlowMonID: every flow needs one"):
            desired.desired_state(unassigned)


# ---------------------------------------------------------------- the ebpf data plane

def monitors_of(state, flow):
    """(node, role name, position, flowmon_id) of ``flow``'s monitors, in position order."""
    out = [(node, desired.describe(m).split()[-1], m.position, m.flowmon_id)
           for node, objects in state.items() for m in objects.values()
           if isinstance(m, pb.FlowMonitor) and m.flow == flow]
    return sorted(out, key=lambda t: t[2])


def test_ebpf_is_the_default_and_every_counting_point_has_the_flowmon_id_and_its_position():
    c = small("ebpf")
    assert config.parse(yaml.safe_dump(GOOD), source="c.yaml").dataplane == "ebpf"
    assert dict(c.flowmon_ids) == {"f1": 1, "f2": 2}
    state = desired.desired_state(c)
    assert monitors_of(state, "f1") == [("r1", "ingress", 0, 1), ("r2", "transit", 1, 1),
                                        ("r3", "transit", 2, 1), ("r4", "egress", 3, 1)]
    # f2 has explicit segments: r3's End SID, then r1's decap SID.
    assert monitors_of(state, "f2") == [("r4", "ingress", 0, 2), ("r3", "transit", 1, 2), ("r1", "egress", 2, 2)]
    assert objects(state, "r2") == {"local_sid fcff:2::1", "flow f1 transit"}
    assert objects(state, "r3") == {"local_sid fcff:3::1", "flow f1 transit", "flow f2 transit"}
    assert state["r2"][("FlowMonitor", ("f1", pb.ROLE_TRANSIT))] == pb.FlowMonitor(
        flow="f1", role=pb.ROLE_TRANSIT, source_prefix="fd01:1::2/128", destination_prefix="fd01:4::101/128",
        flowmon_id=1, position=1)
    for node_objects in state.values():
        for m in node_objects.values():
            assert validate.request(m) == m  # the one home of the field rules accepts all of them


def test_positions_count_only_counting_points():
    """A segment that is no configured node's SID (a router without exporter) gets no position."""
    doc = copy.deepcopy(GOOD)
    doc["flows"][1]["segments"] = ["fcff:99::1", "fcff:3::1", "fcff:77::1", "fcff:1::100"]
    state = desired.desired_state(small("ebpf", doc))
    assert monitors_of(state, "f2") == [("r4", "ingress", 0, 2), ("r3", "transit", 1, 2), ("r1", "egress", 2, 2)]


def test_a_direct_flow_has_ingress_0_and_egress_1():
    doc = copy.deepcopy(GOOD)
    doc["flows"][0]["via"] = []
    assert monitors_of(desired.desired_state(small("ebpf", doc)), "f1") == [("r1", "ingress", 0, 1),
                                                                             ("r4", "egress", 1, 1)]


def test_transit_monitors_go_with_the_egress_before_policies_and_ingress():
    state = desired.desired_state(small("ebpf"))
    phases = {(node, desired.describe(m)): desired.phase_of(m) for node, n in state.items() for m in n.values()}
    assert phases[("r2", "flow f1 transit")] == 2 == phases[("r4", "flow f1 egress")]
    assert phases[("r1", "policy f1")] == 3 and phases[("r1", "flow f1 ingress")] == 4
    actions = desired.diff(state["r3"], {})
    assert [(a.verb, a.phase, a.object) for a in actions] == [
        ("apply", 1, "local_sid fcff:3::1"), ("apply", 2, "flow f1 transit"), ("apply", 2, "flow f2 transit")]
    assert desired.STEPS[actions[1].step] == ("apply", 2)
    # Removed like an egress monitor: after the policies, before the SIDs.
    stale = desired.diff({}, state["r3"])
    assert [a.object for a in stale] == ["flow f1 transit", "flow f2 transit", "local_sid fcff:3::1"]


def test_ebpf_prerequisites_stay_ingress_to_egress():
    c = small("ebpf")
    state = desired.desired_state(c)
    ingress = state["r1"][("FlowMonitor", ("f1", pb.ROLE_INGRESS))]
    assert desired.prerequisite(c, "r1", ingress) == ("r4", ("FlowMonitor", ("f1", pb.ROLE_EGRESS)))
    assert desired.prerequisite(c, "r2", state["r2"][("FlowMonitor", ("f1", pb.ROLE_TRANSIT))]) is None


def test_ebpf_without_flowmon_ids_is_refused():
    parsed = config.parse(yaml.safe_dump(GOOD), source="c.yaml")
    with pytest.raises(ValueError, match="flow 'f1' has no FlowMonID"):
        desired.desired_state(parsed)


def test_flowmon_ids_are_stable_across_a_re_parse_and_a_restart_with_the_state_file(tmp_path):
    path = flowmon.state_path(tmp_path)
    first = desired.desired_state(small("ebpf", allocator=flowmon.Allocator(path)))
    # A restarted collector: a new allocator reads the file; the flows come in another order.
    reordered = copy.deepcopy(GOOD)
    reordered["flows"].reverse()
    again = desired.desired_state(small("ebpf", reordered, flowmon.Allocator(path)))
    assert again == first
    # A reload without f1 and with a new f3: f2 keeps its id, f3 gets a never-used one, not f1's.
    changed = copy.deepcopy(GOOD)
    changed["flows"][0] = {**changed["flows"][0], "name": "f3"}
    allocator = flowmon.Allocator(path)
    state = desired.desired_state(small("ebpf", changed, allocator))
    assert [m[3] for m in monitors_of(state, "f2")] == [2, 2, 2]
    assert {m[3] for m in monitors_of(state, "f3")} == {3}
    assert allocator.ids == {"f2": 2, "f3": 3}


def test_switching_to_nftables_and_back_keeps_the_ids(tmp_path):
    allocator = flowmon.Allocator(flowmon.state_path(tmp_path))
    assert dict(small("ebpf", allocator=allocator).flowmon_ids) == {"f1": 1, "f2": 2}
    nft = small("nftables", GOOD, allocator)
    assert dict(nft.flowmon_ids) == {"f1": 1, "f2": 2}
    assert monitors_of(desired.desired_state(nft), "f2") == [("r4", "ingress", 0, 2), ("r1", "egress", 1, 2)]
    assert dict(small("ebpf", allocator=flowmon.Allocator(flowmon.state_path(tmp_path))).flowmon_ids) == \
        {"f1": 1, "f2": 2}
