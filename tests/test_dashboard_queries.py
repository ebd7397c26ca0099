"""Every dashboard query, run against the real InfluxDB that a real lab run filled.

The lab runs with random node names, the real broker and InfluxDB, real
namespaces and nftables. The test drops packets of one flow with an nftables
rule of its own (and, meanwhile, STAMP test packets on their way to the
reflector and replies on their way back: the session has Direct Measurement), kills one egress exporter for a while (incomplete periods),
sends a few undecodable records (dead letters), and at the end stops every
exporter (so that the topics stop growing and exporter liveness must show them
gone). Then it runs EVERY panel query of the committed dashboard JSON, with the
variables and Grafana's macros substituted, and compares what each returns
with the results read from Kafka, the drop counter and the topics' contents.

One module-scoped fixture (:func:`run`) runs the lab through those steps once;
each test then checks one dashboard's panels against it, and
:func:`test_every_panel_of_every_dashboard_has_a_test` makes sure that no
panel goes unchecked (each test names the panels it runs with :func:`shows`).

Needs root. Grafana itself cannot run here: the panel options that Grafana
applies (the table's sort order) are applied by the test as the JSON says.
"""

import json
import os
import time
import uuid
from dataclasses import dataclass

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
from srv6pm.ports import free_port

from test_lab_e2e import DropRule, collect

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
  - {{name: s1, from: {a}, to: {d}, via: [{b}, {c}], return_via: [{c}, {b}], rate: 20, direct_measurement: true}}
"""
    return scenario_mod.parse(text, source="dashboards"), (a, b, c, d)


class ReplyDrop(DropRule):
    """A second drop table of the test's own on a node (DropRule's table may hold another rule there)."""

    TABLE = "dashreplydrop"


STAMP_PORT = 862


def now_ms() -> int:
    return int(time.time() * 1000)


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


PANELS: dict[str, set[tuple[str, str]]] = {}
"""Per test function: the (dashboard uid, panel title) pairs it checks (see :func:`shows`)."""


def shows(uid, *titles):
    """Declare the panels of dashboard ``uid`` that the decorated test runs and checks (all of them, no other)."""
    def mark(test):
        PANELS.setdefault(test.__name__, set()).update((uid, title) for title in titles)
        return test
    return mark


@dataclass
class Run:
    """What the lab run did and when, and what it produced (results read from Kafka, the topics' contents)."""
    lab: Lab
    nodes: tuple
    clock: PeriodClock
    start_ms: int
    mid_drop_ms: int  # inside a period wholly within the drop
    alive_ms: int  # every exporter still running
    killed_ms: int  # every exporter stopped
    end_ms: int
    dropped: int  # packets the drop rule dropped
    topics: dict
    results: list

    def loss(self, flow=None, complete=None):
        return loss(self.results, flow, complete)

    def delay(self, direction=None):
        return delay(self.results, direction)


@pytest.fixture(scope="module")
def run():
    """One lab run through drop, dead letters, an exporter outage and the stop of every exporter."""
    with pytest.MonkeyPatch.context() as env:
        # The lab's processor inherits the environment: health points every second.
        env.setenv("SRV6PM_HEALTH_INTERVAL", str(HEALTH_INTERVAL))
        env.delenv("SRV6PM_METRICS_PORT", raising=False)
        scenario, nodes = make_scenario()
        lab = Lab(scenario, kafka_port=free_port(), influx_port=free_port(), partitions=2)
        started_ms = now_ms()
        with lab:
            lab.reader = lab.results(from_beginning=True)
            lab.seen = []
            yield _steps(lab, nodes, started_ms)
            lab.reader.close()
    assert not any(exists(ns) for ns in lab.plan.namespaces), "namespaces left behind"


def _steps(lab, nodes, started_ms) -> Run:
    a, b, c, d = nodes
    clock = PeriodClock(PERIOD)
    collect(lab, lambda rs: all(len(loss(rs, f, True)) >= 2 for f in ("f1", "f2")) and len(delay(rs, "round_trip")) >= 2)

    # Loss: drop one in five of f1's packets at transit node b for four periods; meanwhile one in four STAMP
    # test packets at c on their way to the reflector (d) and one in four replies at c on their way back.
    drop = DropRule(b, [DropRule.daddr(lab.plan.nodes[c].end_sid), DropRule.encapsulated()])
    stamp_forward = DropRule(c, [DropRule.udp_dport(STAMP_PORT)], one_in=4)
    stamp_backward = ReplyDrop(c, [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}},
                                              "right": STAMP_PORT}}], one_in=4)
    t_add = clock.current()
    time.sleep(2.5 * PERIOD)
    mid_drop_ms = int(clock.start_ns(t_add + 2) / 1e6) + 500  # period t_add + 2 lies wholly inside the drop
    time.sleep(2 * PERIOD)
    dropped = drop.stop()
    stamp_forward.stop()
    stamp_backward.stop()

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
    collect(lab, lambda rs: all(max(r["period"] for r in loss(rs, f, True)) >= t_back + 3 for f in ("f1", "f2")))
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
    return Run(lab=lab, nodes=nodes, clock=clock, start_ms=started_ms - 5000, mid_drop_ms=mid_drop_ms,
               alive_ms=alive_ms, killed_ms=killed_ms, end_ms=now_ms(), dropped=dropped, topics=topics,
               results=lab.seen)


