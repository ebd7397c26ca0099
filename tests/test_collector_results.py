"""The collector's results consumer against a real Kafka-protocol broker (Tansu).

The graph is the in-memory GraphStore (MemoryGraph): ArangoDB cannot run here.
Kafka, the consumer group and its committed offsets are real.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from srv6pm import records
from srv6pm.collector import graph as g
from srv6pm.collector.results import ResultsConsumer, ResultsOptions
from srv6pm.config import KafkaSettings
from srv6pm.kafka import ensure_topics
from srv6pm.records import DelayResult, LossResult

pytestmark = pytest.mark.services


@pytest.fixture
def kafka(fresh_broker):
    settings = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(settings, {records.LOSS: 2, records.DELAY: 2})
    return settings


@pytest.fixture
def graph():
    store = g.MemoryGraph()
    store.ensure()
    store.sync_topology(g.Topology(
        tuple(g.NodeSpec(n) for n in ("r1", "r2", "r3", "r4")), (),
        (g.PathSpec("flow", "f1", "r1", "r4", ("r2", "r3")), g.PathSpec("flow", "f2", "r4", "r1"),
         g.PathSpec("stamp", "s1", "r1", "r4", ("r2",)))))
    return store


def options():
    return ResultsOptions(poll_ms=200, session_timeout_ms=2000, heartbeat_interval_ms=500)


def loss(flow, period, lost, complete=True):
    tx = 1000
    return LossResult(flow=flow, period=period, period_start="2025-11-24T16:00:00Z", period_s=2.0, ingress="r1",
                      egress="r4", tx_packets=tx, rx_packets=tx - lost, tx_bytes=None, rx_bytes=None,
                      lost_packets=lost if complete else None, loss_ratio=lost / tx if complete else None,
                      complete=complete).to_json()


def delay(session, period, direction, mean):
    return DelayResult(session=session, period=period, period_start="2025-11-24T16:00:00Z", period_s=2.0,
                       direction=direction, sender="r1", reflector="r4", samples=10, lost=0, min_us=mean,
                       mean_us=mean, max_us=mean, p50_us=mean, p99_us=mean, jitter_us=0.0).to_json()


def produce(kafka, topic, values):
    """Send (key, raw value) pairs in order, all to partition 0 (so the order is kept), and wait for acks."""
    producer = KafkaProducer(**kafka.client_options(), acks="all")
    for key, value in values:
        producer.send(topic, key=key.encode(), value=value, partition=0)
    producer.flush()
    producer.close()


def consume_until(consumer, done, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; stats {consumer.stats}"
        consumer.step()


def committed(kafka, group, topic, partitions=2):
    reader = KafkaConsumer(**kafka.client_options(), group_id=group, enable_auto_commit=False)
    try:
        return {p: reader.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        reader.close()


def test_results_update_the_graph_bad_records_are_skipped_and_offsets_follow(kafka, graph):
    group = "test-" + uuid.uuid4().hex[:8]
    produce(kafka, records.LOSS, [
        ("f1", loss("f1", 101, lost=4)),
        ("f1", b"{not json"),                       # bad: skipped, later records still applied
        ("f1", b'{"v": 1, "flow": "f1"}'),          # JSON, but not a loss result
        ("f1", loss("f1", 100, lost=9)),            # older period, arriving late: ignored
        ("f2", loss("f2", 101, lost=0, complete=False)),
        ("f9", loss("f9", 101, lost=1)),            # unknown flow: ignored
    ])
    produce(kafka, records.DELAY, [
        ("s1", delay("s1", 101, "forward", 20_100.0)),
        ("s1", delay("s1", 101, "backward", 20_300.0)),
        ("s1", b"NaN"),
    ])
    consumer = ResultsConsumer(kafka, graph, group_id=group, options=options())
    try:
        consume_until(consumer, lambda: consumer.stats["records"] >= 9)
    finally:
        consumer.close()
    assert consumer.stats == {"records": 9, "applied": 4, "stale": 1, "unknown": 1, "bad": 3}
    paths = {p["_key"]: p for p in graph.snapshot()["paths"]}
    assert (paths["flow:f1"]["loss"]["period"], paths["flow:f1"]["loss"]["lost_packets"]) == (101, 4)
    assert (paths["flow:f2"]["loss"]["complete"], paths["flow:f2"]["loss"]["lost_packets"]) == (False, None)
    assert paths["stamp:s1"]["delay_us"] == 20_100.0
    assert paths["stamp:s1"]["delay"]["backward"]["mean_us"] == 20_300.0
    # Every record consumed is committed, bad ones included (they are skipped for good).
    assert committed(kafka, group, records.LOSS) == {0: 6, 1: None}
    assert committed(kafka, group, records.DELAY) == {0: 3, 1: None}


def test_a_restarted_consumer_goes_on_from_the_committed_offsets(kafka, graph):
    group = "test-" + uuid.uuid4().hex[:8]
    produce(kafka, records.LOSS, [("f1", loss("f1", 100, lost=1)), ("f1", loss("f1", 101, lost=2))])
    first = ResultsConsumer(kafka, graph, group_id=group, options=options())
    try:
        consume_until(first, lambda: first.stats["records"] >= 2)
    finally:
        first.close()
    assert committed(kafka, group, records.LOSS)[0] == 2

    produce(kafka, records.LOSS, [("f1", loss("f1", 102, lost=3))])
    second = ResultsConsumer(kafka, graph, group_id=group, options=options())
    try:
        consume_until(second, lambda: second.stats["records"] >= 1)
        for _ in range(3):  # nothing more arrives: the first two are not read again
            second.step()
    finally:
        second.close()
    assert second.stats == {"records": 1, "applied": 1, "stale": 0, "unknown": 0, "bad": 0}
    assert committed(kafka, group, records.LOSS)[0] == 3
    assert graph.stats["loss"] == 3
    assert next(p for p in graph.snapshot()["paths"] if p["_key"] == "flow:f1")["loss"]["lost_packets"] == 3


class _FailingOnce(g.MemoryGraph):
    """A MemoryGraph whose first update (the consumer stores each poll with update_many) fails as an
    unreachable store would."""

    def __init__(self):
        super().__init__()
        self.failures = 0

    def update_many(self, results):
        if self.failures == 0:
            self.failures += 1
            raise g.GraphStoreError("store down (test)")
        return super().update_many(results)


def test_a_failing_store_is_retried_and_nothing_is_committed_before_it_takes_the_result(kafka):
    store = _FailingOnce()
    store.ensure()
    store.sync_topology(g.Topology((g.NodeSpec("r1"), g.NodeSpec("r4")), (), (g.PathSpec("flow", "f1", "r1", "r4"),)))
    group = "test-" + uuid.uuid4().hex[:8]
    produce(kafka, records.LOSS, [("f1", loss("f1", 100, lost=5))])
    consumer = ResultsConsumer(kafka, store, group_id=group, options=options())
    try:
        consume_until(consumer, lambda: consumer.stats["records"] >= 1)
    finally:
        consumer.close()
    assert store.failures == 1 and consumer.stats["applied"] == 1
    assert committed(kafka, group, records.LOSS)[0] == 1


def test_stop_ends_run_while_the_store_keeps_failing_and_leaves_the_record_uncommitted(kafka):
    class Down(g.MemoryGraph):
        def update_many(self, results):
            raise g.GraphStoreError("store down (test)")

    store = Down()
    store.ensure()
    group = "test-" + uuid.uuid4().hex[:8]
    produce(kafka, records.LOSS, [("f1", loss("f1", 100, lost=5))])
    consumer = ResultsConsumer(kafka, store, group_id=group, options=options())
    errors = []

    def run():
        try:
            consumer.run()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while consumer.stats["records"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    consumer.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not errors  # a stop during the retries ends run() as any stop does (srv6pm.consume.ConsumeLoop.run)
    assert committed(kafka, group, records.LOSS)[0] is None


def test_segment_loss_published_by_the_processor_goes_onto_the_links(kafka):
    from srv6pm.records import Segment
    store = g.MemoryGraph()
    store.ensure()
    store.sync_topology(g.Topology(tuple(g.NodeSpec(n) for n in ("r1", "r2", "r3")),
                                   (g.LinkSpec("r1", "r2"), g.LinkSpec("r3", "r2")),
                                   (g.PathSpec("flow", "f1", "r1", "r3", ("r2",)),)))
    result = LossResult(flow="f1", period=200, period_start="2025-11-24T16:00:00Z", period_s=2.0, ingress="r1",
                        egress="r3", tx_packets=100, rx_packets=97, tx_bytes=None, rx_bytes=None, lost_packets=3,
                        loss_ratio=0.03, complete=True, flowmon_id=9,
                        segments=(Segment("r1", "r2", 100, 97, 3, True), Segment("r2", "r3", 97, 97, 0, True)))
    produce(kafka, records.LOSS, [("f1", result.to_json())])
    consumer = ResultsConsumer(kafka, store, group_id="test-" + uuid.uuid4().hex[:8], options=options())
    try:
        consume_until(consumer, lambda: consumer.stats["applied"] == 1)
    finally:
        consumer.close()
    links = {li["_key"]: li["segment_loss"] for li in store.snapshot()["links"]}
    assert (links["r1--r2"]["f1"]["lost_packets"], links["r3--r2"]["f1"]["lost_packets"]) == (3, 0)
    assert (links["r3--r2"]["f1"]["from"], links["r3--r2"]["f1"]["to"]) == ("r2", "r3")


def test_liveness_alarms_mark_the_path_edge_and_other_alarms_leave_the_graph_alone(kafka, graph):
    ensure_topics(kafka, {records.ALARMS: 2})
    group = "test-" + uuid.uuid4().hex[:8]
    base = dict(subject="s1", direction=None, period=5, period_start="2025-11-24T16:00:10Z", period_s=2.0,
                value=3, threshold=3)
    down = records.Alarm(kind="liveness", raised=True, time_ns=10_000_000_000, last_reply_ns=9_940_000_000,
                         sender="r1", reflector="r4", **base)
    delay_alarm = records.Alarm(kind="delay_p99_us", **{**base, "direction": "forward", "value": 9e5,
                                                        "threshold": 5e4}, raised=True)
    produce(kafka, records.ALARMS, [("s1", down.to_json()), ("s1", delay_alarm.to_json())])
    consumer = ResultsConsumer(kafka, graph, group_id=group, options=options())
    try:
        consume_until(consumer, lambda: consumer.stats["records"] >= 2)
    finally:
        consumer.close()
    assert consumer.stats == {"records": 2, "applied": 1, "stale": 0, "unknown": 0, "bad": 0}
    s1 = {p["_key"]: p for p in graph.snapshot()["paths"]}["stamp:s1"]
    assert s1["alive"] is False and s1["liveness"]["last_reply_ns"] == 9_940_000_000
    assert committed(kafka, group, records.ALARMS) == {0: 2, 1: None}


def test_a_broker_hung_longer_than_the_session_timeout_is_ridden_out(graph):
    """The broker suspended (SIGSTOP) for three session timeouts and resumed: the consumer never raises,
    goes on with the records produced after, and commits everything."""
    from srv6pm.lab.emulators.broker import EmbeddedBroker
    from srv6pm.ports import free_port

    with EmbeddedBroker(port=free_port()) as broker:
        kafka = KafkaSettings(bootstrap=broker.bootstrap)
        ensure_topics(kafka, {records.LOSS: 2, records.DELAY: 2})
        group = "test-" + uuid.uuid4().hex[:8]
        produce(kafka, records.LOSS, [("f1", loss("f1", 100, lost=1))])
        consumer = ResultsConsumer(kafka, graph, group_id=group, options=options())
        try:
            consume_until(consumer, lambda: consumer.stats["records"] >= 1)
            broker.freeze()
            try:
                deadline = time.monotonic() + 6  # three times the session timeout of options()
                while time.monotonic() < deadline:
                    consumer.step()
            finally:
                broker.thaw()
            produce(kafka, records.LOSS, [("f1", loss("f1", 101, lost=2))])
            consume_until(consumer, lambda: consumer.stats["applied"] >= 2, timeout=60)
            consume_until(consumer, lambda: committed(kafka, group, records.LOSS)[0] == 2, timeout=30)
        finally:
            consumer.close()
    assert next(p for p in graph.snapshot()["paths"] if p["_key"] == "flow:f1")["loss"]["lost_packets"] == 2
