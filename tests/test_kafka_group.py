"""srv6pm.kafka.group_consumer: the one consumer-group set-up of the processor and the collector.

Against the real embedded Kafka-protocol broker (Tansu) with real kafka-python clients.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from srv6pm.config import KafkaSettings
from srv6pm.kafka import ensure_topics, group_consumer

TIMINGS = dict(session_timeout_ms=2000, heartbeat_interval_ms=500, max_poll_interval_ms=5000, max_poll_records=3)


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


class Recorder(ConsumerRebalanceListener):
    def __init__(self):
        self.assigned: list[tuple[str, int]] = []

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        self.assigned += [(tp.topic, tp.partition) for tp in assigned]


@pytest.mark.services
def test_group_consumer_reads_from_earliest_and_never_commits_by_itself(broker):
    topic, group = unique("gc"), unique("group")
    ensure_topics(broker, {topic: 2})
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    for i in range(5):  # produced before the group exists: "earliest" must still see them
        producer.send(topic, value=str(i).encode(), partition=0)
    producer.flush()
    producer.close()

    listener = Recorder()
    consumer = group_consumer(KafkaSettings(bootstrap=broker), [topic], group, "test-gc", listener=listener,
                              **TIMINGS)
    try:
        assert consumer.subscription() == {topic}
        got, batches = [], []
        deadline = time.monotonic() + 20
        while len(got) < 5 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                batches.append(len(records))
                got += [r.value for r in records]
        assert sorted(got) == [b"0", b"1", b"2", b"3", b"4"]
        assert max(batches) <= 3  # max_poll_records is passed on
        assert sorted(listener.assigned) == [(topic, 0), (topic, 1)]
        assert consumer.config["enable_auto_commit"] is False
        time.sleep(0.3)
    finally:
        consumer.close()  # with auto commit, close() would commit here
    reader = KafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    try:
        assert reader.committed(TopicPartition(topic, 0)) is None
    finally:
        reader.close()


@pytest.mark.parametrize("change, field", [
    ({"topics": []}, "topics"),
    ({"topics": ["ok", ""]}, "topics"),
    ({"group_id": ""}, "group_id"),
    ({"group_id": None}, "group_id"),
    ({"session_timeout_ms": 0}, "session_timeout_ms"),
    ({"max_poll_records": -1}, "max_poll_records"),
    ({"max_poll_interval_ms": 1.5}, "max_poll_interval_ms"),
    ({"heartbeat_interval_ms": 2000}, "heartbeat_interval_ms"),
])
def test_group_consumer_refuses_bad_arguments_naming_them(change, field):
    # Checked before any connection: the bootstrap address below is never contacted.
    args = {"topics": ["t"], "group_id": "g", **TIMINGS, **change}
    with pytest.raises(ValueError, match=f"^{field}: "):
        group_consumer("127.0.0.1:1", args.pop("topics"), args.pop("group_id"), "c", **args)
