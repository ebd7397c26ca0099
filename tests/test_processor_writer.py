"""The processor's writer as a pipeline: an output is published while the next one is stored, in order, never
published before it is stored, and the loop is told to hold when the oldest output is late.

Against the real embedded InfluxDB and a real broker. The store and the publisher are the real ones, wrapped
to record when each call begins and ends and, in the first test, to keep one publish open until the next
output's lines are stored: a writer that stored and published one output at a time would never get there.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from srv6pm import metrics as metrics_mod
from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import InfluxWriter, influxql
from srv6pm.kafka import ensure_topics
from srv6pm.processor.writer import Output, Writer
from srv6pm.publish import Publisher, Send
from srv6pm.waiting import Waiting

from test_processor import read_topic

pytestmark = pytest.mark.services

TOPIC = records.LOSS


class Recording:
    """A real store or publisher, whose calls are appended to ``events`` as (what, name, "begin"/"end")."""

    def __init__(self, real, what: str, events: list, name_of):
        self._real, self._what, self._events, self._name_of = real, what, events, name_of
        self.before_end = None  # called (with the name) before a call returns, if set

    def _call(self, method, items):
        name = self._name_of(items)
        self._events.append((self._what, name, "begin"))
        try:
            return method(items)
        finally:
            if self.before_end is not None:
                self.before_end(name)
            self._events.append((self._what, name, "end"))

    def write(self, lines):
        return self._call(self._real.write, lines)

    def publish(self, sends):
        return self._call(self._real.publish, sends)

    def close(self):
        self._real.close()


@pytest.fixture
def setup(fresh_broker, influxdb):
    kafka = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(kafka, {TOPIC: 1})
    database = "w" + uuid.uuid4().hex[:10]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{database}"', database="_internal")
    influx = InfluxSettings(url=influxdb.url, bucket=database)
    events: list[tuple[str, str, str]] = []
    store = Recording(InfluxWriter(influx), "store", events, lambda lines: lines[0].split(",", 1)[0])
    publisher = Recording(Publisher(kafka.client_options(), "test-writer"), "publish", events,
                          lambda sends: sends[0].key.decode())
    metrics = metrics_mod.get(CollectorRegistry())
    writer = Writer(store, publisher, threading.Event(), 1.0,
                    Waiting("processor", logging.getLogger("t"), metrics), metrics)
    yield kafka, influx, writer, store, publisher, events
    writer.close()
    store.close()
    publisher.close()


def output(name: str, n: int = 20) -> Output:
    lines = [f"{name},i={i} v={i}i {10**9 * (i + 1)}" for i in range(n)]
    sends = [Send(TOPIC, 0, name.encode(), b'{"i":%d}' % i) for i in range(n)]
    return Output(lines, sends, name, line_origins=[("in", 0)] * n, send_origins=[("in", 0)] * n)


def test_an_output_is_published_while_the_next_one_is_stored_in_order(setup):
    kafka, influx, writer, store, publisher, events = setup
    b_stored = threading.Event()
    store.before_end = lambda name: b_stored.set() if name == "b" else None
    publisher.before_end = lambda name: b_stored.wait(10) if name == "a" else None
    a, b = output("a"), output("b")
    writer.submit(a)
    assert not writer.full
    writer.submit(b)
    assert writer.full
    with pytest.raises(RuntimeError, match="in flight"):
        writer.submit(output("c"))
    assert writer.wait() is a and writer.wait() is b
    assert not writer.busy and writer.wait() is None
    assert b_stored.is_set()
    # a's publish was still open when b's store ended: the two overlapped.
    assert events.index(("store", "b", "end")) < events.index(("publish", "a", "end"))
    # each output stored before it is published, and published in the order submitted
    assert [e for e in events if e[2] == "end"] == [("store", "a", "end"), ("store", "b", "end"),
                                                    ("publish", "a", "end"), ("publish", "b", "end")]
    assert events.index(("store", "b", "end")) < events.index(("publish", "b", "begin"))
    assert a.done_s <= b.done_s and a.phase is None and b.phase is None
    assert [key for _, _, key, _ in read_topic(kafka, TOPIC)] == [b"a"] * 20 + [b"b"] * 20
    for name in ("a", "b"):
        (res,) = influxql(influx, f'SELECT count("v") FROM "{name}"')
        assert res["series"][0]["values"][0][1] == 20


def test_settle_says_hold_once_the_oldest_output_is_late(setup):
    _, _, writer, store, _, _ = setup
    release = threading.Event()
    store.before_end = lambda name: release.wait(10) if name == "slow" else None
    assert writer.settle(0.2)  # nothing in flight
    slow = output("slow")
    writer.submit(slow)
    assert writer.phase == "influxdb"
    assert writer.settle(0.5)  # in flight for less than 0.5 s, room for another: no hold yet
    time.sleep(0.6)
    assert not writer.settle(0.5)  # the oldest is late
    writer.submit(output("next"))
    started = time.monotonic()
    assert not writer.settle(0.3)  # full: waits that long for the oldest, then says hold
    assert time.monotonic() - started >= 0.3
    assert writer.withdraw({("other", 1)})  # nothing of that origin is under way
    release.set()
    assert writer.settle(5) and writer.done
    assert writer.wait() is slow
    writer.wait()
    assert writer.all_done and not writer.busy


def test_withdrawn_origins_leave_every_output_in_flight(setup):
    kafka, influx, writer, store, _, _ = setup
    release = threading.Event()
    store.before_end = lambda name: release.wait(10) if name == "first" else None
    first, second = output("first"), output("second")
    writer.submit(first)
    writer.submit(second)
    time.sleep(0.2)  # first's store is under way: its origin cannot be taken back yet
    assert not writer.withdraw({("in", 0)})
    release.set()
    writer.wait(), writer.wait()
    assert first.withdrawn == second.withdrawn == {("in", 0)}
    assert read_topic(kafka, TOPIC) == []  # neither published
    (res,) = influxql(influx, 'SELECT count("v") FROM "second"')
    assert "series" not in res  # second's lines were withdrawn before its store began
