"""Reading back what is on the broker, so a record whose publication is in doubt is not published twice.

A produce request that timed out may still have been written by the broker
(a broker that was stopped answers it when it runs again). Before the
exporter publishes such records again it reads the partitions they go to
from a *floor*, an offset below which none of them can be (the log end seen
before they were first sent), and leaves out every record already there.
Records are told apart by their bytes: every srv6pm record names its node
and its flow and period, or its STAMP session and sequence number, so two
different records never have the same (topic, key, value).

Both functions use a plain kafka-python consumer without a group (nothing is
committed) and raise ``kafka.errors.KafkaError`` when the broker cannot be
read within the timeout.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

__all__ = ["latest_offsets", "written_since"]


def _consumer(client_options: dict, timeout_ms: int) -> KafkaConsumer:
    return KafkaConsumer(**client_options, group_id=None, enable_auto_commit=False, request_timeout_ms=timeout_ms,
                         bootstrap_timeout_ms=timeout_ms)


def latest_offsets(client_options: dict, topics: list[str], timeout_ms: int) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``topics`` (a lower bound of where the next records will land)."""
    consumer = _consumer(client_options, timeout_ms)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return dict(consumer.end_offsets(tps)) if tps else {}
    finally:
        consumer.close()


def written_since(client_options: dict, floors: dict[TopicPartition, int],
                  timeout_ms: int) -> set[tuple[str, bytes | None, bytes]]:
    """(topic, key, value) of every record on each partition of ``floors`` from its floor to its end."""
    if not floors:
        return set()
    consumer = _consumer(client_options, timeout_ms)
    try:
        tps = list(floors)
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, floors[tp])
        seen: set[tuple[str, bytes | None, bytes]] = set()
        remaining = {tp for tp in tps if ends.get(tp, 0) > floors[tp]}
        deadline = time.monotonic() + timeout_ms / 1000
        while remaining:
            for tp, messages in consumer.poll(timeout_ms=200).items():
                seen.update((tp.topic, m.key, m.value) for m in messages)
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
            if remaining and time.monotonic() > deadline:
                raise KafkaTimeoutError(f"reading back {sorted(map(str, remaining))} took over {timeout_ms} ms")
        return seen
    finally:
        consumer.close()
