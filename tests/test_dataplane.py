"""End-to-end checks of the counting data plane on a real SRv6 lab network.

Builds real namespaces, veths, SRv6 routes and nftables tables, sends real UDP
packets and checks the exact per-flow, per-colour counters. Needs root; every
namespace is removed again, even when a test fails.
"""

from __future__ import annotations

import secrets
import socket
import time

import pytest
from netns_support import send, skip_reason, square_plan, wait_for
from pyroute2 import netns as pr_netns

from srv6pm import netns as nsutil
from srv6pm import srv6
from srv6pm.exporter.dataplane import CountingTable, DataplaneError, FlowMatch
from srv6pm.nft import Nft
from srv6pm.lab import network, topology


_REASON = skip_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

PAYLOAD = 100
PACKET_BYTES = 40 + 8 + PAYLOAD  # inner IPv6 header + UDP header + payload
DSCP = (11, 15)


def _new_plan() -> topology.Plan:
    return square_plan("tp")


def _assert_gone(plan: topology.Plan) -> None:
    left = [ns for ns in plan.namespaces if nsutil.exists(ns)]
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def lab():
    plan = _new_plan()
    try:
        network.build(plan, srv6=srv6.missing() is None)  # the underlay alone where the kernel has no SRv6
        yield plan
    finally:
        network.teardown(plan)
        _assert_gone(plan)


@pytest.fixture
def temp_netns():
    name = f"tpn{secrets.token_hex(4)}"
    pr_netns.create(name)
    try:
        yield name
    finally:
        pr_netns.remove(name)
        assert not nsutil.exists(name)


@pytest.fixture(scope="module")
def nfts(lab):
    handles: dict[str, Nft] = {}

    def get(ns: str) -> Nft:
        if ns not in handles:
            handles[ns] = Nft(ns)
        return handles[ns]

    yield get
    for n in handles.values():
        n.close()


def _transit_probe(nft: Nft, sid: str) -> None:
    """A test-owned table counting SRH packets addressed to ``sid`` per outer DSCP."""
    t = {"family": "ip6", "table": "tprobe"}

    def rule(dscp: int) -> dict:
        return {"add": {"rule": {**t, "chain": "pre", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "nexthdr"}}, "right": 43}},
            {"match": {"op": "==", "left": {"exthdr": {"name": "srh"}}, "right": True}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": sid}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "dscp"}}, "right": dscp}},
            {"counter": None},
        ]}}}

    nft.run([
        {"add": {"table": {"family": "ip6", "name": "tprobe"}}},
        {"add": {"chain": {**t, "name": "pre", "type": "filter", "hook": "prerouting", "prio": -300,
                           "policy": "accept"}}},
        rule(DSCP[0]), rule(DSCP[1]),
    ])


def _probe_counts(nft: Nft) -> dict[int, int]:
    out = {}
    for obj in nft.run([{"list": {"chain": {"family": "ip6", "table": "tprobe", "name": "pre"}}}]):
        rule = obj.get("rule")
        if rule:
            exprs = rule["expr"]
            dscp = next(e["match"]["right"] for e in exprs
                        if "match" in e and e["match"]["left"].get("payload", {}).get("field") == "dscp")
            out[dscp] = next(e["counter"]["packets"] for e in exprs if "counter" in e)
    return out


