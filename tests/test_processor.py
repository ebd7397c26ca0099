"""The loss processor against a real Kafka-protocol broker and a real InfluxDB engine.

Each test gets its own broker (memory storage), so topics start empty.
"""

import base64
import json
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import influxql
from srv6pm.kafka import ensure_topics
from srv6pm.processor.alarms import AlarmRules
from srv6pm.processor.service import BUSY_POLL_MS, Processor, ProcessorOptions
from srv6pm.records import CounterRecord

pytestmark = pytest.mark.services

PERIOD = 2.0
BASE_PERIOD = 880_000_000  # an even period index, in 2025


@pytest.fixture
def kafka(fresh_broker):
    settings = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(settings, {records.COUNTERS: 2, records.LOSS: 2, records.ALARMS: 2, records.DEADLETTER: 1})
    return settings


@pytest.fixture
def influx(influxdb):
    # A database of its own per test: results from other tests never mix in.
    name = "t" + uuid.uuid4().hex[:12]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    return InfluxSettings(url=influxdb.url, bucket=name)


def options(**kw):
    base = dict(group="test-" + uuid.uuid4().hex[:8], pair_wait_s=1.5, poll_ms=200,
                session_timeout_ms=6000, heartbeat_interval_ms=500)
    base.update(kw)
    return ProcessorOptions(**base)


def produce(kafka, values, topic=records.COUNTERS):
    """Send (key, raw value) pairs to ``topic`` in order and wait for all acknowledgements."""
    producer = KafkaProducer(**kafka.client_options(), acks="all")
    for key, value in values:
        producer.send(topic, key=key.encode(), value=value)
    producer.flush()
    producer.close()


def block(flow, role, period, packets, node=None):
    node = node or {"ingress": "r1", "egress": "r4"}[role]
    rec = CounterRecord(node, flow, role, period, PERIOD, period % 2, packets, packets * 100)
    return flow, rec.to_json()


def read_topic(kafka, topic):
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    out = []
    deadline = time.monotonic() + 10
    while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
        for tp, messages in consumer.poll(timeout_ms=300).items():
            out += [(tp.partition, m.offset, m.key, json.loads(m.value)) for m in messages]
    consumer.close()
    return out


