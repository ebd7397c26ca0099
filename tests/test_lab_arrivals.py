"""Arrivals by DSCP in a real lab network (namespaces, SRv6 encapsulation and decapsulation, no exporters):
each flow's packets are counted at their destination host by the DSCP they arrive with, one flow apart
from another at the same host, and the host's own table still drops them. Needs root; run only under
``flock /tmp/srv6pm-netns.lock`` (node names are random, but namespace tests share the machine)."""

from __future__ import annotations

import secrets
import time

import pytest
from netns_support import skip_reason

from srv6pm import netns as nsutil
from srv6pm import srv6
from srv6pm.nft import Nft
from srv6pm.lab import arrivals, network, scenario, topology
from srv6pm.lab.traffic import open_socket

_REASON = skip_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


@pytest.fixture(scope="module")
def plan():
    a, b, c, d = (f"ta{secrets.token_hex(2)}{x}" for x in "abcd")
    text = f"""
period: 1
nodes: [{a}, {b}, {c}, {d}]
links: [[{a}, {b}], [{b}, {c}], [{c}, {d}], [{a}, {d}]]
flows:
  - {{name: f1, from: {a}, to: {d}, via: [{b}, {c}], rate: 10, dscp: 46}}
  - {{name: f2, from: {a}, to: {c}, via: [{d}], rate: 10}}
  - {{name: f3, from: {b}, to: {d}, via: [{c}], rate: 10, dscp: 11}}
"""
    p = topology.plan(scenario.parse(text, source="test"))
    try:
        network.build(p, srv6=srv6.missing() is None)  # with the SRv6 routes (no exporters needed), where the kernel has them
        yield p
    finally:
        network.teardown(p)
        assert not [ns for ns in p.namespaces if nsutil.exists(ns)]


def send(plan: topology.Plan, flow: str, count: int, dscp: int) -> None:
    f = plan.flow(flow)
    with nsutil.NetnsThread(f.src_netns) as t:
        sock = t.call(open_socket, f.src_addr, dscp)
    with sock:
        for _ in range(count):
            sock.sendto(b"x" * 64, (f.dst_addr, 9))


def settled(plan: topology.Plan, expected: dict, timeout: float = 5.0) -> dict:
    """arrivals.read() as {flow: {dscp: n}} once it equals ``expected`` (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        now = {name: dict(a.by_dscp) for name, a in arrivals.read(plan).items()}
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


@pytest.mark.srv6
def test_each_flow_is_counted_by_the_dscp_it_arrives_with(plan):
    assert settled(plan, {"f1": {}, "f2": {}, "f3": {}}) == {"f1": {}, "f2": {}, "f3": {}}
    send(plan, "f1", 30, 46)
    send(plan, "f2", 7, 0)
    send(plan, "f3", 5, 11)
    send(plan, "f3", 2, 15)  # another DSCP of the same flow: counted apart
    expected = {"f1": {46: 30}, "f2": {0: 7}, "f3": {11: 5, 15: 2}}
    assert settled(plan, expected) == expected
    got = arrivals.read(plan)
    assert got["f1"].lines() == ["f1 arrived dscp 46: 30 of 30"]
    assert got["f3"].lines() == ["f3 arrived dscp 11: 5 of 7", "f3 arrived dscp 15: 2 of 7"]
    # The host's own table still drops (and counts) all test traffic that reached it: f1's and f3's at d.
    host = Nft(plan.flow("f1").dst_netns)
    try:
        rules = [o["rule"] for o in host.run([{"list": {"table": {"family": "ip6", "name": network.HOST_TABLE}}}])
                 if "rule" in o]
    finally:
        host.close()
    assert next(e["counter"]["packets"] for e in rules[0]["expr"] if "counter" in e) == 30 + 7


def test_no_table_where_no_flow_ends(plan):
    source_only = plan.flow("f1").src_netns  # a's host: a source, no destination
    assert arrivals.commands(plan, source_only) == []
