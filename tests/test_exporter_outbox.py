"""The exporter's outbox against the real embedded broker (Tansu), stopped with SIGSTOP and resumed.

A stopped broker keeps its connections open and its memory storage, so a
request sent to it times out at the client and may still be written when
the broker runs again: the case where a naive retry doubles records. Each
test stops it for longer than the client's timeouts (1.5 s here) and checks
what arrives on the topic, record by record.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from srv6pm import metrics
from srv6pm.exporter.outbox import Outbox
from srv6pm.exporter.spool import Spool, encode
from srv6pm.kafka import ensure_topics
from srv6pm.lab.emulators.broker import EmbeddedBroker
from srv6pm.ports import free_port
from srv6pm.publish import Publisher, Send

pytestmark = pytest.mark.services

TOPIC = "t.counters"
FLOWS = 12
TIMEOUT_MS = 1500


@pytest.fixture
def broker():
    with EmbeddedBroker(port=free_port()) as running:
        ensure_topics(running.bootstrap, {TOPIC: 3})
        yield running
        os.kill(running._process.pid, signal.SIGCONT)  # never leave it stopped for the teardown


def pause(broker):
    os.kill(broker._process.pid, signal.SIGSTOP)


def resume(broker):
    os.kill(broker._process.pid, signal.SIGCONT)


def outbox(broker, directory, max_bytes=10**7, node="n1"):
    options = {"bootstrap_servers": broker.bootstrap}
    box = Outbox(Spool(directory, max_bytes, segment_bytes=10**6), lambda: Publisher(options, "test", request_timeout_ms=TIMEOUT_MS),
                 options, [TOPIC], node, timeout_ms=TIMEOUT_MS, backoff_s=0.2, max_backoff_s=1.0)
    box.start()
    return box


def period(p: int, flows: int = FLOWS) -> list[Send]:
    """One guard time's records: one per flow, keyed by flow, the value naming flow and period."""
    return [Send(TOPIC, None, b"f%d" % i, b"f%d:%04d" % (i, p)) for i in range(flows)]


def settle(box, timeout=30.0):
    """Until everything put is acknowledged and the buffer is empty."""
    deadline = time.monotonic() + timeout
    while box.spool or not box.wait(0.2):
        assert time.monotonic() < deadline, f"still {box.spool.records} records buffered"
        time.sleep(0.1)


