"""What the lab gives the control plane, without building anything: the collector configuration of a scenario
(it parses as one, with the scenario's data plane), and the command lines of its exporters, collector and
test traffic (the data plane, the collector's state directory, each flow's DSCP)."""

from __future__ import annotations

import yaml

from srv6pm.collector import config as collector_config
from srv6pm.collector import desired, flowmon
from srv6pm.config import KafkaSettings
from srv6pm.lab import control, scenario, topology
from srv6pm.lab.runner import Lab
from srv6pm.southbound.v1 import southbound_pb2 as pb

EXAMPLE = "scenarios/example.yaml"


def parsed_collector_config(s: scenario.Scenario) -> collector_config.Config:
    plan = topology.plan(s)
    doc = control.collector_config(plan, {n: 50051 + i for i, n in enumerate(s.nodes)})
    return collector_config.parse(yaml.safe_dump(doc), source="lab")


def test_the_collector_gets_the_scenario_s_data_plane_and_counts_at_every_node_with_ebpf():
    s = scenario.load(EXAMPLE)
    assert s.dataplane == "ebpf"
    c = parsed_collector_config(s)
    assert c.dataplane == "ebpf"
    state = desired.desired_state(flowmon.assign(c, flowmon.Allocator(None)))
    transit = {(node, m.flow, m.position) for node, objects in state.items() for m in objects.values()
               if isinstance(m, pb.FlowMonitor) and m.role == pb.ROLE_TRANSIT}
    assert transit == {("r2", "f1", 1), ("r3", "f1", 2), ("r4", "f2", 1)}


def test_an_nftables_scenario_gives_an_nftables_collector_configuration():
    text = open(EXAMPLE).read().replace("dataplane: ebpf", "dataplane: nftables")
    c = parsed_collector_config(scenario.parse(text, source="x.yaml"))
    assert c.dataplane == "nftables"
    state = desired.desired_state(flowmon.assign(c, flowmon.Allocator(None)))
    roles = {m.role for objects in state.values() for m in objects.values() if isinstance(m, pb.FlowMonitor)}
    assert roles == {pb.ROLE_INGRESS, pb.ROLE_EGRESS}


def test_command_lines_carry_the_data_plane_the_state_dir_and_the_dscp(tmp_path):
    text = open(EXAMPLE).read().replace("dataplane: ebpf", "dataplane: nftables")
    lab = Lab(scenario.parse(text, source="x.yaml"), kafka=KafkaSettings(bootstrap="127.0.0.1:1"), workdir=tmp_path)
    lab.grpc_ports = {n: 50051 + i for i, n in enumerate(lab.scenario.nodes)}
    exporter = lab.exporter_command("r2", tmp_path / "exporter-r2.json")
    assert exporter[exporter.index("--dataplane") + 1] == "nftables"
    assert exporter[exporter.index("--grpc-listen") + 1] == "127.0.0.1:50052"
    collector = lab.collector_command()
    assert collector[collector.index("--state-dir") + 1] == str(tmp_path / "collector-state")
    assert lab.traffic_hosts() == ["r1-host"]  # one generator for both flows
    assert {f["name"]: f["dscp"] for f in lab.traffic_flows("r1-host")} == {"f1": 46, "f2": 0}
    traffic = lab.traffic_command("r1-host")
    assert traffic[:4] == ["ip", "netns", "exec", "r1-host"]
    assert traffic[traffic.index("--flows") + 1] == str(tmp_path / "traffic-r1-host.flows.json")


def test_lab_check_shows_the_data_plane_and_each_flow_s_dscp():
    plan = topology.plan(scenario.load(EXAMPLE)).to_dict()
    assert plan["dataplane"] == "ebpf"
    assert {name: f["dscp"] for name, f in plan["flows"].items()} == {"f1": 46, "f2": 0}


def test_lab_check_shows_each_session_s_liveness_and_direct_measurement():
    text = open(EXAMPLE).read().replace("    rate: 10 ", "    liveness: {down_after: 4}\n    direct_measurement: true\n    rate: 10 ")
    plan = topology.plan(scenario.parse(text, source="x.yaml")).to_dict()
    (session,) = plan["stamp"].values()
    assert (session["liveness"], session["direct_measurement"]) == ({"down_after": 4, "up_after": 3}, True)
    (session,) = topology.plan(scenario.load(EXAMPLE)).to_dict()["stamp"].values()
    assert (session["liveness"], session["direct_measurement"]) == (None, False)