@pytest.fixture
def dash(run, request):
    """The committed dashboards against the run's InfluxDB; afterwards, the test ran exactly the panels it shows."""
    dashboards = Dashboards(run.lab.influx)
    yield dashboards
    assert dashboards.checked == PANELS[request.node.originalname], "the test ran other panels than it shows"


@pytest.mark.srv6
def test_the_run_made_loss_incomplete_periods_and_results_on_the_topics(run):
    assert len(run.loss()) + len(run.delay()) == len(run.topics[records.LOSS]) + len(run.topics[records.DELAY])
    assert run.dropped > 0
    assert sum(r["lost_packets"] for r in run.loss("f1", True)) == run.dropped
    assert all(r["lost_packets"] == 0 for r in run.loss("f2", True))
    assert any(r["flow"] == "f2" for r in run.loss(complete=False)), "the exporter outage made no incomplete period"
    assert len(run.topics[records.DEADLETTER]) == len(JUNK)


# ---- network overview ----------------------------------------------------------------
OV = "srv6pm-overview"


@pytest.mark.srv6
@shows(OV, "Flows with loss now", "Lost packets", "Incomplete periods")
def test_overview_stats(run, dash):
    start_ms, end_ms = run.start_ms, run.end_ms
    assert one(dash.run(OV, "Flows with loss now", start_ms, run.mid_drop_ms)) == 1
    assert one(dash.run(OV, "Flows with loss now", start_ms, end_ms)) in (None, 0)  # noValue "0"
    assert dash.panel(OV, "Flows with loss now")["fieldConfig"]["defaults"]["noValue"] == "0"
    assert one(dash.run(OV, "Lost packets", start_ms, end_ms)) == run.dropped
    assert one(dash.run(OV, "Incomplete periods", start_ms, end_ms)) == len(run.loss(complete=False))


@pytest.mark.srv6
@shows(OV, "Flows ranked by lost packets")
def test_overview_ranks_flows_by_lost_packets(run, dash):
    ranked = [dict(s["rows"][0], flow=s["tags"]["flow"]) for s in dash.run(OV, "Flows ranked by lost packets",
                                                                             run.start_ms, run.end_ms)]
    (sort,) = dash.panel(OV, "Flows ranked by lost packets")["options"]["sortBy"]
    ranked.sort(key=lambda row: row[sort["displayName"]], reverse=sort["desc"])  # as Grafana's table does
    assert [r["flow"] for r in ranked] == ["f1", "f2"]
    for row in ranked:
        mine = run.loss(row["flow"], True)
        sent = sum(r["tx_packets"] for r in mine)
        assert (row["lost"], row["sent"], row["periods"]) == (sum(r["lost_packets"] for r in mine), sent, len(mine))
        assert row["loss_ratio"] == pytest.approx(row["lost"] / sent)
    assert ranked[0]["lost"] == run.dropped and ranked[1]["lost"] == 0


