"""Collector events: the record and its schema; publishing never blocks; events wait while Kafka is away."""

from __future__ import annotations

import re
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from srv6pm import decode, records
from srv6pm.collector.events import QUEUE_LIMIT, Events, now_rfc3339
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
            assert read_events(broker.bootstrap, 3) == sent
            events.close()
    finally:
        events.close()


def read_events(bootstrap: str, n: int) -> list[records.Event]:
    """Every event on srv6pm.events (its one partition), from the beginning: read until ``n`` have come, then
    for one more second, so that any more (a doubled one) are in the list too."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             max_partition_fetch_bytes=4 * 1024 * 1024)
    try:
        tp = TopicPartition(records.EVENTS, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got: list[records.Event] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                got += [decode.decode_event(m.value) for m in batch]
            if len(got) >= n:
                deadline = min(deadline, time.monotonic() + 1.0)
    finally:
        consumer.close()
    return got


def test_a_burst_of_fifty_thousand_events_is_published_whole_once_and_in_order():
    """A reconcile of 10,000 new flows over four exporters emits about 50,000 events: emitted here without a
    pause, faster than a reconcile does, every one arrives once, in order, and none is dropped."""
    with EmbeddedBroker(port=0) as broker:
        events = Events(broker.bootstrap, flush_timeout=60)
        events.start()
        try:
            sent = [events.emit("applied", node=f"r{i % 4 + 1}", object=f"policy f{i}", generation=1)
                    for i in range(50_000)]
            events.close()  # flushes what is queued
            assert events.stats == {"emitted": 50_000, "published": 50_000, "dropped": 0, "failed": 0}
            assert read_events(broker.bootstrap, len(sent)) == sent
        finally:
            events.close()


def test_while_kafka_is_away_the_queue_keeps_the_newest_events_and_counts_the_dropped(free_port):
    port = free_port()
    events = Events(f"127.0.0.1:{port}", retry_max_s=0.5, flush_timeout=30)
    events.start()
    try:
        first = events.emit("config_loaded", generation=1)
        deadline = time.monotonic() + 30
        while events.stats["failed"] == 0:
            assert time.monotonic() < deadline, "no failed publish attempt while the broker is away"
            time.sleep(0.05)
        extra = 25
        sent = [first] + [events.emit("applied", node="r1", object=f"policy f{i}", generation=1)
                          for i in range(QUEUE_LIMIT + extra - 1)]
        assert events.stats["dropped"] == extra
        with EmbeddedBroker(port=port) as broker:
            events.close()
            assert events.stats["published"] == QUEUE_LIMIT and events.stats["dropped"] == extra
            assert read_events(broker.bootstrap, QUEUE_LIMIT) == sent[extra:]
    finally:
        events.close()


def test_event_times_are_rfc3339_utc_microseconds_truncated():
    from datetime import datetime, timezone
    for ns in (0, 1_764_000_000_999_999_999, 2_091_152_304_521_731_975, 1_700_000_000_000_000_500):
        expected = datetime.fromtimestamp(ns // 10**9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        assert now_rfc3339(ns) == f"{expected}.{ns // 1000 % 10**6:06d}Z"
    assert now_rfc3339(1_764_000_000_999_999_999) == "2025-11-24T16:00:00.999999Z"
    assert records.conforms(records.EVENTS, now_rfc3339(), "date-time")


def test_events_emitted_while_the_broker_restarts_are_published_when_it_is_back(free_port):
    """The publisher's connection and topic go with the broker (memory storage): it makes both again and
    publishes what waited, in order."""
    port = free_port()
    events = Events(f"127.0.0.1:{port}", retry_max_s=0.5, flush_timeout=30)
    events.start()
    try:
        with EmbeddedBroker(port=port):
            events.emit("config_loaded", generation=1)
            deadline = time.monotonic() + 30
            while events.stats["published"] < 1:
                assert time.monotonic() < deadline, f"not published: {events.stats}"
                time.sleep(0.05)
        sent = [events.emit("node_down", node=f"r{i}", generation=1) for i in range(100)]
        deadline = time.monotonic() + 30
        while events.stats["failed"] == 0:
            assert time.monotonic() < deadline, "no failed publish attempt while the broker is away"
            time.sleep(0.05)
        with EmbeddedBroker(port=port) as broker:
            events.close()
            assert events.stats["published"] == 101 and events.stats["dropped"] == 0
            assert read_events(broker.bootstrap, len(sent)) == sent
    finally:
        events.close()
