import pytest

from srv6pm.lab.scenario import ScenarioError, load, parse

BASE = """
period: 2
nodes: [r1, r2, r3, r4]
links: [[r1, r2], [r2, r3], [r3, r4], [r1, r4]]
flows:
  - {name: f1, from: r1, to: r4, via: [r2, r3], rate: 500}
"""


def test_example_scenario_loads():
    s = load("scenarios/example.yaml")
    assert s.period == 2
    assert s.nodes == ("r1", "r2", "r3", "r4")
    f1 = s.flows[0]
    assert (f1.name, f1.src, f1.dst, f1.via, f1.rate) == ("f1", "r1", "r4", ("r2", "r3"), 500)
    assert f1.segments == ("r2", "r3", "r4")
    assert s.neighbours("r1") == ["r2", "r4"]


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("period: [", "not valid YAML (line"),
    ("- 1", "must be a mapping"),
    (BASE.replace("period: 2", "period: 0"), "period: must be between"),
    (BASE.replace("period: 2", "period: two"), "period: must be a number"),
    (BASE.replace("period: 2\n", ""), "period: missing"),
    (BASE + "colour: red\n", "colour: unknown field"),
    (BASE.replace("[r1, r2, r3, r4]", "[r1, r2, r3, r4, r1]"), "nodes[4]: duplicate node 'r1'"),
    (BASE.replace("[r1, r2, r3, r4]", "[r1, R2, r3, r4]"), "nodes[1]: 'R2' is not a valid node name"),
    (BASE.replace("[r1, r2, r3, r4]", "[r1, r2, r3, r4, host]"), "nodes[4]: 'host' is reserved"),
    (BASE.replace("[r1, r2, r3, r4]", "[r1, r2, r3, r4, averyveryverylongname]"), "not a valid node name"),
    (BASE.replace("[[r1, r2],", "[[r1, r9],"), "links[0][1]: unknown node 'r9' (nodes: r1, r2, r3, r4)"),
    (BASE.replace("[[r1, r2],", "[[r1, r1],"), "links[0]: links 'r1' to itself"),
    (BASE.replace("[r1, r4]]", "[r1, r4], [r4, r1]]"), "links[4]: duplicate link"),
    (BASE.replace("[[r1, r2],", "[[r1],"), "links[0]: must be a pair"),
    (BASE.replace("via: [r2, r3]", "via: [r2, r9]"), "flows[0].via[1]: unknown node 'r9'"),
    (BASE.replace("via: [r2, r3]", "via: r2"), "flows[0].via: must be a list"),
    (BASE.replace("to: r4", "to: r1"), "flows[0].to: same node as 'from'"),
    (BASE.replace("rate: 500", "rate: -5"), "flows[0].rate: must be between"),
    (BASE.replace("rate: 500", "rate: true"), "flows[0].rate: must be a number"),
    (BASE.replace("rate: 500", "rate: 500, ratee: 3"), "flows[0].ratee: unknown field"),
    (BASE.replace(", rate: 500", ""), "flows[0].rate: missing"),
    (BASE + "  - {name: f1, from: r1, to: r3, rate: 1}\n", "flows[1].name: duplicate flow name 'f1'"),
    (BASE.replace(", [r3, r4], [r1, r4]", ""), "flows[0].via: no path from 'r3' to 'r4'"),
])
def test_errors_name_the_file_and_the_field(text, message):
    with pytest.raises(ScenarioError) as err:
        parse(text, source="bad.yaml")
    assert str(err.value).startswith("bad.yaml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load(tmp_path / "nope.yaml")


STAMP = BASE.replace("[[r1, r2], [r2, r3]", "[[r1, r2], {ends: [r2, r3], delay_ms: 20}") + """
stamp:
  - {name: s1, from: r1, to: r4, via: [r2, r3], return_via: [r3, r2], rate: 10}
"""


def test_link_delay_and_stamp_sessions():
    s = parse(STAMP)
    assert s.links[1].delay_ms == 20 and s.links[0].delay_ms == 0
    (s1,) = s.stamp
    assert (s1.name, s1.src, s1.dst, s1.via, s1.return_via, s1.rate) == ("s1", "r1", "r4", ("r2", "r3"), ("r3", "r2"), 10)
    assert parse(BASE).stamp == ()


def test_stamp_liveness_setting():
    assert parse(STAMP).stamp[0].liveness is None
    assert parse(STAMP.replace("rate: 10}", "rate: 10, liveness: true}")).stamp[0].liveness == (3, 3)
    assert parse(STAMP.replace("rate: 10}", "rate: 10, liveness: false}")).stamp[0].liveness is None
    got = parse(STAMP.replace("rate: 10}", "rate: 10, liveness: {down_after: 2, up_after: 5}}")).stamp[0].liveness
    assert got == (2, 5)
    assert parse(STAMP.replace("rate: 10}", "rate: 10, liveness: {up_after: 4}}")).stamp[0].liveness == (3, 4)


def test_stamp_direct_measurement_setting():
    """Named as the southbound StampSession field; off unless the session turns it on."""
    assert parse(STAMP).stamp[0].direct_measurement is False
    assert parse(STAMP.replace("rate: 10}", "rate: 10, direct_measurement: true}")).stamp[0].direct_measurement is True
    assert parse(STAMP.replace("rate: 10}", "rate: 10, direct_measurement: false}")).stamp[0].direct_measurement is False
    both = parse(STAMP.replace("rate: 10}", "rate: 10, liveness: true, direct_measurement: true}")).stamp[0]
    assert (both.liveness, both.direct_measurement) == ((3, 3), True)


def test_stamp_rfc8972_settings_dscp_ssid():
    """Named and judged as the southbound StampSession fields (the collector configuration's rules)."""
    plain = parse(STAMP).stamp[0]
    assert (plain.dscp, plain.ssid, plain.stop_if_ssid_ignored, plain.rfc8972()) == (None, 0, False, {})
    given = parse(STAMP.replace("rate: 10}", "rate: 10, dscp: 0, ssid: 7, stop_if_ssid_ignored: true}")).stamp[0]
    assert (given.dscp, given.ssid, given.stop_if_ssid_ignored) == (0, 7, True)
    assert given.rfc8972() == {"dscp": 0, "ssid": 7, "stop_if_ssid_ignored": True}  # DSCP 0 is asked for too


@pytest.mark.parametrize("change, message", [
    (("delay_ms: 20", "delay_ms: -1"), "links[1].delay_ms: must be between 0 and 10000"),
    (("delay_ms: 20", "delay: 20"), "links[1].delay: unknown field"),
    (("{ends: [r2, r3]", "{ends: [r2]"), "links[1].ends: must be a pair"),
    (("{ends: [r2, r3]", "{ends: [r2, r7]"), "links[1].ends[1]: unknown node 'r7'"),
    (("return_via: [r3, r2]", "return_via: [r3, r9]"), "stamp[0].return_via[1]: unknown node 'r9'"),
    (("rate: 10}", "rate: 5000}"), "stamp[0].rate: 5000 not in 0.01..1000"),
    (("to: r4, via: [r2, r3], return", "to: r1, via: [r2, r3], return"), "stamp[0].to: same node as 'from'"),
    (("name: s1", "name: 's 1'"), "stamp[0].name"),
    (("rate: 10}", "rate: 10, liveness: yes please}"), "stamp[0].liveness: must be true, false or a mapping"),
    (("rate: 10}", "rate: 10, liveness: {down_after: 0}}"), "stamp[0].liveness.down_after: must be a whole number"),
    (("rate: 10}", "rate: 10, liveness: {up_after: 1001}}"), "stamp[0].liveness.up_after: 1001 not in 1..1000"),
    (("rate: 10}", "rate: 10, liveness: {after: 1}}"), "stamp[0].liveness.after: unknown field"),
    (("rate: 10}", "rate: 10, direct_measurement: 1}"), "s.yaml: stamp[0].direct_measurement: must be true or false, got int"),
    (("rate: 10}", "rate: 10, direct_measurement: 'yes'}"),
     "s.yaml: stamp[0].direct_measurement: must be true or false, got text"),
    (("rate: 10}", "rate: 10, direct_measurements: true}"), "stamp[0].direct_measurements: unknown field"),
    (("rate: 10}", "rate: 10, dscp: 64}"), "s.yaml: stamp[0].dscp: 64 is not a DSCP (0..63)"),
    (("rate: 10}", "rate: 10, dscp: -1}"), "stamp[0].dscp: must be a whole number (0 or more), got int -1"),
    (("rate: 10}", "rate: 10, ssid: 0}"), "stamp[0].ssid: must be a whole number from 1 to 65535, got 0"),
    (("rate: 10}", "rate: 10, ssid: 65536}"), "stamp[0].ssid: must be a whole number from 1 to 65535, got 65536"),
    (("rate: 10}", "rate: 10, stop_if_ssid_ignored: true}"),
     "stamp[0].stop_if_ssid_ignored: needs an ssid: without one no reply can ignore it"),
    (("rate: 10}", "rate: 10, ssid: 3, stop_if_ssid_ignored: 1}"), "stamp[0].stop_if_ssid_ignored: must be true or false"),
    (("rate: 10}", "rate: 10, sid: 3}"), "stamp[0].sid: unknown field"),
])
def test_stamp_and_delay_errors(change, message):
    with pytest.raises(ScenarioError) as err:
        parse(STAMP.replace(*change), source="s.yaml")
    assert message in str(err.value)


def test_dataplane_and_dscp_default_to_ebpf_and_0():
    s = parse(BASE)
    assert s.dataplane == "ebpf" and s.flows[0].dscp == 0
    s = parse("dataplane: nftables\n" + BASE.replace("rate: 500", "rate: 500, dscp: 46"))
    assert s.dataplane == "nftables" and s.flows[0].dscp == 46
    assert parse(BASE.replace("rate: 500", "rate: 500, dscp: 63")).flows[0].dscp == 63


def test_the_example_scenario_sets_a_dscp():
    assert {f.name: f.dscp for f in load("scenarios/example.yaml").flows} == {"f1": 46, "f2": 0}


@pytest.mark.parametrize("text, message", [
    ("dataplane: bpf\n" + BASE, "bad.yaml: dataplane: 'bpf' is not one of ebpf, nftables"),
    ("dataplane: 1\n" + BASE, "bad.yaml: dataplane: 1 is not one of ebpf, nftables"),
    ("dataplane:\n" + BASE, "bad.yaml: dataplane: None is not one of ebpf, nftables"),
    (BASE.replace("rate: 500", "rate: 500, dscp: 64"), "bad.yaml: flows[0].dscp: must be a whole number from 0 to 63, got 64"),
    (BASE.replace("rate: 500", "rate: 500, dscp: -1"), "flows[0].dscp: must be a whole number from 0 to 63, got -1"),
    (BASE.replace("rate: 500", "rate: 500, dscp: 4.5"), "flows[0].dscp: must be a whole number from 0 to 63, got float 4.5"),
    (BASE.replace("rate: 500", "rate: 500, dscp: ef"), "flows[0].dscp: must be a whole number from 0 to 63, got text 'ef'"),
    (BASE.replace("rate: 500", "rate: 500, dscp: true"), "flows[0].dscp: must be a whole number from 0 to 63, got true/false"),
    (BASE.replace("rate: 500", "rate: 500, dcsp: 4"), "flows[0].dcsp: unknown field (allowed: dscp, from, name, rate, to, via)"),
    # ebpf counts at every node of the path, each at one position
    (BASE.replace("via: [r2, r3]", "via: [r2, r3, r2, r1, r2, r3]"), "flows[0].via: node 'r2' is on the path twice"),
])
def test_bad_dataplane_and_dscp_are_one_line_naming_the_field(text, message):
    with pytest.raises(ScenarioError) as err:
        parse(text, source="bad.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nftables_lets_a_flow_pass_a_node_twice():
    s = parse("dataplane: nftables\n" + BASE.replace("via: [r2, r3]", "via: [r2, r3, r2, r1, r2, r3]"))
    assert s.flows[0].via == ("r2", "r3", "r2", "r1", "r2", "r3")