@pytest.mark.srv6
@shows(OV, "Incomplete periods by flow")
def test_overview_counts_incomplete_periods_by_flow(run, dash):
    incomplete = run.loss(complete=False)
    by_flow = {f: rows[0]["incomplete"] for f, rows in
               by_tag(dash.run(OV, "Incomplete periods by flow", run.start_ms, run.end_ms), "flow").items()}
    assert by_flow == {f: len(loss(incomplete, f)) for f in {r["flow"] for r in incomplete}}


@pytest.mark.srv6
@shows(OV, "Lost packets by flow")
def test_overview_lost_packets_by_flow_per_period(run, dash):
    lost_series = by_tag(dash.run(OV, "Lost packets by flow", run.start_ms, run.end_ms, interval_s=PERIOD), "flow")
    for flow in ("f1", "f2"):
        want = {run.clock.start_ns(r["period"]): r["lost_packets"] for r in run.loss(flow, True)}
        assert {row["time"]: row["lost"] for row in lost_series[flow]} == want


@pytest.mark.srv6
@shows(OV, "Round-trip delay per STAMP session")
def test_overview_round_trip_delay_per_session(run, dash):
    rtt = {run.clock.start_ns(r["period"]): r for r in run.delay("round_trip") if r["samples"]}
    delay_series = by_tag(dash.run(OV, "Round-trip delay per STAMP session", run.start_ms, run.end_ms,
                                   interval_s=PERIOD), "session")
    assert {row["time"]: (row["mean"], row["p99"]) for row in delay_series["s1"]} == \
        {t: (r["mean_us"], r["p99_us"]) for t, r in rtt.items()}


@pytest.mark.srv6
@shows(OV, "Alarms: periods with loss ratio above $loss_threshold")
def test_overview_loss_alarms(run, dash):
    f1_complete = run.loss("f1", True)
    alarms = by_tag(dash.run(OV, "Alarms: periods with loss ratio above $loss_threshold", run.start_ms, run.end_ms,
                             {"loss_threshold": "0.01"}), "flow")
    assert set(alarms) == {"f1"}
    assert [row["time"] for row in alarms["f1"]] == sorted(
        (run.clock.start_ns(r["period"]) for r in f1_complete if r["loss_ratio"] > 0.01), reverse=True)
    assert sum(row["lost_packets"] for row in alarms["f1"]) == \
        sum(r["lost_packets"] for r in f1_complete if r["loss_ratio"] > 0.01) > 0