def periods_on_topic(broker) -> dict[bytes, list[int]]:
    """Per flow, the periods of its records on the topic, in offset order (its partition's order)."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(3)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[bytes, list[int]] = {}
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for _, messages in sorted(consumer.poll(timeout_ms=300).items()):
                for m in messages:
                    flow, p = m.value.split(b":")
                    assert flow == m.key
                    out.setdefault(m.key, []).append(int(p))
        return out
    finally:
        consumer.close()


def dropped(node):
    return metrics.get().buffer_dropped.labels("exporter", node)._value.get()


def waiting(node):
    return metrics.get().broker_waiting.labels("exporter", node)._value.get()


def test_a_broker_stopped_longer_than_the_timeouts_gets_every_record_once_and_in_order(broker, tmp_path):
    box = outbox(broker, tmp_path)
    try:
        for p in range(3):
            box.put(period(p), durable=True)
            assert box.wait(5)
        pause(broker)
        buffered = []
        for p in range(3, 12):  # about 4 s stopped: more than two timeouts
            box.put(period(p), durable=True)
            box.wait(0.4)
            buffered.append(box.spool.records)
        resume(broker)
        for p in range(12, 15):
            box.put(period(p), durable=True)
        settle(box)
    finally:
        box.close()
    assert max(buffered) > 0  # the outage was felt: records waited on disk
    assert periods_on_topic(broker) == {b"f%d" % i: list(range(15)) for i in range(FLOWS)}


def test_guard_sized_puts_through_an_outage_arrive_once_and_in_order_and_the_collector_runs_again(broker, tmp_path):
    """1,500 records a put: the publisher's kept grouping by key and the collector paused while they are
    published; the same guarantees as with a dozen, and the collector enabled again once all is settled."""
    import gc
    flows = 1500
    assert gc.isenabled()
    box = outbox(broker, tmp_path)
    try:
        for p in range(3):
            box.put(period(p, flows), durable=True)
            assert box.wait(10)
        pause(broker)
        for p in range(3, 8):  # more than two timeouts
            box.put(period(p, flows), durable=True)
            box.wait(0.5)
        resume(broker)
        for p in range(8, 10):
            box.put(period(p, flows), durable=True)
        settle(box, 60)
    finally:
        box.close()
    assert gc.isenabled()
    assert periods_on_topic(broker) == {b"f%d" % i: list(range(10)) for i in range(flows)}


def test_the_collector_is_paused_while_any_thread_is_inside_and_resumed_only_if_it_ran_before():
    import gc
    import threading

    from srv6pm.exporter.outbox import gc_paused
    assert gc.isenabled()
    inside, leave = threading.Event(), threading.Event()

    def other():
        with gc_paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with gc_paused():
        assert not gc.isenabled()
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread is still inside
    leave.set()
    thread.join(10)
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it did not run before: it stays off
    finally:
        gc.enable()


def test_records_sent_to_a_stopped_broker_are_not_doubled_when_it_writes_them_late(broker, tmp_path):
    box = outbox(broker, tmp_path)
    try:
        box.put(period(0), durable=True)
        assert box.wait(5)
        pause(broker)
        box.put(period(1), durable=True)  # sent on the open connection: the broker reads it when resumed
        deadline = time.monotonic() + 10
        while not box.spool:  # timed out, kept
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(TIMEOUT_MS / 1000)
        resume(broker)
        box.put(period(2), durable=True)
        settle(box)
    finally:
        box.close()
    assert box.already_written == FLOWS  # the broker did write period 1 late; the read-back left it out
    assert periods_on_topic(broker) == {b"f%d" % i: [0, 1, 2] for i in range(FLOWS)}


def test_past_the_bound_the_oldest_periods_are_dropped_counted_and_the_rest_arrive_in_order(broker, tmp_path):
    node = "overflow"
    size = len(encode(period(0)))
    before = dropped(node)
    pause(broker)  # unreachable from the start: nothing is in flight, every record waits on disk
    box = outbox(broker, tmp_path, max_bytes=4 * size, node=node)
    try:
        box.put(period(0), durable=True)
        deadline = time.monotonic() + 20
        while waiting(node) != 1:  # the first connection attempt timed out: the outbox knows it must buffer
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for p in range(1, 11):
            box.put(period(p), durable=True)
        assert box.wait(5)
        resume(broker)
        settle(box)
    finally:
        box.close()
    on_topic = periods_on_topic(broker)
    assert dropped(node) - before == 7 * FLOWS  # periods 0..6 made room for 7, 8, 9 and then 10
    assert on_topic == {b"f%d" % i: [7, 8, 9, 10] for i in range(FLOWS)}


def test_the_buffer_survives_an_exporter_restart(broker, tmp_path):
    first = outbox(broker, tmp_path)
    try:
        first.put(period(0), durable=True)
        assert first.wait(5)
        pause(broker)
        for p in range(1, 5):
            first.put(period(p), durable=True)
            time.sleep(0.5)
    finally:
        first.close(timeout=0.5)  # a publish may be in flight: its records go to disk as doubtful
    assert Spool(tmp_path, 10**7).records == 4 * FLOWS
    resume(broker)
    second = outbox(broker, tmp_path)
    try:
        second.put(period(5), durable=True)
        settle(second)
    finally:
        second.close()
    assert periods_on_topic(broker) == {b"f%d" % i: list(range(6)) for i in range(FLOWS)}
