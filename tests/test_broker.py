"""The embedded Kafka-compatible broker and srv6pm.kafka helpers, with real kafka-python clients."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from srv6pm.kafka import BrokerUnavailableError, TopicPartitionCountError, ensure_topics, wait_for_broker
from srv6pm.lab.emulators.broker import BrokerStartError, EmbeddedBroker

pytestmark = pytest.mark.services

# Short group timeouts: a join takes about session_timeout_ms / 2 on the embedded broker.
GROUP_OPTIONS = dict(session_timeout_ms=2000, heartbeat_interval_ms=500, max_poll_interval_ms=5000)


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def partitions(bootstrap: str, topic: str) -> set[int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return consumer.partitions_for_topic(topic) or set()
    finally:
        consumer.close()


def group_consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_OPTIONS,
    )


def consume(consumer: KafkaConsumer, count: int, timeout: float = 20.0) -> list:
    """Poll until ``count`` records arrived (never more: max_records bounds every poll)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200, max_records=count - len(got)).values():
            got.extend(batch)
    assert len(got) == count, f"got {len(got)} of {count} records within {timeout} s"
    return got


def test_ensure_topics_creates_topics_with_partitions(broker):
    counters, loss = unique("counters"), unique("loss")
    created = ensure_topics(broker, {counters: 3, loss: 5})
    assert created == sorted([counters, loss])
    assert partitions(broker, counters) == {0, 1, 2}
    assert partitions(broker, loss) == {0, 1, 2, 3, 4}


def test_ensure_topics_on_existing_topics_is_a_no_op(broker):
    topic = unique("existing")
    assert ensure_topics(broker, {topic: 2}) == [topic]
    assert ensure_topics(broker, {topic: 2}) == []
    assert ensure_topics(broker, {topic: 1}) == []  # more partitions than wanted is fine
    assert partitions(broker, topic) == {0, 1}


def test_ensure_topics_refuses_too_few_partitions(broker):
    topic = unique("small")
    ensure_topics(broker, {topic: 1})
    with pytest.raises(TopicPartitionCountError, match="has 1, needs 4"):
        ensure_topics(broker, {topic: 4})


def test_ensure_topics_accepts_settings_objects(broker):
    class Settings:  # the shape of srv6pm.config.KafkaSettings
        def client_options(self):
            return {"bootstrap_servers": broker.split(","), "security_protocol": "PLAINTEXT"}

    topic = unique("settings")
    assert ensure_topics(Settings(), {topic: 2}) == [topic]


def test_group_consumer_resumes_from_committed_offsets(broker):
    topic, group = unique("records"), unique("group")
    ensure_topics(broker, {topic: 3})
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    sent = [(f"flow-{i % 7}".encode(), str(i).encode()) for i in range(60)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    first = group_consumer(broker, topic, group)
    seen = consume(first, 25)
    first.commit()
    committed = {tp: first.committed(tp) for tp in first.assignment()}
    assert sum(committed.values()) == 25
    first.close()

    second = group_consumer(broker, topic, group)
    rest = consume(second, 35)
    assert {tp: second.committed(tp) for tp in committed} == committed  # read back by a new member
    second.close()

    # Every record exactly once across the restart, each partition resumed at its committed offset.
    keyed = [(r.key, r.value) for r in seen + rest]
    assert sorted(keyed) == sorted(sent)
    for tp, offset in committed.items():
        resumed = [r.offset for r in rest if r.partition == tp.partition]
        assert not resumed or min(resumed) == offset
    # Same key, same partition; per-key order is the send order.
    by_key: dict[bytes, list] = {}
    for record in sorted(seen + rest, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key, []).append(record)
    for key, records in by_key.items():
        assert len({r.partition for r in records}) == 1, key
        assert [int(r.value) for r in records] == sorted(int(r.value) for r in records)


def test_started_broker_answers_and_stops_cleanly(free_port):
    port = free_port()
    broker = EmbeddedBroker(port=port)
    with broker:
        assert broker.running
        assert broker.bootstrap == f"127.0.0.1:{port}"
        wait_for_broker(broker.bootstrap, timeout=5)
        with pytest.raises(BrokerStartError, match="already in use"):
            EmbeddedBroker(port=port).start()
    assert not broker.running
    broker.stop()  # idempotent
    with pytest.raises(BrokerUnavailableError):
        wait_for_broker(broker.bootstrap, timeout=0.5)


def test_consumer_group_offsets_survive_without_members(broker):
    """committed() is readable by a consumer that never joins the group."""
    topic, group = unique("offsets"), unique("group")
    ensure_topics(broker, {topic: 1})
    producer = KafkaProducer(bootstrap_servers=broker)
    for i in range(5):
        producer.send(topic, value=str(i).encode())
    producer.flush()
    producer.close()
    member = group_consumer(broker, topic, group)
    consume(member, 5)
    member.commit()
    member.close()

    reader = KafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    try:
        assert reader.committed(TopicPartition(topic, 0)) == 5
    finally:
        reader.close()
