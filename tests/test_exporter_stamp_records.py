"""The exporter's srv6pm.stamp records with the RFC 8972 settings: a real sender and socket reflector on
loopback (node-exporter/probes.py), a real Kafka-protocol broker, records checked against the schema."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer

from srv6pm import records
from srv6pm.exporter.probes import Probes
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb


def _records(broker: str, key: bytes, count: int, timeout: float = 20.0) -> list[dict]:
    consumer = KafkaConsumer(records.STAMP, bootstrap_servers=broker, auto_offset_reset="earliest")
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                got.extend(records.decode_stamp(m.value).to_dict() for m in batch if m.key == key)
    finally:
        consumer.close()
    assert len(got) >= count, f"got {len(got)} of {count} records within {timeout} s"
    return got


def test_records_carry_counters_dscp_and_honest_timestamp_kinds(broker, free_port):
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    probes = Probes("r1", 1.0, producer, reflector_backend="socket")
    port = free_port()
    name = f"s-{uuid.uuid4().hex[:8]}"
    try:
        probes.start_reflector(validate.stamp_reflector(pb.StampReflector(bind="::1", port=port)))
        probes.start_session(validate.stamp_session(pb.StampSession(
            name=name, destination="::1", port=port, rate=50, reflector_node="r4", direct_measurement=True,
            dscp=10, ssid=7)))
        got = _records(broker, name.encode(), 5)
    finally:
        probes.stop()
        producer.close()
    replies = [r for r in got if not r["lost"]]
    assert replies
    for r in replies:
        assert r["timestamps"]["t2"] == r["timestamps"]["t3"] == "remote"  # the sender cannot know how
        assert r["sender_tx"] == r["reflector_rx"] == r["reflector_tx"] == r["seq"] + 1  # nothing lost here
        assert (r["dscp"], r["dscp_at_reflector"], r["dscp_remarked"]) == (10, 10, False)
        assert (r["reply_dscp"], r["reply_dscp_remarked"]) == (10, False)
        assert "impossible_timestamps" not in r
