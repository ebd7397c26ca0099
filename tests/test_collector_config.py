"""The collector's configuration file: a good file parses to normalised values; every kind of bad field
is one ConfigError naming the file and the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from srv6pm.collector import config, desired
from srv6pm.collector.config import ConfigError

GOOD = {
    "nodes": [
        {"name": "r1", "grpc": "127.0.0.1:50051", "pm_address": "FCFF:1:0::2",
         "sids": [{"sid": "fcff:1::1", "behavior": "End", "device": "r2"},
                  {"sid": "fcff:1::100", "behavior": "End.DX6", "nexthop": "fd01:1::2", "device": "host"}]},
        {"name": "r2", "grpc": "[::1]:50052", "sids": [{"sid": "fcff:2::1", "behavior": "End"}]},
        {"name": "r3", "grpc": "exporter-r3.srv6pm:50051", "sids": [{"sid": "fcff:3::1", "behavior": "End"}]},
        {"name": "r4", "grpc": "127.0.0.1:50054", "pm_address": "fcff:4::2",
         "sids": [{"sid": "fcff:4::1", "behavior": "End"}, {"sid": "fcff:4::100", "behavior": "End.DT6"}]},
    ],
    "links": [["r1", "r2"], {"ends": ["r2", "r3"], "delay_ms": 20}, ["r3", "r4"]],
    "flows": [
        {"name": "f1", "from": "r1", "to": "r4", "via": ["r2", "r3"], "source": "fd01:1::2/128",
         "destination": "fd01:4::101"},
        {"name": "f2", "from": "r4", "to": "r1", "segments": ["fcff:3::1", "FCFF:1::100"],
         "source": "fd01:4::2/128", "destination": "fd01:1::101/128", "device": "r3"},
    ],
    "stamp": [{"name": "s1", "from": "r1", "to": "r4", "via": ["r2", "r3"], "return_via": ["r3", "r2"],
               "rate": 10, "auth_key_file": "/etc/srv6pm/stamp.key"}],
    "tls": {"ca": "/etc/srv6pm/ca.pem"},
}


def parse(doc) -> config.Config:
    return config.parse(yaml.safe_dump(doc), source="c.yaml")


def with_(path: str, value, base=GOOD) -> dict:
    """A copy of ``base`` with the item at dotted ``path`` (list indexes as numbers) set, or deleted if value is DEL."""
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = doc
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    key = int(last) if isinstance(target, list) else last
    if value is DEL:
        del target[key]
    else:
        target[key] = value
    return doc


DEL = object()


def test_good_file_is_normalised_and_derives_segments():
    c = parse(GOOD)
    assert [n.name for n in c.nodes] == ["r1", "r2", "r3", "r4"]
    r1 = c.node("r1")
    assert r1.pm_address == "fcff:1::2"
    assert r1.end_sid == "fcff:1::1" and r1.decap_sid == "fcff:1::100"
    assert c.node("r2").sids[0].device == "lo"  # the exporter's normal form
    assert c.node("r2").grpc == "[::1]:50052"
    assert c.node("r4").sids[1].table == 254
    f1, f2 = c.flows
    assert f1.segments == ("fcff:2::1", "fcff:3::1", "fcff:4::100")  # End SIDs of via, then the egress' decap SID
    assert f1.destination == "fd01:4::101/128"
    assert f2.segments == ("fcff:3::1", "fcff:1::100") and f2.via == ("r3",) and f2.device == "r3"
    (s1,) = c.stamp
    assert s1.segments == ("fcff:2::1", "fcff:3::1") and s1.return_segments == ("fcff:3::1", "fcff:2::1")
    assert s1.timeout == 2.0 and s1.rate == 10.0
    assert c.links[1].delay_ms == 20
    assert c.tls == config.TlsConfig(ca="/etc/srv6pm/ca.pem")


def test_minimal_file_needs_only_nodes():
    c = parse({"nodes": [{"name": "a", "grpc": "a:1"}]})
    assert c.flows == () and c.stamp == () and c.links == () and c.tls is None
    assert c.dataplane == "ebpf" and c.flowmon_ids == {}


def test_dataplane_nftables_allows_a_node_twice_on_a_path():
    """Only ebpf counts at the via nodes; nftables counts at from and to, as before."""
    doc = with_("dataplane", "nftables", with_("flows.0.via", ["r2", "r3", "r2"]))
    c = parse(doc)
    assert c.dataplane == "nftables" and c.flows[0].via == ("r2", "r3", "r2")


@pytest.mark.parametrize("doc, field, words", [
    # file level
    ({}, "nodes", "missing"),
    (with_("colour", 1), "colour", "unknown field"),
    (with_("dataplane", "bpf"), "dataplane", "'bpf' is not one of ebpf, nftables"),
    (with_("dataplane", True), "dataplane", "True is not one of ebpf, nftables"),
    # nodes
    (with_("nodes", []), "nodes", "non-empty"),
    (with_("nodes.1.name", "r1"), "nodes[1].name", "duplicate node"),
    (with_("nodes.1.name", "r 2"), "nodes[1].name", "not a valid node name"),
    (with_("nodes.0.speed", 3), "nodes[0].speed", "unknown field"),
    (with_("nodes.0.grpc", DEL), "nodes[0].grpc", "missing"),
    (with_("nodes.0.grpc", "127.0.0.1"), "nodes[0].grpc", "not host:port"),
    (with_("nodes.0.grpc", "127.0.0.1:99999"), "nodes[0].grpc", "port"),
    (with_("nodes.0.grpc", "::1:50051"), "nodes[0].grpc", "brackets"),
    (with_("nodes.0.grpc", "[zz::1]:50051"), "nodes[0].grpc", "not an IPv6 address"),
    (with_("nodes.1.grpc", "127.0.0.1:50051"), "nodes[1].grpc", "already node 'r1'"),
    (with_("nodes.0.pm_address", "fcff::zz"), "nodes[0].pm_address", "not an IPv6 or IPv4 address"),
    (with_("nodes.3.pm_address", "fcff:1::2"), "nodes[3].pm_address", "already node 'r1'"),
    # SIDs
    (with_("nodes.0.sids.0.behavior", "End.B6"), "nodes[0].sids[0].behavior", "not one of"),
    (with_("nodes.0.sids.0.sid", "fcff:1::zz"), "nodes[0].sids[0].sid", "not an IPv6 address"),
    (with_("nodes.0.sids.1.nexthop", DEL), "nodes[0].sids[1].nexthop", "missing"),
    (with_("nodes.0.sids.0.nexthop", "fd01::1"), "nodes[0].sids[0].nexthop", "only End.X and End.DX6"),
    (with_("nodes.0.sids.0.table", 5), "nodes[0].sids[0].table", "only End.DT6"),
    (with_("nodes.0.sids.0.table", "main"), "nodes[0].sids[0].table", "table number"),
    (with_("nodes.0.sids.0.device", "a/b"), "nodes[0].sids[0].device", "not a valid interface name"),
    (with_("nodes.1.sids.0.sid", "fcff:1::1"), "nodes[1].sids[0].sid", "already a SID of node 'r1'"),
    (with_("nodes.0.sids", "fcff:1::1"), "nodes[0].sids", "must be a list"),
    # links
    (with_("links.0", ["r1", "r9"]), "links[0][1]", "unknown node 'r9'"),
    (with_("links.0", ["r1", "r1"]), "links[0]", "itself"),
    (with_("links.1.delay_ms", -1), "links[1].delay_ms", "between"),
    # flows
    (with_("flows.0.from", "r9"), "flows[0].from", "unknown node 'r9'"),
    (with_("flows.0.to", "r1"), "flows[0].to", "same node as 'from'"),
    (with_("flows.1.name", "f1"), "flows[1].name", "duplicate flow name"),
    (with_("flows.0.via", ["r2", "r9"]), "flows[0].via[1]", "unknown node 'r9'"),
    (with_("flows.0.via", ["r2", "r2"]), "flows[0].via", "follows itself"),
    (with_("flows.0.to", "r2"), "flows[0].to", "no decap SID"),
    # ebpf (the default): a node counts a flow at one position
    (with_("flows.0.via", ["r2", "r3", "r2"]), "flows[0].via", "node 'r2' is on the path twice"),
    (with_("flows.0.via", ["r2", "r1", "r3"]), "flows[0].via", "node 'r1' is on the path twice"),
    (with_("flows.1.segments", ["fcff:3::1", "fcff:2::1", "fcff:3::1", "fcff:1::100"]), "flows[1].segments",
     "node 'r3' is on the path twice"),
    (with_("nodes.2.sids", []), "flows[0].via[1]", "has no End SID"),
    (with_("flows.0.source", "fd01:1::2/64"), "flows[0].source", "host bits set"),
    (with_("flows.0.destination", "fd01:4::zz"), "flows[0].destination", "not an IPv6 prefix"),
    (with_("flows.0.source", DEL), "flows[0].source", "missing"),
    (with_("flows.0.rate", 5), "flows[0].rate", "unknown field"),
    (with_("flows.0.segments", ["fcff:2::1"]), "flows[0].segments", "either 'via' or 'segments'"),
    (with_("flows.1.segments", ["fcff:3::1", "fcff::zz"]), "flows[1].segments[1]", "not an IPv6 address"),
    (with_("flows.1.segments", []), "flows[1].segments", "non-empty"),
    (with_("flows.1.segments", ["fcff:3::1"] * 17), "flows[1].segments", "at most 16"),
    (with_("flows.1.device", "x" * 16), "flows[1].device", "not a valid interface name"),
    (with_("flows.1.from", "r1", with_("flows.1.to", "r4", with_("flows.1.destination", "fd01:4::101/128"))),
     "flows[1].destination", "already steers"),
    # STAMP
    (with_("stamp.0.to", "r2"), "stamp[0].to", "has no pm_address"),
    (with_("stamp.0.rate", 0), "stamp[0].rate", "0 not in 0.01..1000"),
    (with_("stamp.0.rate", "fast"), "stamp[0].rate", "must be a number"),
    (with_("stamp.0.timeout", 120), "stamp[0].timeout", "not in 0.01..60"),
    (with_("stamp.0.return_via", ["r9"]), "stamp[0].return_via[0]", "unknown node 'r9'"),
    (with_("stamp.0.auth_key_file", "stamp.key"), "stamp[0].auth_key_file", "not an absolute path"),
    (with_("stamp.0.name", "s 1"), "stamp[0].name", "not a valid session name"),
    (with_("stamp.0.from", "r4"), "stamp[0].to", "same node as 'from'"),
    (with_("stamp.0.dscp", 64), "stamp[0].dscp", "64 is not a DSCP (0..63)"),
    (with_("stamp.0.ssid", 0), "stamp[0].ssid", "from 1 to 65535"),
    (with_("stamp.0.direct_measurement", "yes"), "stamp[0].direct_measurement", "true or false"),
    (with_("stamp.0.stop_if_ssid_ignored", True), "stamp[0].stop_if_ssid_ignored", "needs an ssid"),
    # TLS
    (with_("tls.plaintext", "yes"), "tls.plaintext", "true or false"),
    (with_("tls.cert", "/c.pem"), "tls.key", "needs both"),
    (with_("tls.plaintext", True), "tls.plaintext", "cannot go with"),
    (with_("tls.verify", True), "tls.verify", "unknown field"),
])
def test_bad_fields_are_one_line_errors_naming_the_field(doc, field, words):
    with pytest.raises(ConfigError) as err:
        parse(doc)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"c.yaml: {field}: "), message
    assert words in message, message


def test_sessions_to_one_reflector_must_agree_on_its_key():
    doc = copy.deepcopy(GOOD)
    doc["stamp"].append({"name": "s2", "from": "r1", "to": "r4", "rate": 1})
    with pytest.raises(ConfigError, match=r"^c.yaml: stamp\[1\].auth_key_file: session 's1' to 'r4'"):
        parse(doc)


def test_same_counter_match_at_one_egress_is_refused():
    doc = copy.deepcopy(GOOD)
    doc["nodes"][1]["sids"].append({"sid": "fcff:2::100", "behavior": "End.DT6"})
    doc["flows"].append({"name": "f3", "from": "r2", "to": "r4", "source": "fd01:1::2/128",
                         "destination": "fd01:4::101/128"})
    with pytest.raises(ConfigError, match=r"^c.yaml: flows\[2\]: same source and destination at egress 'r4'"):
        parse(doc)


def test_unreadable_and_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line"):
        config.load(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty file"):
        config.load(empty)


def test_stamp_rfc8972_settings_reach_the_session_message():
    doc = with_("stamp.0.direct_measurement", True, with_("stamp.0.dscp", 0, with_("stamp.0.ssid", 9,
                with_("stamp.0.stop_if_ssid_ignored", True))))
    c = parse({**doc, "flows": []})
    s = c.stamp[0]
    assert (s.direct_measurement, s.dscp, s.ssid, s.stop_if_ssid_ignored) == (True, 0, 9, True)
    assert (parse(GOOD).stamp[0].dscp, parse(GOOD).stamp[0].direct_measurement) == (None, False)
    messages = [m for objects in desired.desired_state(c).values() for m in objects.values()
                if m.DESCRIPTOR.name == "StampSession"]
    assert [(m.direct_measurement, m.HasField("dscp"), m.dscp, m.ssid, m.stop_if_ssid_ignored)
            for m in messages] == [(True, True, 0, 9, True)]
