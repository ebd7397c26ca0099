"""The network rules shared by lab scenarios and the collector's configuration (srv6pm.netspec): each rule
once, on the validator directly, and the same bad network giving the same message through both files."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from srv6pm import netspec
from srv6pm.collector import config
from srv6pm.lab import scenario

NODES = ("r1", "r2", "r3", "r4")
LINKS = (netspec.Link("r1", "r2"), netspec.Link("r2", "r3"))


class SpecError(ValueError):
    pass


def check(method: str, *args, **kwargs):
    """Call Validator.<method> for a file 'n.yaml'; the one-line message if it refuses, else the result."""
    try:
        return getattr(netspec.Validator("n.yaml", SpecError), method)(*args, **kwargs)
    except SpecError as exc:
        assert "\n" not in str(exc)
        return str(exc)


def test_errors_are_the_callers_class_and_name_the_field():
    with pytest.raises(SpecError, match=r"^n.yaml: links\[0\]\[1\]: unknown node 'r9' \(nodes: r1, r2, r3, r4\)$"):
        netspec.Validator("n.yaml", SpecError).links([["r1", "r9"]], NODES)
    assert str(netspec.Validator("n.yaml", SpecError).fail("", "empty file")) == "n.yaml: empty file"


@pytest.mark.parametrize("method, args, message", [
    ("mapping", ([1], "x", {"a"}, set()), "n.yaml: x: must be a mapping, got a list"),
    ("mapping", ({"b": 1}, "x", {"a"}, set()), "n.yaml: x.b: unknown field (allowed: a)"),
    ("mapping", ({}, "", {"a"}, {"a"}), "n.yaml: a: missing"),
    ("number", (True, "rate", 0, 1), "n.yaml: rate: must be a number, got true/false"),
    ("number", (5, "rate", 0, 1), "n.yaml: rate: must be between 0 and 1, got 5"),
    ("sequence", (None, "flows"), "n.yaml: flows: must be a list, got nothing"),
    ("text", (3, "sid", "an IPv6 address"), "n.yaml: sid: must be an IPv6 address, got int"),
    ("name", ("a b", "f.name", "flow"),
     "n.yaml: f.name: 'a b' is not a valid flow name (letters, digits, '_', '.', '-'; at most 64)"),
    ("name", ("x" * 65, "f.name", "node"), "is not a valid node name"),
    ("unique", ("a", "f", {"a"}, "flow name"), "n.yaml: f: duplicate flow name 'a'"),
    ("node_list", ([], 2, "nodes"), "n.yaml: nodes: must be a non-empty list of nodes"),
    ("node_list", ([1, 2, 3], 2, "nodes"), "n.yaml: nodes: at most 2 nodes, got 3"),
    ("node_ref", (["r1"], "to", NODES), "n.yaml: to: must be a node name, got a list"),
    ("links", ({}, NODES), "n.yaml: links: must be a list of [node, node] pairs, got a mapping"),
    ("links", ([["r1", "r1"]], NODES), "n.yaml: links[0]: links 'r1' to itself"),
    ("links", ([["r1", "r2"], {"ends": ["r2", "r1"]}], NODES), "n.yaml: links[1]: duplicate link between 'r2' and 'r1'"),
    ("links", ([["r1"]], NODES), "n.yaml: links[0]: must be a pair"),
    ("links", ([{"ends": ["r1", "r2"], "delay_ms": 10_001}], NODES), "n.yaml: links[0].delay_ms: must be between 0 and 10000"),
    ("path", (["r2", "r2"], "via", "r1", "r3", NODES), "n.yaml: via: node 'r2' follows itself in the path"),
    ("path", (["r1"], "via", "r1", "r3", NODES), "n.yaml: via: node 'r1' follows itself in the path"),
    ("path", (["r2"] * 16, "via", "r1", "r3", NODES), "n.yaml: via: at most 15 segments"),
    ("path", ([], "via", "r1", "r4", NODES, netspec.adjacency(NODES, LINKS)),
     "n.yaml: via: no path from 'r1' to 'r4' over the links"),
])
def test_each_rule_refuses_with_one_line(method, args, message):
    assert message in check(method, *args)


def test_good_values_are_returned():
    assert check("links", [["r1", "r2"], {"ends": ["r2", "r3"], "delay_ms": 5}], NODES) == (
        netspec.Link("r1", "r2"), netspec.Link("r2", "r3", 5.0))
    # Without the links' adjacency a path need not follow links; with it, r1 -> r3 goes over r2.
    assert check("path", ["r2"], "via", "r1", "r4", NODES) == ("r2",)
    assert check("path", [], "via", "r1", "r3", NODES, netspec.adjacency(NODES, LINKS)) == ()
    names: set[str] = set()
    session, item = check("stamp_session", {"name": "s1", "from": "r1", "to": "r3", "via": ["r2"], "rate": 1,
                                            "extra": 1}, "stamp[0]", names, NODES, more=frozenset({"extra"}))
    assert session == netspec.StampSession("s1", "r1", "r3", ("r2",), (), 1.0) and item["extra"] == 1
    assert names == {"s1"}
    assert "stamp[1].name: duplicate session name 's1'" in check(
        "stamp_session", {"name": "s1", "from": "r1", "to": "r3", "rate": 1}, "stamp[1]", names, NODES)
    assert "stamp[0].rate: 1001 not in 0.01..1000" in check(  # the southbound rule, validate.stamp_rate
        "stamp_session", {"name": "s2", "from": "r1", "to": "r3", "rate": 1001}, "stamp[0]", set(), NODES)


def test_kind_names_yaml_values():
    assert [netspec.kind(v) for v in ({}, [], "", True, None, 1.5)] == [
        "a mapping", "a list", "text", "true/false", "nothing", "float"]


@pytest.mark.parametrize("links, flow_change, message", [
    ([["r1", "r1"]], {}, "links[0]: links 'r1' to itself"),
    ([["r1", "r2"], ["r2", "r1"]], {}, "links[1]: duplicate link between 'r2' and 'r1'"),
    ([["r1", "r7"]], {}, "links[0][1]: unknown node 'r7' (nodes: r1, r2)"),
    ([["r1", "r2"]], {"to": "r1"}, "flows[0].to: same node as 'from' ('r1')"),
    ([["r1", "r2"]], {"name": "f 1"}, "flows[0].name: 'f 1' is not a valid flow name"),
    ([["r1", "r2"]], {"via": ["r1"]}, "flows[0].via: node 'r1' follows itself in the path"),
])
def test_lab_and_collector_apply_the_same_rules(links, flow_change, message):
    """The same network mistake is the same message from a scenario and from a collector configuration."""
    flow = {"name": "f1", "from": "r1", "to": "r2", **flow_change}
    lab_doc = {"period": 1, "nodes": ["r1", "r2"], "links": links, "flows": [{**flow, "rate": 1}]}
    sids = [{"sid": "fcff:9::1", "behavior": "End"}, {"sid": "fcff:9::100", "behavior": "End.DT6"}]
    collector_doc = {"nodes": [{"name": "r1", "grpc": "a:1", "sids": sids[:1]},
                               {"name": "r2", "grpc": "b:1", "sids": [{**s, "sid": s["sid"].replace("9", "8")}
                                                                     for s in sids]}],
                     "links": links,
                     "flows": [{**flow, "source": "fd00::1/128", "destination": "fd00::2/128"}]}
    with pytest.raises(scenario.ScenarioError) as lab_err:
        scenario.parse(yaml.safe_dump(lab_doc), source="x.yaml")
    with pytest.raises(config.ConfigError) as collector_err:
        config.parse(yaml.safe_dump(collector_doc), source="x.yaml")
    assert str(lab_err.value).startswith(f"x.yaml: {message}"), lab_err.value
    assert str(collector_err.value) == str(lab_err.value)


def test_public_names_stay_where_they_were():
    assert scenario.Link is config.Link is netspec.Link
    # The lab's session adds its own keys (direct_measurement) to the shared fields and rules.
    assert issubclass(scenario.StampSession, netspec.StampSession)
    assert scenario.MAX_SEGMENTS == config.MAX_SEGMENTS == netspec.MAX_SEGMENTS


def test_collector_configuration_does_not_load_the_lab():
    """In production the collector runs without the lab package; its configuration parser must not need it."""
    code = ("import sys, srv6pm.collector.config\n"
            "print(sorted(m for m in sys.modules if m.startswith('srv6pm.lab')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
