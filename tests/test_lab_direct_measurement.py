"""A lab scenario that turns on RFC 8972 Direct Measurement for its STAMP session (``direct_measurement: true``):
the collector configuration the lab writes carries it to the sender, and the delay results say exactly how
many test packets were lost on the way to the reflector and how many replies on the way back.

Real namespaces, SRv6 routes and nftables drop rules, the real broker and InfluxDB, the exporters, collector and
processor as processes. Needs root. Node names are random so that the test never touches a lab that is running.
"""

import io
import os
import re
import time
import uuid

import pytest

from srv6pm.clock import PeriodClock
from srv6pm.influx import influxql
from srv6pm.lab import scenario as scenario_mod
from srv6pm.lab.output import ResultTable
from srv6pm.lab.runner import Lab
from srv6pm.netns import exists

from test_lab_e2e import DropRule, collect

pytestmark = [
    pytest.mark.srv6,
    pytest.mark.netns,
    pytest.mark.services,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, SRv6, nftables)"),
]

PERIOD = 1.0
STAMP_PORT = 862


def udp_sport(port):
    return {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": port}}


def test_a_scenario_with_direct_measurement_tells_forward_from_backward_loss_exactly(free_port):
    p = "m" + uuid.uuid4().hex[:5]
    a, b, c, d = (p + x for x in "abcd")
    scenario = scenario_mod.parse(f"""
period: {PERIOD}
nodes: [{a}, {b}, {c}, {d}]
links: [[{a}, {b}], [{b}, {c}], [{c}, {d}], [{a}, {d}]]
flows: []
stamp:
  - {{name: s1, from: {a}, to: {d}, via: [{b}, {c}], return_via: [{c}, {b}], rate: 20, direct_measurement: true}}
""", source="direct-measurement")
    assert scenario.stamp[0].direct_measurement is True
    clock = PeriodClock(PERIOD)

    def rtt(results):
        return [r for r in results if r.get("session") == "s1" and r["direction"] == "round_trip"]

    with Lab(scenario, kafka_port=free_port(), influx_port=free_port(), partitions=2) as lab:
        lab.reader = lab.results(from_beginning=True)
        lab.seen = []
        try:
            collect(lab, lambda rs: len([r for r in rtt(rs) if r.get("lost_forward") is not None]) >= 2)
            # Test packets (to the reflector's port) dropped at b on their way there, one in four; then replies
            # (from that port) dropped at c on their way back. One direction at a time: each run of lost packets
            # is all forward or all backward, so no period's split is mixed across its end and unknown.
            t_add = clock.current()
            forward = DropRule(b, [DropRule.udp_dport(STAMP_PORT)], one_in=4)
            time.sleep(3 * PERIOD)
            dropped_forward = forward.stop()
            backward = DropRule(c, [udp_sport(STAMP_PORT)], one_in=4)
            time.sleep(3 * PERIOD)
            dropped_backward = backward.stop()
            last = clock.current() + 2
            collect(lab, lambda rs: max(r["period"] for r in rtt(rs)) >= last)
            influx = lab.influx
            (stored,) = influxql(influx, "SELECT sum(lost_forward), sum(lost_backward), sum(lost) FROM delay "
                                 f"WHERE session = 's1' AND direction = 'round_trip' AND time >= "
                                 f"{clock.start_ns(t_add - 1)} AND time <= {clock.start_ns(last)}")
        finally:
            lab.reader.close()
    assert not any(exists(ns) for ns in lab.plan.namespaces), "namespaces left behind"
    assert dropped_forward > 0 and dropped_backward > 0
    results = rtt(lab.seen)
    periods = [r["period"] for r in results]
    assert len(periods) == len(set(periods)), "a delay period was published twice"
    # The first windows may lose packets sent before the reflector listened (their direction is not known).
    # From the first window that knows it lost nothing on, every loss is one of the rules'.
    start = next(r["period"] for r in results if (r["lost"], r.get("lost_forward"), r.get("lost_backward")) == (0, 0, 0))
    assert start < t_add
    window = [r for r in results if start <= r["period"] <= last]
    assert [r["period"] for r in window] == list(range(start, last + 1)), "a delay period is missing"
    unknown = [r for r in window if r.get("lost_forward") is None or r.get("lost_backward") is None]
    assert not unknown, unknown
    assert sum(r["lost_forward"] for r in window) == dropped_forward
    assert sum(r["lost_backward"] for r in window) == dropped_backward
    assert all(r["lost"] == r["lost_forward"] + r["lost_backward"] for r in window)  # every loss placed
    # the three directions of a period carry the same split
    for r in window:
        same = {(x["lost"], x["lost_forward"], x["lost_backward"]) for x in lab.seen
                if x.get("session") == "s1" and x["period"] == r["period"]}
        assert same == {(r["lost"], r["lost_forward"], r["lost_backward"])}
    # InfluxDB's delay points hold them
    assert stored["series"][0]["values"][0][1:] == [dropped_forward, dropped_backward, dropped_forward + dropped_backward]
    # and the lab's table says which way: on the rows, and summed in the summary
    out = io.StringIO()
    table = ResultTable(out)
    for r in window:
        table.row(r)
    table.summary()
    lines = out.getvalue().splitlines()
    assert any(re.search(r"LOSS  forward [1-9][0-9]*, backward 0$", line) for line in lines)
    assert any(re.search(r"LOSS  forward 0, backward [1-9][0-9]*$", line) for line in lines)
    totals = {x["direction"]: x for x in table.totals()["sessions"]}
    assert {(t["lost_forward"], t["lost_backward"], t["direction_unknown_periods"]) for t in totals.values()} == \
        {(dropped_forward, dropped_backward, 0)}
