"""STAMP path liveness in the lab: a session watching its path, the path cut at the transit router and restored.

Real namespaces, SRv6 routes, exporters, collector and the embedded broker. The cut is an nftables table of
the test's own at the transit node that drops every forwarded IPv6 packet (both directions of the session);
deleting it restores the path. The liveness alarm must appear on ``srv6pm.alarms`` with raised true, then
false; the path_down / path_up events on ``srv6pm.events``; and the collector's graph must mark the session's
path edge down, then up; and the lab's processor must have stored both as ``liveness`` points. Needs root; run under ``flock /tmp/srv6pm-netns.lock``. Nothing is timed: every wait
has a generous guard against a hang only.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from srv6pm import records
from srv6pm.nft import Nft
from srv6pm.influx import influxql
from srv6pm.lab import scenario as scenario_mod
from srv6pm.lab.runner import EventReader, Lab
from srv6pm.netns import exists

pytestmark = [
    pytest.mark.srv6,
    pytest.mark.netns,
    pytest.mark.services,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, SRv6, nftables)"),
]

GUARD_S = 90
TABLE = "livecut"


def make_scenario():
    p = "l" + uuid.uuid4().hex[:5]
    a, b, c = (p + x for x in "abc")
    text = f"""
period: 1
nodes: [{a}, {b}, {c}]
links: [[{a}, {b}], [{b}, {c}]]
flows:
  - {{name: f1, from: {a}, to: {c}, via: [{b}], rate: 50}}
stamp:
  - {{name: s1, from: {a}, to: {c}, via: [{b}], return_via: [{b}], rate: 50, liveness: {{down_after: 3, up_after: 3}}}}
"""
    return scenario_mod.parse(text, source="liveness"), (a, b, c)


def cut(netns: str) -> Nft:
    """Drop every IPv6 packet forwarded at ``netns`` (the session's both directions cross it)."""
    nft = Nft(netns)
    nft.run([
        {"add": {"table": {"family": "ip6", "name": TABLE}}},
        {"add": {"chain": {"family": "ip6", "table": TABLE, "name": "fwd", "type": "filter", "hook": "forward",
                           "prio": 0, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip6", "table": TABLE, "chain": "fwd", "expr": [{"drop": None}]}}},
    ])
    return nft


def restore(nft: Nft) -> None:
    nft.run([{"delete": {"table": {"family": "ip6", "name": TABLE}}}])
    nft.close()


def wait(what: str, check):
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def session_edge(lab):
    try:
        snapshot = json.loads((lab.workdir / "graph.json").read_text())
    except (OSError, ValueError):
        return None
    return next((e for e in snapshot.get("paths", []) if e.get("_key") == "stamp:s1"), None)


def test_a_cut_path_is_declared_down_on_the_broker_and_in_the_graph_then_up(free_port):
    scenario, (a, b, c) = make_scenario()
    lab = Lab(scenario, kafka_port=free_port(), influx_port=free_port(), partitions=2)
    with lab:
        reader = lab.results(alarms=True)
        events = EventReader(lab.kafka)
        seen: list = []  # liveness alarms
        measured: list = []  # delay results of s1 with samples

        def poll():
            for doc in reader.poll(0.3):
                if doc.get("kind") == "liveness":
                    seen.append(doc)
                elif doc.get("session") == "s1" and doc.get("samples"):
                    measured.append(doc)
            lab.check_children()

        def liveness(raised):
            def check():
                poll()
                return next((d for d in seen if d["raised"] is raised), None)
            return check

        def path_events():
            events.poll(0.3)
            got = [e for e in events.seen if e["kind"] in ("path_down", "path_up")]
            return got if len(got) >= 2 else None

        def edge(alive):
            def check():
                e = session_edge(lab)
                return e if e is not None and e.get("alive") is alive else None
            return check

        wait("delay results of s1 with samples (the path works)", lambda: poll() or measured)
        cut_at = time.time_ns()
        nft = cut(b)
        try:
            down = wait("liveness alarm raised", liveness(True))
            down_edge = wait("graph edge of s1 marked down", edge(False))
        finally:
            restore(nft)
        up = wait("liveness alarm cleared", liveness(False))
        wait("graph edge of s1 marked up again", edge(True))
        changes = wait("path_down and path_up events", path_events)

        def stored():  # the lab's processor stores the liveness alarms as InfluxDB points
            (res,) = influxql(lab.influx, "SELECT \"up\", \"count\" FROM \"liveness\" WHERE \"session\" = 's1'")
            series = res.get("series") or []
            # From the cut on: probes that start before the lab's path is settled may already have
            # declared a down and up, published before this test's reader subscribed (and stored too).
            values = [v for v in (series[0]["values"] if series else []) if v[0] >= cut_at]
            return values if len(values) >= 2 else None
        points = wait("the two liveness points in InfluxDB", stored)
        reader.close()
        events.close()
    assert not any(exists(ns) for ns in lab.plan.namespaces), "namespaces left behind"
    for doc in (down, up):
        records.validate(records.ALARMS, doc)
        assert (doc["subject"], doc["sender"], doc["reflector"]) == ("s1", a, c)
    assert [d["raised"] for d in seen] == [True, False]  # one down, one up: no flapping
    assert (down["value"], down["threshold"], up["value"], up["threshold"]) == (3, 3, 3, 3)
    assert down["last_reply_ns"] is not None and down["time_ns"] > down["last_reply_ns"]
    assert down_edge["liveness"]["time_ns"] == down["time_ns"] and down_edge["delay_us"] is None
    assert [(t, up, count) for t, up, count in points] == [(down["time_ns"], 0, 3), (up["time_ns"], 1, 3)]
    assert [(e["kind"], e["node"], e["object"]) for e in changes] == [
        ("path_down", a, "stamp_session s1"), ("path_up", a, "stamp_session s1")]
