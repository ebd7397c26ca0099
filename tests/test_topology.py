"""Pure checks of the lab addressing plan (no namespaces, no root)."""

from pathlib import Path

import pytest

from srv6pm.exporter.dataplane import FlowMatch
from srv6pm.lab import scenario, topology

EXAMPLE = Path(__file__).resolve().parent.parent / "scenarios" / "example.yaml"


@pytest.fixture(scope="module")
def plan():
    return topology.plan(scenario.load(EXAMPLE))


def test_sids_and_locators(plan):
    for i, name in enumerate(["r1", "r2", "r3", "r4"], start=1):
        node = plan.nodes[name]
        assert node.index == i
        assert node.locator == f"fcff:{i}::/32"
        assert node.end_sid == f"fcff:{i}::1"
        assert node.decap_sid == f"fcff:{i}::100"


def test_link_addresses_and_interface_names(plan):
    assert [(l.index, l.a, l.b, l.prefix, l.a_address, l.b_address) for l in plan.links] == [
        (1, "r1", "r2", "fd00:0:1::/64", "fd00:0:1::1", "fd00:0:1::2"),
        (2, "r2", "r3", "fd00:0:2::/64", "fd00:0:2::1", "fd00:0:2::2"),
        (3, "r3", "r4", "fd00:0:3::/64", "fd00:0:3::1", "fd00:0:3::2"),
        (4, "r1", "r4", "fd00:0:4::/64", "fd00:0:4::1", "fd00:0:4::2"),
    ]
    r1 = plan.nodes["r1"]
    assert [i.name for i in r1.interfaces] == ["r2", "r4", "host"]
    assert r1.interface("r2").address == "fd00:0:1::1/64"
    assert r1.interface("r2").peer_address == "fd00:0:1::2"
    assert r1.interface("r4").address == "fd00:0:4::1/64"
    assert r1.interface("host").address == "fd01:1::1/64"
    r4 = plan.nodes["r4"]
    assert r4.interface("r1").address == "fd00:0:4::2/64"
    assert r4.interface("r3").address == "fd00:0:3::2/64"
    # r2 is neither ingress nor egress of a flow: no host, no host interface
    assert plan.nodes["r2"].host is None
    assert [i.name for i in plan.nodes["r2"].interfaces] == ["r1", "r3"]
    assert r1.sid_dev == "r2"


def test_hosts_and_namespaces(plan):
    assert plan.namespaces == ("r1", "r2", "r3", "r4", "r1-host", "r3-host", "r4-host")
    h1 = plan.nodes["r1"].host
    assert (h1.netns, h1.subnet, h1.router_address, h1.address) == ("r1-host", "fd01:1::/64", "fd01:1::1", "fd01:1::2")
    assert h1.flow_addresses == ()
    assert h1.interface.name == "eth0" and h1.interface.address == "fd01:1::2/64"
    assert plan.nodes["r4"].host.flow_addresses == ("fd01:4::101",)
    assert plan.nodes["r3"].host.flow_addresses == ("fd01:3::102",)


def test_flows_and_segment_lists(plan):
    f1, f2 = plan.flow("f1"), plan.flow("f2")
    assert (f1.ingress, f1.egress, f1.src_netns, f1.dst_netns) == ("r1", "r4", "r1-host", "r4-host")
    assert (f1.src_addr, f1.dst_addr) == ("fd01:1::2", "fd01:4::101")
    assert f1.segments == ("fcff:2::1", "fcff:3::1", "fcff:4::100")
    assert f1.encap_dev == "r2"
    assert (f2.src_addr, f2.dst_addr) == ("fd01:1::2", "fd01:3::102")
    assert f2.segments == ("fcff:4::1", "fcff:3::100")
    assert f2.encap_dev == "r4"
    encap = {e.flow: e for e in plan.nodes["r1"].encap_routes}
    assert encap["f1"].dst == "fd01:4::101/128" and encap["f1"].segments == f1.segments and encap["f1"].dev == "r2"
    assert encap["f2"].dst == "fd01:3::102/128" and encap["f2"].dev == "r4"
    assert all(not plan.nodes[n].encap_routes for n in ("r2", "r3", "r4"))
    assert plan.flows_at("r1", "ingress") == (f1, f2)
    assert plan.flows_at("r4", "egress") == (f1,)
    with pytest.raises(KeyError, match="unknown flow 'nope'"):
        plan.flow("nope")


def test_flow_match_consistent_with_flowmatch(plan):
    assert plan.flow_match("f1") == ("fd01:1::2/128", "fd01:4::101/128")
    for name in plan.flows:
        assert FlowMatch(name, *plan.flow_match(name)).key == plan.flow_match(name)


def test_shortest_path_next_hops(plan):
    # ties (two 2-hop paths across the square) go to the neighbour first in scenario.nodes
    expected = {
        ("r1", "r2"): "r2", ("r1", "r3"): "r2", ("r1", "r4"): "r4",
        ("r2", "r1"): "r1", ("r2", "r3"): "r3", ("r2", "r4"): "r1",
        ("r3", "r1"): "r2", ("r3", "r2"): "r2", ("r3", "r4"): "r4",
        ("r4", "r1"): "r1", ("r4", "r2"): "r1", ("r4", "r3"): "r3",
    }
    for (a, b), hop in expected.items():
        assert plan.next_hop(a, b) == hop, (a, b)
    assert plan.next_hop("r1", "r1") is None
    assert plan.nodes["r1"].routes == (
        topology.Route("fcff:2::/32", "fd00:0:1::2", "r2"),
        topology.Route("fcff:3::/32", "fd00:0:1::2", "r2"),
        topology.Route("fcff:4::/32", "fd00:0:4::2", "r4"),
    )
    assert plan.nodes["r3"].routes == (
        topology.Route("fcff:1::/32", "fd00:0:2::1", "r2"),
        topology.Route("fcff:2::/32", "fd00:0:2::1", "r2"),
        topology.Route("fcff:4::/32", "fd00:0:3::2", "r4"),
    )


def test_hex_numbering_and_unreachable_nodes():
    nodes = [f"n{i}" for i in range(1, 13)]
    links = [[nodes[i], nodes[i + 1]] for i in range(10)]  # n12 is isolated
    text = (f"period: 1\nnodes: [{', '.join(nodes)}]\nlinks: {links}\n".replace("'", "")
            + "flows:\n  - {name: a, from: n1, to: n11, via: [n10], rate: 1}\n")
    p = topology.plan(scenario.parse(text))
    n11 = p.nodes["n11"]
    assert n11.locator == "fcff:b::/32" and n11.decap_sid == "fcff:b::100"
    assert p.links[9].prefix == "fd00:0:a::/64"
    assert p.flow("a").dst_addr == "fd01:b::101"
    assert p.flow("a").segments == ("fcff:a::1", "fcff:b::100")
    assert p.next_hop("n1", "n12") is None
    assert all(r.dst != "fcff:c::/32" for r in p.nodes["n1"].routes)
    assert p.nodes["n12"].routes == () and p.nodes["n12"].sid_dev == "lo"