def run_until(processor, condition, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processor.step()
        if condition():
            return
    raise AssertionError(f"condition not reached in time; stats {processor.stats}")


def committed(kafka, group):
    consumer = KafkaConsumer(**kafka.client_options(), group_id=group, enable_auto_commit=False)
    out = {p: consumer.committed(TopicPartition(records.COUNTERS, p)) for p in (0, 1)}
    consumer.close()
    return out


def stored(influx, flow):
    res = influxql(influx, f"SELECT tx_packets, rx_packets, lost_packets, complete FROM loss WHERE flow = '{flow}'")
    series = res[0].get("series", [])
    return [dict(zip(series[0]["columns"], row)) for row in series[0]["values"]] if series else []


def test_pairs_blocks_into_exact_loss_published_and_stored(kafka, influx):
    produce(kafka, [
        block("f1", "ingress", BASE_PERIOD, 1000), block("f2", "egress", BASE_PERIOD, 300),
        block("f1", "egress", BASE_PERIOD, 999), block("f2", "ingress", BASE_PERIOD, 300),
        block("f1", "ingress", BASE_PERIOD + 1, 1000), block("f1", "egress", BASE_PERIOD + 1, 1000),
    ])
    opts = options()
    processor = Processor(kafka, influx, opts)
    try:
        run_until(processor, lambda: processor.stats["results"] == 3)
    finally:
        processor.close()
    results = {(r["flow"], r["period"]): r for _, _, _, r in read_topic(kafka, records.LOSS)}
    assert set(results) == {("f1", BASE_PERIOD), ("f2", BASE_PERIOD), ("f1", BASE_PERIOD + 1)}
    one = results[("f1", BASE_PERIOD)]
    assert (one["tx_packets"], one["rx_packets"], one["lost_packets"], one["complete"]) == (1000, 999, 1, True)
    assert one["period_start"] == "2025-10-09T08:53:20Z"
    for r in results.values():
        records.validate(records.LOSS, r)
    assert results[("f2", BASE_PERIOD)]["lost_packets"] == 0
    assert results[("f1", BASE_PERIOD + 1)]["lost_packets"] == 0
    rows = stored(influx, "f1")
    assert [(r["tx_packets"], r["rx_packets"], r["lost_packets"], r["complete"]) for r in rows] == \
        [(1000, 999, 1, True), (1000, 1000, 0, True)]
    assert rows[0]["time"] == (BASE_PERIOD * 2) * 10**9
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 6  # everything committed


def test_missing_partner_is_incomplete_and_late_partner_is_not_published_again(kafka, influx):
    produce(kafka, [block("f1", "ingress", BASE_PERIOD, 50)])
    processor = Processor(kafka, influx, options(pair_wait_s=1.0))
    try:
        run_until(processor, lambda: processor.stats["results"] == 1)
        produce(kafka, [block("f1", "egress", BASE_PERIOD, 50)])
        run_until(processor, lambda: processor.stats["replayed"] == 1)
    finally:
        processor.close()
    (result,) = [r for _, _, _, r in read_topic(kafka, records.LOSS)]
    assert result["complete"] is False and result["lost_packets"] is None
    assert (result["tx_packets"], result["rx_packets"], result["missing"]) == (50, None, "egress")
    (row,) = stored(influx, "f1")
    assert row["complete"] is False and row["lost_packets"] is None and row["tx_packets"] == 50


def test_bad_records_go_to_the_dead_letter_topic_and_processing_goes_on(kafka, influx):
    bad = [
        ("f1", b"{not json"),
        ("f1", json.dumps({"v": 1, "flow": "f1"}).encode()),
        ("f1", block("f1", "ingress", BASE_PERIOD + 1, 5)[1].replace(b'"color":1', b'"color":0')),
        ("f9", b"\xff\xfe\xfd"),
    ]
    produce(kafka, [block("f1", "ingress", BASE_PERIOD, 10), bad[0], bad[1],
                    block("f1", "egress", BASE_PERIOD, 10), bad[2], bad[3]])
    opts = options()
    processor = Processor(kafka, influx, opts)
    try:
        run_until(processor, lambda: processor.stats["results"] == 1 and processor.stats["deadletters"] == 4)
    finally:
        processor.close()
    letters = [r for _, _, _, r in read_topic(kafka, records.DEADLETTER)]
    assert len(letters) == 4
    for letter in letters:
        records.validate(records.DEADLETTER, letter)
        assert letter["topic"] == records.COUNTERS
    reasons = sorted(letter["reason"] for letter in letters)
    assert any(r.startswith("not JSON") for r in reasons)
    assert any(r.startswith("not UTF-8") for r in reasons)
    assert any("does not match period" in r for r in reasons)
    assert any(r.startswith("schema:") for r in reasons)
    assert sorted(base64.b64decode(letter["raw"]) for letter in letters) == sorted(v for _, v in bad)
    (result,) = [r for _, _, _, r in read_topic(kafka, records.LOSS)]
    assert result["lost_packets"] == 0
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 6


def test_crash_before_commit_neither_loses_nor_doubles_a_result(kafka, influx):
    periods = range(BASE_PERIOD, BASE_PERIOD + 6)
    values = []
    for k in periods:
        for flow in ("f1", "f2", "f3"):
            values += [block(flow, "ingress", k, 100 + k % 7), block(flow, "egress", k, 100)]
    produce(kafka, values)
    opts = options()
    first = Processor(kafka, influx, opts)
    first._commit = lambda: None  # the process dies after publishing and storing, before any commit
    try:
        run_until(first, lambda: first.stats["results"] == 18)
    finally:
        first.close()
    assert committed(kafka, opts.group) == {0: None, 1: None}
    # A second member of the same group re-reads everything ...
    second = Processor(kafka, influx, opts)
    try:
        run_until(second, lambda: second.stats["replayed"] == 36)
    finally:
        second.close()
    assert second.stats["results"] == 0
    # ... and publishes nothing twice.
    published = [(r["flow"], r["period"]) for _, _, _, r in read_topic(kafka, records.LOSS)]
    assert len(published) == 18 and len(set(published)) == 18
    for flow in ("f1", "f2", "f3"):
        rows = stored(influx, flow)
        assert len(rows) == 6
        assert [r["lost_packets"] for r in rows] == [k % 7 for k in periods]
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 36


def test_results_go_to_the_partition_of_their_records(kafka, influx):
    produce(kafka, [v for flow in ("a", "b", "c", "d", "e") for v in
                    (block(flow, "ingress", BASE_PERIOD, 1), block(flow, "egress", BASE_PERIOD, 1))])
    processor = Processor(kafka, influx, options())
    try:
        run_until(processor, lambda: processor.stats["results"] == 5)
    finally:
        processor.close()
    inputs = {json.loads(v)["flow"]: p for p, _, _, v in
              [(p, o, k, json.dumps(r)) for p, o, k, r in read_topic(kafka, records.COUNTERS)]}
    outputs = {r["flow"]: p for p, _, _, r in read_topic(kafka, records.LOSS)}
    assert outputs == inputs
    assert len(set(outputs.values())) == 2  # both partitions in use


# Loss per period of f1 (out of 1000): raised at +1 (5 %), still at +2, cleared at +3, 0.5 % at +4 stays clear
# (threshold 1 %), raised again at +5. f2 never loses.
F1_LOST = [0, 50, 30, 0, 5, 20]


def lossy_blocks():
    values = []
    for i, lost in enumerate(F1_LOST):
        k = BASE_PERIOD + i
        values += [block("f1", "ingress", k, 1000), block("f1", "egress", k, 1000 - lost),
                   block("f2", "ingress", k, 400), block("f2", "egress", k, 400)]
    return values


def alarm_transitions(kafka):
    return [(a["subject"], a["period"] - BASE_PERIOD, a["raised"]) for _, _, _, a in read_topic(kafka, records.ALARMS)]


def test_loss_alarms_are_raised_and_cleared_once_across_a_crash(kafka, influx):
    produce(kafka, lossy_blocks())
    opts = options()
    first = Processor(kafka, influx, opts)
    first._commit = lambda: None  # dies after publishing and storing, before any commit
    try:
        run_until(first, lambda: first.stats["results"] == 12)
    finally:
        first.close()
    alarms = [a for _, _, _, a in read_topic(kafka, records.ALARMS)]
    for alarm in alarms:
        records.validate(records.ALARMS, alarm)
    assert alarm_transitions(kafka) == [("f1", 1, True), ("f1", 3, False), ("f1", 5, True)]
    assert [(a["value"], a["threshold"]) for a in alarms] == [(0.05, 0.01), (0.0, 0.01), (0.02, 0.01)]
    # The restarted member re-reads everything: the alarm state comes back from the topic, nothing is doubled.
    second = Processor(kafka, influx, opts)
    try:
        run_until(second, lambda: second.stats["replayed"] == 24)
    finally:
        second.close()
    assert alarm_transitions(kafka) == [("f1", 1, True), ("f1", 3, False), ("f1", 5, True)]
    # One more period back to no loss clears it, as a continuation of the state read back.
    produce(kafka, [block("f1", "ingress", BASE_PERIOD + 6, 1000), block("f1", "egress", BASE_PERIOD + 6, 1000)])
    third = Processor(kafka, influx, opts)
    try:
        run_until(third, lambda: third.stats["results"] == 1)
    finally:
        third.close()
    assert alarm_transitions(kafka)[-1] == ("f1", 6, False)
    assert len(alarm_transitions(kafka)) == 4


def test_alarms_lost_in_a_crash_are_made_again_from_the_re_read_results(kafka, influx):
    produce(kafka, lossy_blocks())
    opts = options()
    # A member that published and stored the results but none of their alarms, then died before committing.
    first = Processor(kafka, influx, options(group=opts.group, alarms=AlarmRules(loss_ratio=None)))
    first._commit = lambda: None
    try:
        run_until(first, lambda: first.stats["results"] == 12)
    finally:
        first.close()
    assert alarm_transitions(kafka) == []
    second = Processor(kafka, influx, opts)
    try:
        run_until(second, lambda: second.stats["replayed"] == 24)
    finally:
        second.close()
    assert second.stats["results"] == 0  # no result twice ...
    assert alarm_transitions(kafka) == [("f1", 1, True), ("f1", 3, False), ("f1", 5, True)]  # ... and every alarm once


def test_a_stricter_threshold_and_delay_alarms_per_direction(kafka, influx):
    ensure_topics(kafka, {records.STAMP: 2, records.DELAY: 2})
    produce(kafka, lossy_blocks())
    start = BASE_PERIOD * 2 * 10**9
    # Period P: forward 2 ms, backward 3 ms; P+1: forward 9 ms (above 5 ms), backward 3 ms; P+2: back to 2 ms.
    values = [stamp("s1", i, start + i * 400_000_000) for i in range(5)]
    values += [stamp("s1", i, start + 2_000_000_000 + (i - 5) * 400_000_000, fwd_ns=9_000_000) for i in range(5, 10)]
    values += [stamp("s1", i, start + 4_000_000_000 + (i - 10) * 400_000_000) for i in range(10, 15)]
    values += [stamp("s1", 99, start + 20_000_000_000)]  # far later: closes the periods by event time
    produce(kafka, values, topic=records.STAMP)
    processor = Processor(kafka, influx, options(delay_lateness_s=0.5,
                                                 alarms=AlarmRules(loss_ratio=0.0, delay_p99_us=5000.0)))
    try:
        run_until(processor, lambda: processor.stats["results"] == 12 + 9)
    finally:
        processor.close()
    transitions = alarm_transitions(kafka)
    # Threshold 0: any lost packet raises, so the 0.5 % period keeps f1 raised.
    assert [t for t in transitions if t[0] == "f1"] == [("f1", 1, True), ("f1", 3, False), ("f1", 4, True)]
    delay_alarms = [(a["direction"], a["period"] - BASE_PERIOD, a["raised"]) for _, _, _, a in
                    read_topic(kafka, records.ALARMS) if a["kind"] == "delay_p99_us"]
    assert sorted(delay_alarms) == [("forward", 1, True), ("forward", 2, False),
                                    ("round_trip", 1, True), ("round_trip", 2, False)]


def stamp(session, seq, t1, fwd_ns=2_000_000, bwd_ns=3_000_000, lost=False):
    from srv6pm.records import StampSample
    if lost:
        s = StampSample(session, seq, PERIOD, t1, None, None, None, True, "r1", "r4")
    else:
        s = StampSample(session, seq, PERIOD, t1, t1 + fwd_ns, t1 + fwd_ns + 50_000, t1 + fwd_ns + 50_000 + bwd_ns,
                        False, "r1", "r4")
    return session, s.to_json()


def test_stamp_samples_become_delay_statistics_stored_once(kafka, influx):
    ensure_topics(kafka, {records.STAMP: 2, records.DELAY: 2})
    start = BASE_PERIOD * 2 * 10**9  # ns; PERIOD = 2 s
    values = [stamp("s1", i, start + i * 400_000_000, fwd_ns=(2 + i % 2) * 1_000_000) for i in range(5)]  # period P
    values += [stamp("s1", 5, start + 2_100_000_000, lost=True)]                                  # period P+1
    values += [stamp("s1", i, start + 2_000_000_000 + (i - 6) * 400_000_000) for i in range(6, 10)]
    values += [stamp("s1", 99, start + 10_000_000_000)]  # far later: closes P and P+1 by event time
    values.append(("s1", b'{"v":1,"session":"s1"}'))
    produce(kafka, values, topic=records.STAMP)
    processor = Processor(kafka, influx, options(delay_lateness_s=1.0, delay_idle_s=60))
    try:
        run_until(processor, lambda: processor.stats["results"] == 6 and processor.stats["deadletters"] == 1)
    finally:
        processor.close()
    published = [r for _, _, _, r in read_topic(kafka, records.DELAY)]
    assert len(published) == 6
    by = {(r["period"], r["direction"]): r for r in published}
    for r in published:
        records.validate(records.DELAY, r)
    fwd = by[(BASE_PERIOD, "forward")]
    assert (fwd["samples"], fwd["lost"], fwd["min_us"], fwd["max_us"]) == (5, 0, 2000.0, 3000.0)
    assert fwd["jitter_us"] == 1000.0 and fwd["p50_us"] == 2000.0 and fwd["p99_us"] == 3000.0
    assert by[(BASE_PERIOD, "backward")]["mean_us"] == 3000.0
    assert by[(BASE_PERIOD, "round_trip")]["mean_us"] == by[(BASE_PERIOD, "forward")]["mean_us"] + 3000.0
    nxt = by[(BASE_PERIOD + 1, "round_trip")]
    assert (nxt["samples"], nxt["lost"]) == (4, 1)
    res = influxql(influx, "SELECT samples, lost, mean_us FROM delay WHERE session = 's1' GROUP BY direction")
    series = {s["tags"]["direction"]: s["values"] for s in res[0]["series"]}
    assert sorted(series) == ["backward", "forward", "round_trip"]
    assert [v[1:3] for v in series["round_trip"]] == [[5, 0], [4, 1]]
    (letter,) = [r for _, _, _, r in read_topic(kafka, records.DEADLETTER)]
    assert letter["topic"] == records.STAMP and letter["reason"].startswith("schema:")


# ---- counters with positions (ebpf data plane) ---------------------------------------------------------------

PATH = ("r1", "r2", "r3", "r4")  # positions 0..3 of f1


def point(flow, position, period, packets, path=PATH, flowmon_id=5):
    role = "ingress" if position == 0 else "egress" if position == len(path) - 1 else "transit"
    rec = CounterRecord(path[position], flow, role, period, PERIOD, period % 2, packets, packets * 100,
                        flowmon_id=flowmon_id, position=position)
    return flow, rec.to_json()


def member(kafka, influx, opts, done, crash=False):
    """Run a processor until ``done(stats)`` and return its stats; ``crash``: it never commits (it dies before)."""
    processor = Processor(kafka, influx, opts)
    if crash:
        processor._commit = lambda: None
    try:
        run_until(processor, lambda: done(processor.stats))
    finally:
        processor.close()
    return processor.stats


def segment_rows(influx, flow):
    """{(from, to): [(time, tx, rx, lost, complete), ...]} of the segment_loss points of ``flow``."""
    res = influxql(influx, 'SELECT tx_packets, rx_packets, lost_packets, complete FROM segment_loss '
                           f"WHERE flow = '{flow}' GROUP BY \"from\", \"to\"")
    return {(s["tags"]["from"], s["tags"]["to"]): [tuple(v) for v in s["values"]]
            for s in res[0].get("series", [])}


def test_positions_give_segment_loss_published_and_stored_once(kafka, influx):
    p0, p1 = BASE_PERIOD, BASE_PERIOD + 1
    produce(kafka, [
        # P: one packet lost between r2 and r3, in arrival order egress, transits, ingress.
        point("f1", 3, p0, 999), point("f1", 2, p0, 999), point("f1", 1, p0, 1000), point("f1", 0, p0, 1000),
        # P+1: r3's block never arrives; the ends are there.
        point("f1", 0, p1, 500), point("f1", 1, p1, 498), point("f1", 3, p1, 497),
        # f2 has no positions: as before, no segments.
        block("f2", "ingress", p0, 300), block("f2", "egress", p0, 300),
    ])
    opts = options(pair_wait_s=1.0)
    member(kafka, influx, opts, lambda stats: stats["results"] == 3, crash=True)  # published and stored only
    results = {(r["flow"], r["period"]): r for _, _, _, r in read_topic(kafka, records.LOSS)}
    assert set(results) == {("f1", p0), ("f1", p1), ("f2", p0)}
    for r in results.values():
        records.validate(records.LOSS, r)
    one, two = results[("f1", p0)], results[("f1", p1)]
    assert (one["lost_packets"], one["complete"], one["flowmon_id"]) == (1, True, 5)
    assert one["segments"] == [
        {"from": "r1", "to": "r2", "tx_packets": 1000, "rx_packets": 1000, "lost_packets": 0, "complete": True},
        {"from": "r2", "to": "r3", "tx_packets": 1000, "rx_packets": 999, "lost_packets": 1, "complete": True},
        {"from": "r3", "to": "r4", "tx_packets": 999, "rx_packets": 999, "lost_packets": 0, "complete": True}]
    assert (two["lost_packets"], two["complete"]) == (3, True)  # end to end needs only the two ends
    assert two["segments"] == [
        {"from": "r1", "to": "r2", "tx_packets": 500, "rx_packets": 498, "lost_packets": 2, "complete": True},
        {"from": "r2", "to": "r3", "tx_packets": 498, "rx_packets": None, "lost_packets": None, "complete": False},
        {"from": "r3", "to": "r4", "tx_packets": None, "rx_packets": 497, "lost_packets": None, "complete": False}]
    assert "segments" not in results[("f2", p0)] and "flowmon_id" not in results[("f2", p0)]
    t0, t1 = p0 * 2 * 10**9, p1 * 2 * 10**9
    want = {
        ("r1", "r2"): [(t0, 1000, 1000, 0, True), (t1, 500, 498, 2, True)],
        ("r2", "r3"): [(t0, 1000, 999, 1, True), (t1, 498, None, None, False)],  # incomplete: no lost_packets
        ("r3", "r4"): [(t0, 999, 999, 0, True), (t1, None, 497, None, False)],
    }
    assert segment_rows(influx, "f1") == want
    assert segment_rows(influx, "f2") == {}
    assert [r["lost_packets"] for r in stored(influx, "f1")] == [1, 3]
    # A restarted member re-reads all nine records (transit blocks too: none was committed) and
    # publishes nothing again; the points it re-writes are the same series and timestamps.
    assert member(kafka, influx, opts, lambda stats: stats["replayed"] == 9)["results"] == 0
    assert len(read_topic(kafka, records.LOSS)) == 3
    assert segment_rows(influx, "f1") == want
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 9


def test_transit_offsets_move_only_with_the_result_that_uses_them(kafka, influx):
    # The transit block comes first; until the egress arrives nothing of f1 may be committed.
    produce(kafka, [point("f1", 1, BASE_PERIOD, 10, path=("r1", "r2", "r3")),
                    point("f1", 0, BASE_PERIOD, 10, path=("r1", "r2", "r3"))])
    opts = options(pair_wait_s=30)
    processor = Processor(kafka, influx, opts)
    try:
        run_until(processor, lambda: processor.stats["records"] == 2)
        for _ in range(3):
            processor.step()
        assert processor.stats["results"] == 0
        assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 0
        produce(kafka, [point("f1", 2, BASE_PERIOD, 9, path=("r1", "r2", "r3"))])
        run_until(processor, lambda: processor.stats["results"] == 1)
        processor.step()
    finally:
        processor.close()
    (result,) = [r for _, _, _, r in read_topic(kafka, records.LOSS)]
    assert [s["lost_packets"] for s in result["segments"]] == [0, 1]
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 3


def test_a_block_repeated_in_the_batch_that_completed_its_period_is_not_published_again(kafka, influx):
    produce(kafka, [block("f1", "ingress", BASE_PERIOD, 10), block("f1", "egress", BASE_PERIOD, 10),
                    block("f1", "egress", BASE_PERIOD, 10),  # an exporter's retry, right behind
                    point("f2", 0, BASE_PERIOD, 10, path=("r1", "r4")), point("f2", 1, BASE_PERIOD, 10, path=("r1", "r4")),
                    point("f2", 1, BASE_PERIOD, 10, path=("r1", "r4"))])
    opts = options(pair_wait_s=0.5)
    processor = Processor(kafka, influx, opts)
    try:
        run_until(processor, lambda: processor.stats["records"] == 6)
        deadline = time.monotonic() + 2.0  # four pairing waits: a re-opened period would have expired by now
        while time.monotonic() < deadline:
            processor.step()
    finally:
        processor.close()
    published = [(r["flow"], r["period"], r["complete"]) for _, _, _, r in read_topic(kafka, records.LOSS)]
    assert sorted(published) == [("f1", BASE_PERIOD, True), ("f2", BASE_PERIOD, True)]
    assert [r["complete"] for r in stored(influx, "f1")] == [True]
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 6


def test_the_loop_polls_briefly_while_outputs_are_in_flight(kafka, influx):
    """With outputs in flight the poll waits at most BUSY_POLL_MS, so an output the writer finishes while the
    topic is idle is finished and committed then, not a whole ``poll_ms`` later; with none, ``poll_ms``."""
    produce(kafka, [block("f1", "ingress", BASE_PERIOD, 10), block("f1", "egress", BASE_PERIOD, 10)])
    opts = options(poll_ms=1500)
    processor = Processor(kafka, influx, opts)
    polls: list[tuple[int, bool]] = []  # (timeout_ms, writer busy)
    real_poll = processor._consumer.poll

    def poll(timeout_ms=0, **kw):
        polls.append((timeout_ms, processor._writer.busy))
        return real_poll(timeout_ms=timeout_ms, **kw)

    processor._consumer.poll = poll
    try:
        run_until(processor, lambda: processor.stats["results"] == 1)
        processor.step()  # idle: nothing in flight
    finally:
        processor.close()
    assert {t for t, busy in polls if busy} == {BUSY_POLL_MS}
    assert {t for t, busy in polls if not busy} == {1500}
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 2