@pytest.mark.srv6
def test_alternate_marking_end_to_end(lab, nfts):
    f1, f2 = lab.flow("f1"), lab.flow("f2")
    a, b, c, d = lab.scenario.nodes
    assert (f1.ingress, f1.egress, f2.egress) == (a, d, c)
    match = {name: FlowMatch(name, *lab.flow_match(name)) for name in lab.flows}

    # Warm up neighbour caches along both paths before anything is counted.
    send(f1.src_netns, f1.dst_addr, 3)
    send(f2.src_netns, f2.dst_addr, 3)
    time.sleep(0.2)

    ingress = CountingTable(nfts(a), dscp=DSCP)
    egress_d = CountingTable(nfts(d), dscp=DSCP)
    egress_c = CountingTable(nfts(c), dscp=DSCP)
    ingress.install([match["f1"], match["f2"]], [], colour=0)
    egress_d.install([], [match["f1"]], colour=0)
    egress_c.install([], [match["f2"]], colour=0)
    _transit_probe(nfts(b), lab.nodes[b].end_sid)

    def counts(table: CountingTable, role: str, colour: int) -> dict:
        return table.read(role, colour).counts

    n = 37
    send(f1.src_netns, f1.dst_addr, n)
    expected = {"f1": (n, n * PACKET_BYTES), "f2": (0, 0)}
    assert wait_for(lambda: counts(ingress, "ingress", 0), expected) == expected
    assert wait_for(lambda: counts(egress_d, "egress", 0), {"f1": (n, n * PACKET_BYTES)}) == {"f1": (n, n * PACKET_BYTES)}
    assert counts(ingress, "ingress", 1) == {"f1": (0, 0), "f2": (0, 0)}
    assert counts(egress_d, "egress", 1) == {"f1": (0, 0)}
    assert counts(egress_c, "egress", 0) == {"f2": (0, 0)}
    # the transit node saw SRv6-encapsulated packets with colour 0's DSCP in the outer header
    assert wait_for(lambda: _probe_counts(nfts(b)), {DSCP[0]: n, DSCP[1]: 0}) == {DSCP[0]: n, DSCP[1]: 0}

    ingress.set_colour(1)
    assert ingress.colour == 1
    m = 23
    send(f1.src_netns, f1.dst_addr, m)
    expected1 = {"f1": (m, m * PACKET_BYTES), "f2": (0, 0)}
    assert wait_for(lambda: counts(ingress, "ingress", 1), expected1) == expected1
    assert wait_for(lambda: counts(egress_d, "egress", 1), {"f1": (m, m * PACKET_BYTES)}) == {"f1": (m, m * PACKET_BYTES)}
    assert counts(ingress, "ingress", 0) == expected  # colour 0 untouched
    assert counts(egress_d, "egress", 0) == {"f1": (n, n * PACKET_BYTES)}
    assert counts(egress_c, "egress", 0) == {"f2": (0, 0)} and counts(egress_c, "egress", 1) == {"f2": (0, 0)}
    assert wait_for(lambda: _probe_counts(nfts(b)), {DSCP[0]: n, DSCP[1]: m}) == {DSCP[0]: n, DSCP[1]: m}

    # f2 is counted on its own, at its own egress
    k = 5
    send(f2.src_netns, f2.dst_addr, k)
    assert wait_for(lambda: counts(egress_c, "egress", 1), {"f2": (k, k * PACKET_BYTES)}) == {"f2": (k, k * PACKET_BYTES)}
    assert counts(ingress, "ingress", 1)["f2"] == (k, k * PACKET_BYTES)
    assert counts(egress_d, "egress", 1) == {"f1": (m, m * PACKET_BYTES)}

    # the egress host dropped the test traffic silently (its own nftables table)
    host = Nft(f1.dst_netns)
    try:
        rules = [o["rule"] for o in host.run([{"list": {"table": {"family": "ip6", "name": network.HOST_TABLE}}}])
                 if "rule" in o]
        dropped = next(e["counter"]["packets"] for e in rules[0]["expr"] if "counter" in e)
        assert dropped == 3 + n + m
    finally:
        host.close()


@pytest.mark.srv6
def test_reinstall_keeps_counters_and_generation(lab, nfts):
    a = lab.flow("f1").ingress
    flows = [FlowMatch(name, *lab.flow_match(name)) for name in lab.flows]
    nft = Nft(a)  # a restarted exporter: new context, new table object
    try:
        first = CountingTable(nft, table="tp_restart")
        first.install(flows, [], colour=0)
        src = lab.flow("f1")
        send(src.src_netns, src.dst_addr, 4)
        before = wait_for(lambda: first.read("ingress", 0).counts["f1"], (4, 4 * PACKET_BYTES))
        assert before == (4, 4 * PACKET_BYTES)
        gen = first.read("ingress", 0).generation

        again = CountingTable(nft, table="tp_restart")
        again.install(flows, [], colour=1)
        reading = again.read("ingress", 0)
        assert reading.counts["f1"] == before and reading.generation == gen
        assert again.rule_count() == 3

        # reconciling drops unwanted elements, keeps the others' counters
        again.install(flows[:1], [], colour=0)
        assert again.read("ingress", 0).counts == {"f1": before}

        again.remove()
        again.remove()  # idempotent
        assert not again.exists()
        with pytest.raises(DataplaneError, match="read before install"):
            again.read("ingress", 0)
        again.install(flows, [], colour=0)
        fresh = again.read("ingress", 0)
        assert fresh.generation != gen
        assert fresh.counts == {"f1": (0, 0), "f2": (0, 0)}
        again.remove()
    finally:
        nft.close()


def test_rule_count_independent_of_flow_count(temp_netns):
    with Nft(temp_netns) as nft:
        table = CountingTable(nft)
        one = [FlowMatch("f0", "fd01:1::2", "fd01:4::100/128")]
        table.install(one, one, colour=0)
        rules_one = table.rule_count()
        many = [FlowMatch(f"f{i}", "fd01:1::/64", f"fd01:4::{0x100 + i:x}") for i in range(200)]
        table.install(many, many, colour=1)
        assert table.rule_count() == rules_one == 3
        reading = table.read("egress", 1)
        assert len(reading.counts) == 200 and set(reading.counts.values()) == {(0, 0)}
        table.install(one, [], colour=0)
        assert table.rule_count() == 3
        assert table.read("ingress", 0).counts == {"f0": (0, 0)}
        assert table.read("egress", 0).counts == {}
        table.remove()


