"""Every dashboard query, run against the real InfluxDB that a real lab run filled.

The lab runs with random node names, the real broker and InfluxDB, real
namespaces and nftables. The test drops packets of one flow with an nftables
rule of its own, kills one egress exporter for a while (incomplete periods),
sends a few undecodable records (dead letters), and at the end stops every
exporter (so that the topics stop growing and exporter liveness must show them
gone). Then it runs EVERY panel query of the committed dashboard JSON, with the
variables and Grafana's macros substituted, and compares what each returns
with the results read from Kafka, the drop counter and the topics' contents.

Needs root. Grafana itself cannot run here: the panel options that Grafana
applies (the table's sort order) are applied by the test as the JSON says.
"""

import json
import os
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from srv6pm import records
from srv6pm.clock import PeriodClock
from srv6pm.dashboards import generate
from srv6pm.dashboards.panels import interpolate, queries
from srv6pm.influx import influxql
from srv6pm.lab import scenario as scenario_mod
from srv6pm.lab.runner import Lab
from srv6pm.netns import exists

from test_lab_e2e import DropRule

pytestmark = [
    pytest.mark.netns,
    pytest.mark.services,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, SRv6, nftables)"),
]

PERIOD = 1.0
HEALTH_INTERVAL = 1.0
LAB_DELAY_IDLE_S = 10.0  # the lab's processor closes a silent STAMP session's window after this (lab/runner.py)
JUNK = [b"not json", b'{"v": 1, "flow": "x"}', b"\xff\xfe"]


def make_scenario():
    p = "d" + uuid.uuid4().hex[:5]
    a, b, c, d = (p + x for x in "abcd")
    text = f"""
period: {PERIOD}
nodes: [{a}, {b}, {c}, {d}]
links: [[{a}, {b}], [{b}, {c}], [{c}, {d}], [{a}, {d}]]
flows:
  - {{name: f1, from: {a}, to: {d}, via: [{b}, {c}], rate: 400}}
  - {{name: f2, from: {a}, to: {c}, via: [{d}], rate: 200}}
stamp:
  - {{name: s1, from: {a}, to: {d}, via: [{b}, {c}], return_via: [{c}, {b}], rate: 20}}
"""
    return scenario_mod.parse(text, source="dashboards"), (a, b, c, d)


def now_ms() -> int:
    return int(time.time() * 1000)