@pytest.mark.srv6
@shows(OV, "Alarms: periods with p99 delay above $p99_threshold_us µs")
def test_overview_delay_alarms(run, dash):
    p99s = sorted(r["p99_us"] for r in run.delay() if r["p99_us"] is not None)
    threshold = p99s[len(p99s) // 2]
    delay_alarms = dash.run(OV, "Alarms: periods with p99 delay above $p99_threshold_us µs", run.start_ms,
                            run.end_ms, {"p99_threshold_us": str(threshold)})
    got = {(s["tags"]["direction"], row["time"]) for s in delay_alarms for row in s["rows"]}
    assert got == {(r["direction"], run.clock.start_ns(r["period"])) for r in run.delay()
                   if r["p99_us"] is not None and r["p99_us"] > threshold}
    assert got and len(got) < len(p99s)


@pytest.mark.srv6
@shows(OV, "STAMP path liveness")
def test_overview_path_liveness_is_empty_when_no_session_watches_its_path(run, dash):
    # this lab's session does not watch its path, so nothing changed; tests/test_processor_liveness.py runs
    # the panel over the points of real liveness alarms
    assert dash.run(OV, "STAMP path liveness", run.start_ms, run.end_ms) == []


# ---- flow detail -----------------------------------------------------------------------
FD = "srv6pm-flow"


@shows(FD, "Lost packets", "Loss ratio", "Incomplete periods", "Packets per period: sent (tx) and received (rx)",
       "Lost packets per period", "Loss ratio per period", "Incomplete periods (the side that is known)",
       "Lost packets per segment (from → to) per period", "Periods")
@pytest.mark.srv6
@pytest.mark.parametrize("flow", ["f1", "f2"])
def test_flow_detail(run, dash, flow):
    start_ms, end_ms, clock = run.start_ms, run.end_ms, run.clock
    v = {"flow": flow}
    mine, gaps = run.loss(flow, True), run.loss(flow, False)
    lost = sum(r["lost_packets"] for r in mine)
    assert one(dash.run(FD, "Lost packets", start_ms, end_ms, v)) == lost == (run.dropped if flow == "f1" else 0)
    assert one(dash.run(FD, "Loss ratio", start_ms, end_ms, v)) == \
        pytest.approx(lost / sum(r["tx_packets"] for r in mine))
    assert (one(dash.run(FD, "Incomplete periods", start_ms, end_ms, v)) or 0) == len(gaps)
    (packets,) = dash.run(FD, "Packets per period: sent (tx) and received (rx)", start_ms, end_ms, v)
    assert {row["time"]: (row["tx"], row["rx"]) for row in packets["rows"]} == \
        {clock.start_ns(r["period"]): (r["tx_packets"], r["rx_packets"]) for r in mine}
    (per_period,) = dash.run(FD, "Lost packets per period", start_ms, end_ms, v)
    assert {row["time"]: row["lost"] for row in per_period["rows"]} == \
        {clock.start_ns(r["period"]): r["lost_packets"] for r in mine}
    (ratios,) = dash.run(FD, "Loss ratio per period", start_ms, end_ms, v)
    assert {row["time"]: row["loss_ratio"] for row in ratios["rows"]} == \
        {clock.start_ns(r["period"]): r["loss_ratio"] for r in mine}
    shown = dash.run(FD, "Incomplete periods (the side that is known)", start_ms, end_ms, v)
    rows = shown[0]["rows"] if shown else []
    # a period of which only transit points arrived (missing: both) has no known side to show
    assert {row["time"]: (row["tx (egress missing)"], row["rx (ingress missing)"]) for row in rows} == \
        {clock.start_ns(r["period"]): (r["tx_packets"], r["rx_packets"]) for r in gaps
         if (r["tx_packets"], r["rx_packets"]) != (None, None)}
    # Segments (counters with positions): every complete segment of every period, incomplete ones never.
    by_segment = {(s["tags"]["from"], s["tags"]["to"]): {row["time"]: row["lost"] for row in s["rows"]}
                  for s in dash.run(FD, "Lost packets per segment (from → to) per period", start_ms, end_ms, v)}
    want_segments: dict = {}
    for r in mine + gaps:
        for seg in r.get("segments") or []:
            if seg["complete"]:
                want_segments.setdefault((seg["from"], seg["to"]), {})[clock.start_ns(r["period"])] = \
                    seg["lost_packets"]
    assert by_segment == want_segments
    (table,) = dash.run(FD, "Periods", start_ms, end_ms, v)
    assert [row["time"] for row in table["rows"]] == sorted((clock.start_ns(r["period"]) for r in mine + gaps),
                                                          reverse=True)
    for row in table["rows"]:
        r = next(r for r in mine + gaps if clock.start_ns(r["period"]) == row["time"])
        assert (row["complete"], row["lost_packets"], row["tx_packets"], row["rx_packets"]) == \
            (r["complete"], r["lost_packets"], r["tx_packets"], r["rx_packets"])
        if not r["complete"]:  # unknown, not zero
            assert row["lost_packets"] is None and row["loss_ratio"] is None


# ---- path delay ---------------------------------------------------------------------------
PD = "srv6pm-delay"
DIRECTIONS = {"forward": "Forward delay (sender → reflector)", "backward": "Backward delay (reflector → sender)",
              "round_trip": "Round-trip delay (without the reflector's own time)"}


@pytest.mark.srv6
@shows(PD, "Per direction over the time range", *DIRECTIONS.values())
def test_path_delay_per_direction(run, dash):
    v = {"session": "s1"}
    summary = by_tag(dash.run(PD, "Per direction over the time range", run.start_ms, run.end_ms, v), "direction")
    assert set(summary) == set(DIRECTIONS)
    for direction, title in DIRECTIONS.items():
        mine = [r for r in run.delay(direction) if r["samples"]]
        (series,) = dash.run(PD, title, run.start_ms, run.end_ms, v)
        assert {row["time"]: (row["min"], row["mean"], row["max"], row["p99"], row["jitter"])
                for row in series["rows"]} == \
            {run.clock.start_ns(r["period"]): (r["min_us"], r["mean_us"], r["max_us"], r["p99_us"], r["jitter_us"])
             for r in mine}
        (row,) = summary[direction]
        everything = run.delay(direction)
        assert row["min"] == min(r["min_us"] for r in mine)
        assert row["max"] == max(r["max_us"] for r in mine)
        assert row["p99"] == max(r["p99_us"] for r in mine)
        assert row["mean"] == pytest.approx(sum(r["mean_us"] for r in mine) / len(mine))
        assert (row["samples"], row["lost"]) == (sum(r["samples"] for r in everything),
                                                 sum(r["lost"] for r in everything))


@pytest.mark.srv6
@shows(PD, "STAMP test packets per period")
def test_path_delay_test_packets_per_period(run, dash):
    (packets,) = dash.run(PD, "STAMP test packets per period", run.start_ms, run.end_ms, {"session": "s1"})
    assert {row["time"]: (row["answered"], row["lost"]) for row in packets["rows"]} == \
        {run.clock.start_ns(r["period"]): (r["samples"], r["lost"]) for r in run.delay("round_trip")}


DIRECTION_STATS = ("Lost forward (sender → reflector)", "Lost backward (reflector → sender)")
PERIODS_WITH_LOSS = "Periods with lost test packets"
LOST_PER_DIRECTION = "Lost test packets per direction per period"


@pytest.mark.srv6
@shows(PD, *DIRECTION_STATS, PERIODS_WITH_LOSS, LOST_PER_DIRECTION)
def test_path_delay_lost_test_packets_per_direction(run, dash):
    v = {"session": "s1"}
    rtt = run.delay("round_trip")
    known = [r for r in rtt if r.get("lost_forward") is not None]
    # the run lost test packets both ways (Direct Measurement on), and the drops made some of each known
    assert any(r["lost_forward"] for r in known) and any(r["lost_backward"] for r in known), rtt
    for title, field in zip(DIRECTION_STATS, ("lost_forward", "lost_backward"), strict=True):
        assert one(dash.run(PD, title, run.start_ms, run.end_ms, v)) == sum(r[field] for r in known)
    with_loss, with_direction = dash.run(PD, PERIODS_WITH_LOSS, run.start_ms, run.end_ms, v)
    assert (one(with_loss), one(with_direction)) == (len([r for r in rtt if r["lost"]]),
                                                    len([r for r in known if r["lost"]]))
    per_period, lost = dash.run(PD, LOST_PER_DIRECTION, run.start_ms, run.end_ms, v)
    # a period whose direction is not known has no bar (no row), never a 0
    assert {row["time"]: (row["lost forward"], row["lost backward"]) for s in per_period for row in s["rows"]} == \
        {run.clock.start_ns(r["period"]): (r["lost_forward"], r["lost_backward"]) for r in known}
    assert {row["time"]: row["lost"] for s in lost for row in s["rows"]} == \
        {run.clock.start_ns(r["period"]): r["lost"] for r in rtt}


# ---- pipeline health ----------------------------------------------------------------------------
PH = "srv6pm-pipeline"
INTERVAL = 10.0


def consumed(run):
    return {records.COUNTERS: len(run.topics[records.COUNTERS]), records.STAMP: len(run.topics[records.STAMP])}


def produced(run):
    return {records.COUNTERS: len(run.topics[records.LOSS]), records.STAMP: len(run.topics[records.DELAY])}


@pytest.mark.srv6
@shows(PH, "Records per second per topic")
def test_pipeline_records_per_second(run, dash):
    rates = by_tag(dash.run(PH, "Records per second per topic", run.start_ms, run.end_ms, interval_s=INTERVAL),
                   "topic")
    for topic, count in consumed(run).items():
        assert round(sum(row["in"] * INTERVAL for row in rates[topic])) == count
        assert round(sum(row["out"] * INTERVAL for row in rates[topic])) == produced(run)[topic]
        assert any(row["in"] > 0 for row in rates[topic])


@pytest.mark.srv6
@shows(PH, "Consumer lag")
def test_pipeline_consumer_lag(run, dash):
    lag = dash.run(PH, "Consumer lag", run.start_ms, run.end_ms, interval_s=INTERVAL)
    assert {s["tags"]["topic"] for s in lag} == set(consumed(run))
    for s in lag:
        values = [row["lag"] for row in s["rows"] if row["lag"] is not None]
        assert values and min(values) >= 0 and values[-1] == 0


@pytest.mark.srv6
@shows(PH, "Dead letters", "Publish and store errors", "Dead letters and errors")
def test_pipeline_dead_letters_and_errors(run, dash):
    assert one(dash.run(PH, "Dead letters", run.start_ms, run.end_ms)) == len(JUNK)
    assert one(dash.run(PH, "Publish and store errors", run.start_ms, run.end_ms)) == 0
    over_time = by_tag(dash.run(PH, "Dead letters and errors", run.start_ms, run.end_ms, interval_s=INTERVAL),
                       "topic")
    assert sum(row["deadletters"] for row in over_time[records.COUNTERS]) == len(JUNK)
    assert sum(row["deadletters"] + row["errors"] for row in over_time[records.STAMP]) == 0


@pytest.mark.srv6
@shows(PH, "Processors")
def test_pipeline_processors(run, dash):
    processors = dash.run(PH, "Processors", run.start_ms, run.end_ms)
    assert {s["tags"]["topic"] for s in processors} == set(consumed(run))
    for s in processors:
        (row,) = s["rows"]
        topic = s["tags"]["topic"]
        assert (row["records_in"], row["records_out"], row["errors"], row["lag"]) == \
            (consumed(run)[topic], produced(run)[topic], 0, 0)
        assert row["deadletters"] == (len(JUNK) if topic == records.COUNTERS else 0)


@pytest.mark.srv6
@shows(PH, "Exporter liveness", "Age of the newest record per exporter")
def test_exporter_liveness(run, dash):
    """Every node that published, with exactly its records; alive, then gone."""
    a, b, c, d = run.nodes
    per_node: dict[str, int] = {}
    for topic in (records.COUNTERS, records.STAMP):
        for _, raw in run.topics[topic]:
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            node = doc.get("node") or doc.get("sender")
            if node:
                per_node[node] = per_node.get(node, 0) + 1
    assert {a, c, d} <= set(per_node)
    table = by_tag(dash.run(PH, "Exporter liveness", run.start_ms, run.end_ms), "node")
    assert {n: rows[0]["records"] for n, rows in table.items()} == per_node
    for node, rows in table.items():
        assert rows[0]["last_record_age_s"] >= (run.end_ms - run.killed_ms) / 1000 - 2 * HEALTH_INTERVAL, node
    live = by_tag(dash.run(PH, "Exporter liveness", run.start_ms, run.alive_ms), "node")
    stale_after = 3 * PERIOD  # records at least once per period
    assert all(rows[0]["last_record_age_s"] < stale_after for rows in live.values()), live
    ages = by_tag(dash.run(PH, "Age of the newest record per exporter", run.start_ms, run.end_ms,
                           interval_s=HEALTH_INTERVAL), "node")
    assert set(ages) == set(per_node)
    for rows in ages.values():
        assert rows[-1]["age"] > stale_after


def test_every_panel_of_every_dashboard_has_a_test():
    shown = set().union(*PANELS.values())
    assert Dashboards(None).all_titles() == shown, Dashboards(None).all_titles() ^ shown