def test_flowmatch_and_table_validation():
    assert FlowMatch("x", "fd01:1::2", "fd01:4::/64").key == ("fd01:1::2/128", "fd01:4::/64")
    with pytest.raises(ValueError, match="flow 'x': src"):
        FlowMatch("x", "10.0.0.1", "fd01::/64")
    with pytest.raises(ValueError, match="dst"):
        FlowMatch("x", "fd01::1", "fd01::1/64")  # host bits set
    with Nft(None) as nft:
        with pytest.raises(ValueError):
            CountingTable(nft, dscp=(11, 11))
        t = CountingTable(nft, table="tp_never_installed")
        with pytest.raises(ValueError, match="colour"):
            t.set_colour(2)
        dup = [FlowMatch("a", "fd01::1", "fd02::1"), FlowMatch("b", "fd01::1", "fd02::1")]
        with pytest.raises(ValueError, match="same match"):
            t.install(dup, [], 0)
        assert not t.exists()


def test_nft_errors_are_clear(temp_netns):
    from srv6pm.nft import NftError

    with Nft(temp_netns) as nft:
        with pytest.raises(NftError, match=f"network namespace '{temp_netns}'"):
            nft.run([{"add": {"chain": {"family": "ip6", "table": "missing", "name": "c"}}}])
        assert nft.run([{"list": {"tables": None}}]) == []
    with pytest.raises(nsutil.NetnsError, match="does not exist"):
        Nft("tp-no-such-namespace")


def test_build_refuses_existing_namespace():
    plan = _new_plan()
    clash = plan.namespaces[2]
    pr_netns.create(clash)
    try:
        with pytest.raises(network.NetworkError, match=f"already exist: {clash}"):
            network.build(plan)
        assert [ns for ns in plan.namespaces if nsutil.exists(ns)] == [clash]
    finally:
        pr_netns.remove(clash)
    _assert_gone(plan)


@pytest.mark.srv6
def test_build_failure_rolls_back(monkeypatch):
    plan = _new_plan()

    def boom(self, host):
        raise network.NetworkError(f"{host.netns}: injected failure")

    monkeypatch.setattr(network._Builder, "configure_host", boom)
    try:
        with pytest.raises(network.NetworkError, match="injected failure"):
            network.build(plan)
        _assert_gone(plan)
    finally:
        network.teardown(plan)


def test_build_failure_removes_temporary_veths(monkeypatch):
    """A failure between creating a veth pair in the root namespace and moving it leaves nothing behind."""
    import errno

    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    plan = _new_plan()
    victim = plan.links[1].b  # the second link's second end
    names: list[str] = []
    real_temp = network._temp_ifname

    def temp_ifname():
        names.append(real_temp())
        return names[-1]

    real_iproute = network._Builder.iproute

    class RefusingRoot:
        def __init__(self, ipr):
            self._ipr = ipr

        def __getattr__(self, key):
            return getattr(self._ipr, key)

        def link(self, command, **kw):
            if kw.get("net_ns_fd") == victim:
                raise NetlinkError(errno.EPERM)
            return self._ipr.link(command, **kw)

    def iproute(self, ns):
        ipr = real_iproute(self, ns)
        return RefusingRoot(ipr) if ns is None else ipr

    monkeypatch.setattr(network, "_temp_ifname", temp_ifname)
    monkeypatch.setattr(network._Builder, "iproute", iproute)
    try:
        with pytest.raises(network.NetworkError, match=f"{victim}: moving veth .* kernel refused"):
            network.build(plan)
        _assert_gone(plan)
        with IPRoute() as root:
            assert names and not [n for n in names if root.link_lookup(ifname=n)]
    finally:
        network.teardown(plan)


@pytest.mark.srv6
def test_teardown_is_idempotent_and_complete():
    plan = _new_plan()
    try:
        network.build(plan)
        assert all(nsutil.exists(ns) for ns in plan.namespaces)
    finally:
        removed = network.teardown(plan)
    assert sorted(removed) == sorted(plan.namespaces)
    _assert_gone(plan)
    assert network.teardown(plan) == []


def test_every_link_end_knows_its_neighbour_permanently(lab):
    """No packet waits for neighbour discovery (which crosses a link's delay element too)."""
    from pyroute2 import IPRoute

    def table(ns: str) -> dict[tuple[int, str], tuple[str, int]]:
        with nsutil.NetnsThread(ns) as t:
            def dump():
                with IPRoute() as ipr:
                    links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.link("dump")}
                    return {(links[n["ifindex"]], n.get_attr("NDA_DST")): (n.get_attr("NDA_LLADDR"), n["state"])
                            for n in ipr.neigh("dump", family=socket.AF_INET6)}, \
                        {links[i]: link.get_attr("IFLA_ADDRESS") for i, link in
                         ((link["index"], link) for link in ipr.link("dump"))}
            return t.call(dump)

    seen = {ns: table(ns) for ns in lab.namespaces}
    checked = 0
    for node in lab.nodes.values():
        for itf in node.interfaces:
            far_ns = node.host.netns if itf.name == "host" else lab.nodes[itf.peer].netns
            far_if = "eth0" if itf.name == "host" else node.name
            lladdr, state = seen[node.netns][0][(itf.name, itf.peer_address)]
            assert state == 0x80 and lladdr == seen[far_ns][1][far_if]  # NUD_PERMANENT, the far end's MAC
            checked += 1
    assert checked == sum(len(n.interfaces) for n in lab.nodes.values())