def poll(lab, until, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lab.seen += lab.reader.poll(0.3)
        lab.check_children()
        if until(lab.seen):
            return
    raise AssertionError(f"timed out; {len(lab.seen)} results so far")


def loss(results, flow=None, complete=None):
    return [r for r in results if "flow" in r and (flow is None or r["flow"] == flow)
            and (complete is None or r["complete"] is complete)]


def delay(results, direction=None):
    return [r for r in results if r.get("session") == "s1" and (direction is None or r["direction"] == direction)]


def read_all(kafka, topic):
    """Every record on ``topic`` as (key, value bytes)."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    out = []
    deadline = time.monotonic() + 20
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        assert time.monotonic() < deadline, f"could not read {topic}"
        for messages in consumer.poll(timeout_ms=300).values():
            out += [(m.key, m.value) for m in messages]
    consumer.close()
    return out


class Dashboards:
    """Runs the committed dashboards' queries; remembers which panels were checked."""

    def __init__(self, influx):
        self.influx = influx
        self.docs = {p.stem: json.loads(p.read_text()) for p in generate.JSON_DIR.glob("*.json")}
        self.checked: set[tuple[str, str]] = set()

    def run(self, uid, title, start_ms, end_ms, values=None, interval_s=1.0):
        """Each target of the panel ``title``: a list of series ``{"tags": {...}, "rows": [{column: value}]}``."""
        found = [t for p, t in queries(self.docs[uid]) if p["title"] == title]
        assert found, f"{uid}: no panel {title!r}"
        self.checked.add((uid, title))
        out = []
        for target in found:
            q = interpolate(target["query"], values or {}, start_ms, end_ms, interval_s)
            (res,) = influxql(self.influx, q)
            out.append([{"tags": s.get("tags") or {}, "rows": [dict(zip(s["columns"], v)) for v in s["values"]]}
                        for s in res.get("series", [])])
        return out[0] if len(out) == 1 else out

    def panel(self, uid, title):
        return next(p for p in self.docs[uid]["panels"] if p["title"] == title)

    def all_titles(self):
        return {(uid, p["title"]) for uid, doc in self.docs.items() for p, _ in queries(doc)}


def one(series):
    """The single value of a single-row, single-series result (None when empty: the panel shows noValue)."""
    if not series:
        return None
    (s,) = series
    (row,) = s["rows"]
    (value,) = [v for k, v in row.items() if k != "time"]
    return value


def by_tag(series, tag):
    return {s["tags"][tag]: s["rows"] for s in series}


@pytest.fixture
def lab(free_port, monkeypatch):
    # The lab's processor inherits the environment: health points every second.
    monkeypatch.setenv("SRV6PM_HEALTH_INTERVAL", str(HEALTH_INTERVAL))
    monkeypatch.delenv("SRV6PM_METRICS_PORT", raising=False)
    scenario, nodes = make_scenario()
    running = Lab(scenario, kafka_port=free_port(), influx_port=free_port(), partitions=2)
    running.nodes = nodes
    running.started_ms = now_ms()
    with running:
        running.reader = running.results(from_beginning=True)
        running.seen = []
        yield running
        running.reader.close()
    assert not any(exists(ns) for ns in running.plan.namespaces), "namespaces left behind"


def test_every_panel_query_returns_what_it_is_meant_to_show(lab):
    a, b, c, d = lab.nodes
    clock = PeriodClock(PERIOD)
    start_ms = lab.started_ms - 5000
    poll(lab, lambda rs: all(len(loss(rs, f, True)) >= 2 for f in ("f1", "f2")) and len(delay(rs, "round_trip")) >= 2)

    # Loss: drop one in five of f1's packets at transit node b for four periods.
    drop = DropRule(b, [DropRule.daddr(lab.plan.nodes[c].end_sid), DropRule.encapsulated()])
    t_add = clock.current()
    time.sleep(2.5 * PERIOD)
    mid_drop_ms = int(clock.start_ns(t_add + 2) / 1e6) + 500  # period t_add + 2 lies wholly inside the drop
    time.sleep(2 * PERIOD)
    dropped = drop.stop()

    # Dead letters: three records no stage can decode.
    producer = KafkaProducer(**lab.kafka.client_options(), acks="all")
    for raw in JUNK:
        producer.send(records.COUNTERS, key=b"junk", value=raw)
    producer.flush()
    producer.close()

    # Incomplete periods: f2's egress exporter (node c) is down for a few guard times.
    lab.kill(f"exporter-{c}")
    time.sleep(3.2 * PERIOD)
    lab.restart(f"exporter-{c}")
    t_back = clock.current()
    poll(lab, lambda rs: all(max(r["period"] for r in loss(rs, f, True)) >= t_back + 3 for f in ("f1", "f2")))
    # The restarted exporter's first records may be what completed those periods: let the processor write
    # two more health points, so that the latest one before alive_ms has seen them (all exporters still run).
    time.sleep(2 * HEALTH_INTERVAL + 0.2)
    alive_ms = now_ms()

    # Stop every exporter: the topics stop growing, and liveness must show it.
    for name in [n for n in lab.children if n.startswith("exporter-")]:
        lab.kill(name)
    killed_ms = now_ms()
    # The last periods close after the pairing wait, the last delay windows after the processor's idle time;
    # then the topics are final, and a few more health points cover everything.
    time.sleep(max(lab.pair_wait_s, LAB_DELAY_IDLE_S) + 2 * PERIOD)
    topics = {t: read_all(lab.kafka, t) for t in (records.COUNTERS, records.STAMP, records.LOSS, records.DELAY,
                                                  records.DEADLETTER)}
    time.sleep(3 * HEALTH_INTERVAL)
    lab.seen += lab.reader.poll(1.0)
    end_ms = now_ms()
    results = lab.seen
    assert len(loss(results)) + len(delay(results)) == len(topics[records.LOSS]) + len(topics[records.DELAY])

    dash = Dashboards(lab.influx)
    f1_complete = loss(results, "f1", True)
    assert dropped > 0
    assert sum(r["lost_packets"] for r in f1_complete) == dropped
    assert all(r["lost_packets"] == 0 for r in loss(results, "f2", True))
    incomplete = loss(results, complete=False)
    assert any(r["flow"] == "f2" for r in incomplete), "the exporter outage made no incomplete period"

    # ---- network overview ----------------------------------------------------------------
    ov = "srv6pm-overview"
    assert one(dash.run(ov, "Flows with loss now", start_ms, mid_drop_ms)) == 1
    assert one(dash.run(ov, "Flows with loss now", start_ms, end_ms)) in (None, 0)  # noValue "0"
    assert dash.panel(ov, "Flows with loss now")["fieldConfig"]["defaults"]["noValue"] == "0"
    assert one(dash.run(ov, "Lost packets", start_ms, end_ms)) == dropped
    assert one(dash.run(ov, "Incomplete periods", start_ms, end_ms)) == len(incomplete)

    ranked = [dict(s["rows"][0], flow=s["tags"]["flow"]) for s in dash.run(ov, "Flows ranked by lost packets",
                                                                             start_ms, end_ms)]
    (sort,) = dash.panel(ov, "Flows ranked by lost packets")["options"]["sortBy"]
    ranked.sort(key=lambda row: row[sort["displayName"]], reverse=sort["desc"])  # as Grafana's table does
    assert [r["flow"] for r in ranked] == ["f1", "f2"]
    for row in ranked:
        mine = loss(results, row["flow"], True)
        sent = sum(r["tx_packets"] for r in mine)
        assert (row["lost"], row["sent"], row["periods"]) == (sum(r["lost_packets"] for r in mine), sent, len(mine))
        assert row["loss_ratio"] == pytest.approx(row["lost"] / sent)
    assert ranked[0]["lost"] == dropped and ranked[1]["lost"] == 0

    by_flow = {f: rows[0]["incomplete"] for f, rows in
               by_tag(dash.run(ov, "Incomplete periods by flow", start_ms, end_ms), "flow").items()}
    assert by_flow == {f: len(loss(incomplete, f)) for f in {r["flow"] for r in incomplete}}

    lost_series = by_tag(dash.run(ov, "Lost packets by flow", start_ms, end_ms, interval_s=PERIOD), "flow")
    for flow in ("f1", "f2"):
        want = {clock.start_ns(r["period"]): r["lost_packets"] for r in loss(results, flow, True)}
        assert {row["time"]: row["lost"] for row in lost_series[flow]} == want

    rtt = {clock.start_ns(r["period"]): r for r in delay(results, "round_trip") if r["samples"]}
    delay_series = by_tag(dash.run(ov, "Round-trip delay per STAMP session", start_ms, end_ms, interval_s=PERIOD),
                          "session")
    assert {row["time"]: (row["mean"], row["p99"]) for row in delay_series["s1"]} == \
        {t: (r["mean_us"], r["p99_us"]) for t, r in rtt.items()}

    alarms = by_tag(dash.run(ov, "Alarms: periods with loss ratio above $loss_threshold", start_ms, end_ms,
                             {"loss_threshold": "0.01"}), "flow")
    assert set(alarms) == {"f1"}
    assert [row["time"] for row in alarms["f1"]] == sorted(
        (clock.start_ns(r["period"]) for r in f1_complete if r["loss_ratio"] > 0.01), reverse=True)
    assert sum(row["lost_packets"] for row in alarms["f1"]) == \
        sum(r["lost_packets"] for r in f1_complete if r["loss_ratio"] > 0.01) > 0

    p99s = sorted(r["p99_us"] for r in delay(results) if r["p99_us"] is not None)
    threshold = p99s[len(p99s) // 2]
    delay_alarms = dash.run(ov, "Alarms: periods with p99 delay above $p99_threshold_us µs", start_ms, end_ms,
                            {"p99_threshold_us": str(threshold)})
    got = {(s["tags"]["direction"], row["time"]) for s in delay_alarms for row in s["rows"]}
    assert got == {(r["direction"], clock.start_ns(r["period"])) for r in delay(results)
                   if r["p99_us"] is not None and r["p99_us"] > threshold}
    assert got and len(got) < len(p99s)

    # ---- flow detail -----------------------------------------------------------------------
    fd = "srv6pm-flow"
    for flow in ("f1", "f2"):
        v = {"flow": flow}
        mine, gaps = loss(results, flow, True), loss(results, flow, False)
        lost = sum(r["lost_packets"] for r in mine)
        assert one(dash.run(fd, "Lost packets", start_ms, end_ms, v)) == lost == (dropped if flow == "f1" else 0)
        assert one(dash.run(fd, "Loss ratio", start_ms, end_ms, v)) == \
            pytest.approx(lost / sum(r["tx_packets"] for r in mine))
        assert (one(dash.run(fd, "Incomplete periods", start_ms, end_ms, v)) or 0) == len(gaps)
        (packets,) = dash.run(fd, "Packets per period: sent (tx) and received (rx)", start_ms, end_ms, v)
        assert {row["time"]: (row["tx"], row["rx"]) for row in packets["rows"]} == \
            {clock.start_ns(r["period"]): (r["tx_packets"], r["rx_packets"]) for r in mine}
        (per_period,) = dash.run(fd, "Lost packets per period", start_ms, end_ms, v)
        assert {row["time"]: row["lost"] for row in per_period["rows"]} == \
            {clock.start_ns(r["period"]): r["lost_packets"] for r in mine}
        (ratios,) = dash.run(fd, "Loss ratio per period", start_ms, end_ms, v)
        assert {row["time"]: row["loss_ratio"] for row in ratios["rows"]} == \
            {clock.start_ns(r["period"]): r["loss_ratio"] for r in mine}
        shown = dash.run(fd, "Incomplete periods (the side that is known)", start_ms, end_ms, v)
        rows = shown[0]["rows"] if shown else []
        # a period of which only transit points arrived (missing: both) has no known side to show
        assert {row["time"]: (row["tx (egress missing)"], row["rx (ingress missing)"]) for row in rows} == \
            {clock.start_ns(r["period"]): (r["tx_packets"], r["rx_packets"]) for r in gaps
             if (r["tx_packets"], r["rx_packets"]) != (None, None)}
        # Segments (counters with positions): every complete segment of every period, incomplete ones never.
        by_segment = {(s["tags"]["from"], s["tags"]["to"]): {row["time"]: row["lost"] for row in s["rows"]}
                      for s in dash.run(fd, "Lost packets per segment (from → to) per period", start_ms, end_ms, v)}
        want_segments: dict = {}
        for r in mine + gaps:
            for seg in r.get("segments") or []:
                if seg["complete"]:
                    want_segments.setdefault((seg["from"], seg["to"]), {})[clock.start_ns(r["period"])] = \
                        seg["lost_packets"]
        assert by_segment == want_segments
        (table,) = dash.run(fd, "Periods", start_ms, end_ms, v)
        assert [row["time"] for row in table["rows"]] == sorted((clock.start_ns(r["period"]) for r in mine + gaps),
                                                              reverse=True)
        for row in table["rows"]:
            r = next(r for r in mine + gaps if clock.start_ns(r["period"]) == row["time"])
            assert (row["complete"], row["lost_packets"], row["tx_packets"], row["rx_packets"]) == \
                (r["complete"], r["lost_packets"], r["tx_packets"], r["rx_packets"])
            if not r["complete"]:  # unknown, not zero
                assert row["lost_packets"] is None and row["loss_ratio"] is None

    # ---- path delay ---------------------------------------------------------------------------
    pd = "srv6pm-delay"
    v = {"session": "s1"}
    titles = {"forward": "Forward delay (sender → reflector)", "backward": "Backward delay (reflector → sender)",
              "round_trip": "Round-trip delay (without the reflector's own time)"}
    summary = by_tag(dash.run(pd, "Per direction over the time range", start_ms, end_ms, v), "direction")
    assert set(summary) == set(titles)
    for direction, title in titles.items():
        mine = [r for r in delay(results, direction) if r["samples"]]
        (series,) = dash.run(pd, title, start_ms, end_ms, v)
        assert {row["time"]: (row["min"], row["mean"], row["max"], row["p99"], row["jitter"])
                for row in series["rows"]} == \
            {clock.start_ns(r["period"]): (r["min_us"], r["mean_us"], r["max_us"], r["p99_us"], r["jitter_us"])
             for r in mine}
        (row,) = summary[direction]
        everything = delay(results, direction)
        assert row["min"] == min(r["min_us"] for r in mine)
        assert row["max"] == max(r["max_us"] for r in mine)
        assert row["p99"] == max(r["p99_us"] for r in mine)
        assert row["mean"] == pytest.approx(sum(r["mean_us"] for r in mine) / len(mine))
        assert (row["samples"], row["lost"]) == (sum(r["samples"] for r in everything),
                                                 sum(r["lost"] for r in everything))
    (packets,) = dash.run(pd, "STAMP test packets per period", start_ms, end_ms, v)
    assert {row["time"]: (row["answered"], row["lost"]) for row in packets["rows"]} == \
        {clock.start_ns(r["period"]): (r["samples"], r["lost"]) for r in delay(results, "round_trip")}

    # ---- pipeline health ----------------------------------------------------------------------------
    ph = "srv6pm-pipeline"
    consumed = {records.COUNTERS: len(topics[records.COUNTERS]), records.STAMP: len(topics[records.STAMP])}
    produced = {records.COUNTERS: len(topics[records.LOSS]), records.STAMP: len(topics[records.DELAY])}
    assert len(topics[records.DEADLETTER]) == len(JUNK)

    interval = 10.0
    rates = by_tag(dash.run(ph, "Records per second per topic", start_ms, end_ms, interval_s=interval), "topic")
    for topic in consumed:
        assert round(sum(row["in"] * interval for row in rates[topic])) == consumed[topic]
        assert round(sum(row["out"] * interval for row in rates[topic])) == produced[topic]
        assert any(row["in"] > 0 for row in rates[topic])

    lag = dash.run(ph, "Consumer lag", start_ms, end_ms, interval_s=interval)
    assert {s["tags"]["topic"] for s in lag} == set(consumed)
    for s in lag:
        values = [row["lag"] for row in s["rows"] if row["lag"] is not None]
        assert values and min(values) >= 0 and values[-1] == 0

    assert one(dash.run(ph, "Dead letters", start_ms, end_ms)) == len(JUNK)
    assert one(dash.run(ph, "Publish and store errors", start_ms, end_ms)) == 0
    over_time = by_tag(dash.run(ph, "Dead letters and errors", start_ms, end_ms, interval_s=interval), "topic")
    assert sum(row["deadletters"] for row in over_time[records.COUNTERS]) == len(JUNK)
    assert sum(row["deadletters"] + row["errors"] for row in over_time[records.STAMP]) == 0

    processors = dash.run(ph, "Processors", start_ms, end_ms)
    assert {s["tags"]["topic"] for s in processors} == set(consumed)
    for s in processors:
        (row,) = s["rows"]
        topic = s["tags"]["topic"]
        assert (row["records_in"], row["records_out"], row["errors"], row["lag"]) == \
            (consumed[topic], produced[topic], 0, 0)
        assert row["deadletters"] == (len(JUNK) if topic == records.COUNTERS else 0)

    # Exporter liveness: every node that published, with exactly its records; alive, then gone.
    per_node: dict[str, int] = {}
    for topic in (records.COUNTERS, records.STAMP):
        for _, raw in topics[topic]:
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            node = doc.get("node") or doc.get("sender")
            if node:
                per_node[node] = per_node.get(node, 0) + 1
    assert {a, c, d} <= set(per_node)
    table = by_tag(dash.run(ph, "Exporter liveness", start_ms, end_ms), "node")
    assert {n: rows[0]["records"] for n, rows in table.items()} == per_node
    for node, rows in table.items():
        assert rows[0]["last_record_age_s"] >= (end_ms - killed_ms) / 1000 - 2 * HEALTH_INTERVAL, node
    live = by_tag(dash.run(ph, "Exporter liveness", start_ms, alive_ms), "node")
    stale_after = 3 * PERIOD  # records at least once per period
    assert all(rows[0]["last_record_age_s"] < stale_after for rows in live.values()), live
    ages = by_tag(dash.run(ph, "Age of the newest record per exporter", start_ms, end_ms, interval_s=HEALTH_INTERVAL),
                  "node")
    assert set(ages) == set(per_node)
    for rows in ages.values():
        assert rows[-1]["age"] > stale_after

    # ---- every panel of every dashboard was run and checked ------------------------------------
    assert dash.checked == dash.all_titles(), dash.all_titles() - dash.checked
