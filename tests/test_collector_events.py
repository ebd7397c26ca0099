"""Collector events: the record and its schema; publishing never blocks; events wait while Kafka is away."""

from __future__ import annotations

import re
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from srv6pm import decode, records
from srv6pm.collector.events import Events, now_rfc3339
from srv6pm.lab.emulators.broker import EmbeddedBroker


def test_event_record_round_trips_and_the_schema_holds_it_to_its_kinds():
    event = records.Event(kind="apply_failed", time=now_rfc3339(), generation=3, node="r1", object="policy f1",
                          detail="FAILED_PRECONDITION: No such device", boot_id="ab12")
    assert decode.decode_event(event.to_json()) == event and event.key == "r1"
    assert decode.fast(records.EVENTS, event.to_json()) == event  # the typed decoder's own path
    doc = event.to_dict()
    assert doc["v"] == 1 and set(doc) == {"v", "time", "kind", "node", "object", "detail", "boot_id", "generation"}
    collector_wide = records.Event(kind="converged", time=now_rfc3339(), generation=1)
    assert collector_wide.key == "collector" and collector_wide.to_dict()["node"] is None
    for bad, where in (({**doc, "kind": "node_sleepy"}, "kind"), ({**doc, "generation": -1}, "generation"),
                       ({k: v for k, v in doc.items() if k != "node"}, "(record)")):
        with pytest.raises(records.RecordError, match=re.escape(f"schema: {where}")):
            decode.decode_event(records.encode(bad))
    # Later versions may add fields (as on every srv6pm topic): a reader of v1 takes what it knows.
    assert decode.decode_event(records.encode({**doc, "added_later": 1})) == event


def test_emit_refuses_an_event_the_schema_refuses():
    with pytest.raises(records.RecordError, match="kind"):
        Events(None).emit("node_sleepy", node="r1")


def test_events_wait_while_kafka_is_away_and_are_published_in_order_when_it_comes(free_port):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    events = Events(bootstrap, retry_max_s=0.5)
    events.start()
    try:
        started = time.monotonic()
        sent = [events.emit("node_up", node="r1", boot_id=f"b{i}") for i in range(3)]
        assert time.monotonic() - started < 1.0, "emit must not wait for Kafka"
        deadline = time.monotonic() + 30
        while events.stats["failed"] == 0:
            assert time.monotonic() < deadline, "no failed publish attempt while the broker is away"
            time.sleep(0.05)
        assert events.stats["published"] == 0
        with EmbeddedBroker(port=port) as broker:
            deadline = time.monotonic() + 60
            while events.stats["published"] < 3:
                assert time.monotonic() < deadline, f"not published after the broker came: {events.stats}"
                time.sleep(0.1)
            consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
            try:
                tp = TopicPartition(records.EVENTS, 0)
                consumer.assign([tp])
                consumer.seek_to_beginning(tp)
                got: list[records.Event] = []
                deadline = time.monotonic() + 20
                while len(got) < 3 and time.monotonic() < deadline:
                    for batch in consumer.poll(timeout_ms=200).values():
                        got += [decode.decode_event(m.value) for m in batch]
            finally:
                consumer.close()
            assert got == sent
            events.close()
    finally:
        events.close()


def test_event_times_are_rfc3339_utc_microseconds_truncated():
    from datetime import datetime, timezone
    for ns in (0, 1_764_000_000_999_999_999, 2_091_152_304_521_731_975, 1_700_000_000_000_000_500):
        expected = datetime.fromtimestamp(ns // 10**9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        assert now_rfc3339(ns) == f"{expected}.{ns // 1000 % 10**6:06d}Z"
    assert now_rfc3339(1_764_000_000_999_999_999) == "2025-11-24T16:00:00.999999Z"
    assert records.conforms(records.EVENTS, now_rfc3339(), "date-time")