def test_a_scenario_session_s_liveness_reaches_its_sender():
    text = open(EXAMPLE).read().replace("    rate: 10 ", "    liveness: {down_after: 4}\n    rate: 10 ")
    assert "down_after" in text
    c = parsed_collector_config(scenario.parse(text, source="x.yaml"))
    assert c.stamp[0].liveness == (4, 3)
    state = desired.desired_state(flowmon.assign(c, flowmon.Allocator(None)))
    (session,) = [m for objects in state.values() for m in objects.values() if isinstance(m, pb.StampSession)]
    assert (session.liveness, session.liveness_down_after, session.liveness_up_after) == (True, 4, 3)


def test_a_scenario_session_s_direct_measurement_reaches_its_sender():
    """The scenario key is the southbound field's name; the collector configuration the lab writes carries it
    to the StampSession placed at the sender, and leaves it out (off) for a session that does not set it."""
    text = open(EXAMPLE).read().replace("    rate: 10 ", "    direct_measurement: true\n    rate: 10 ")
    assert "\n    direct_measurement: true\n" in text  # the key, not the example's comment
    s = scenario.parse(text, source="x.yaml")
    assert s.stamp[0].direct_measurement is True
    doc = control.collector_config(topology.plan(s), {n: 50051 + i for i, n in enumerate(s.nodes)})
    assert doc["stamp"][0]["direct_measurement"] is True
    c = parsed_collector_config(s)
    assert c.stamp[0].direct_measurement is True
    state = desired.desired_state(flowmon.assign(c, flowmon.Allocator(None)))
    (session,) = [m for objects in state.values() for m in objects.values() if isinstance(m, pb.StampSession)]
    assert session.direct_measurement is True and session.name == "s1"
    plain = scenario.load(EXAMPLE)
    assert plain.stamp[0].direct_measurement is False
    assert "direct_measurement" not in control.collector_config(topology.plan(plain), {n: 1 for n in plain.nodes})["stamp"][0]
    assert parsed_collector_config(plain).stamp[0].direct_measurement is False


def test_a_scenario_session_s_dscp_and_ssid_reach_its_sender():
    """Like direct_measurement: the scenario's dscp, ssid and stop_if_ssid_ignored are the southbound fields,
    carried by the collector configuration the lab writes to the StampSession placed at the sender; a session
    that sets none has none (no DSCP asked for, SSID 0)."""
    text = open(EXAMPLE).read().replace("    rate: 10 ", "    dscp: 46\n    ssid: 7\n    stop_if_ssid_ignored: true\n"
                                                         "    rate: 10 ")
    assert "\n    ssid: 7\n" in text
    s = scenario.parse(text, source="x.yaml")
    doc = control.collector_config(topology.plan(s), {n: 50051 + i for i, n in enumerate(s.nodes)})
    assert {k: doc["stamp"][0][k] for k in ("dscp", "ssid", "stop_if_ssid_ignored")} == \
        {"dscp": 46, "ssid": 7, "stop_if_ssid_ignored": True}
    state = desired.desired_state(flowmon.assign(parsed_collector_config(s), flowmon.Allocator(None)))
    (session,) = [m for objects in state.values() for m in objects.values() if isinstance(m, pb.StampSession)]
    assert (session.HasField("dscp"), session.dscp, session.ssid, session.stop_if_ssid_ignored) == (True, 46, 7, True)
    assert {k: v for k, v in topology.plan(s).to_dict()["stamp"]["s1"].items()
            if k in ("dscp", "ssid", "stop_if_ssid_ignored")} == {"dscp": 46, "ssid": 7, "stop_if_ssid_ignored": True}
    plain = scenario.load(EXAMPLE)
    state = desired.desired_state(flowmon.assign(parsed_collector_config(plain), flowmon.Allocator(None)))
    (session,) = [m for objects in state.values() for m in objects.values() if isinstance(m, pb.StampSession)]
    assert (session.HasField("dscp"), session.ssid, session.stop_if_ssid_ignored) == (False, 0, False)
