"""The batch publisher (srv6pm.publish) against kafka-python's record reader and the real broker (Tansu)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition
from kafka.record.default_records import DefaultRecordBatch

from srv6pm.kafka import ensure_topics
from srv6pm.publish import CODECS, Publisher, Send, encode_batch


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=300)), st.binary(max_size=20000)),
                min_size=1, max_size=40),
       st.integers(min_value=0, max_value=2**41))
def test_a_batch_reads_back_with_kafka_pythons_reader(records, timestamp_ms):
    batch = DefaultRecordBatch(encode_batch(records, timestamp_ms))
    assert batch.validate_crc()
    assert (batch.magic, batch.compression_type, batch.records_count) == (2, 0, len(records))
    got = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch]
    assert got == [(i, timestamp_ms, k, v, []) for i, (k, v) in enumerate(records)]


# gzip is in the standard library and zstd (zstandard) a dependency: the codecs srv6pm installs.
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_compressed_batch_reads_back_with_kafka_pythons_reader(codec):
    records = [(b"f%d" % i, b'{"flow":"f%d","packets":%d}' % (i, i * 7)) for i in range(500)] + [(None, b"")]
    raw = encode_batch(records, 1234)
    batch = DefaultRecordBatch(encode_batch(records, 1234, codec))
    assert batch.validate_crc()
    assert (batch.compression_type, batch.records_count) == (CODECS[codec][0], len(records))
    assert len(batch._buffer) < len(raw) / 2
    assert [(r.offset, r.timestamp, r.key, r.value) for r in batch] == [
        (i, 1234, k, v) for i, (k, v) in enumerate(records)]


@pytest.mark.parametrize("last", [(b"k", b"v"), (b"k", b"w"), (None, b"no key"), (b"k", b"x" * 20000), (b"k" * 16384, b"v")])
def test_a_guard_sized_batch_reads_back_with_kafka_pythons_reader(last):
    # a guard's chunk of keyed records, and the same with a last record that has no key, a long key or value,
    # or an offset past the precomputed pieces
    count = 20000 if last == (b"k", b"v") else 16000
    records = [(b"f%d" % i, b'{"flow":"f%d","packets":%d}' % (i, i * 7) * (1 + i % 90)) for i in range(count)]
    records.append(last)
    batch = DefaultRecordBatch(encode_batch(records, 99, "zstd"))
    assert batch.validate_crc()
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch] == [
        (i, 99, k, v, []) for i, (k, v) in enumerate(records)]


def test_an_unknown_or_unavailable_codec_is_refused_before_connecting():
    with pytest.raises(ValueError, match="unknown compression 'brotli'"):
        Publisher({"bootstrap_servers": "127.0.0.1:1"}, "test", compression="brotli")


@pytest.mark.services
def test_zstd_batches_go_through_the_broker_to_a_kafka_python_consumer(fresh_broker):
    ensure_topics(fresh_broker, {"t.zstd": 2})
    publisher = Publisher({"bootstrap_servers": fresh_broker}, "test-publisher", max_batch_bytes=4000,
                          compression="zstd")
    try:
        sends = [Send("t.zstd", i % 2, b"k%d" % i, b"v%d-" % i + b"x" * 100) for i in range(200)]
        assert publisher.publish(sends) == []
    finally:
        publisher.close()
    got = read_all(fresh_broker, "t.zstd", [0, 1], 200)
    for p in range(2):
        assert [(k, v) for q, k, v in got if q == p] == [(s.key, s.value) for s in sends if s.partition == p]


def read_all(bootstrap, topic, partitions, count, timeout_s=20):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        for tp, messages in consumer.poll(timeout_ms=300).items():
            got += [(tp.partition, m.key, m.value) for m in messages]
    consumer.close()
    return got


@pytest.mark.services
def test_records_are_appended_in_order_per_partition_across_several_batches(fresh_broker):
    ensure_topics(fresh_broker, {"t.out": 3, "t.letters": 2})
    publisher = Publisher({"bootstrap_servers": fresh_broker}, "test-publisher", max_batch_bytes=2000)
    try:
        sends = [Send("t.out", i % 3, b"k%d" % i, b"v%d-" % i + b"x" * 100) for i in range(300)]
        sends += [Send("t.letters", None, b"flow-a", b"keyed"), Send("t.letters", None, None, b"unkeyed")]
        assert publisher.publish(sends) == []
        assert publisher.publish([Send("t.out", 1, None, b"after")]) == []
    finally:
        publisher.close()
    got = read_all(fresh_broker, "t.out", [0, 1, 2], 301)
    for p in range(3):  # 100 records of about 110 bytes per partition: six batches of 2000 bytes or less each
        want = [(s.key, s.value) for s in sends[:300] if s.partition == p] + ([(None, b"after")] if p == 1 else [])
        assert [(k, v) for q, k, v in got if q == p] == want
    letters = read_all(fresh_broker, "t.letters", [0, 1], 2)
    assert sorted(v for _, _, v in letters) == [b"keyed", b"unkeyed"]


@pytest.mark.services
def test_a_send_the_broker_refuses_comes_back_with_its_error_and_the_others_go_through(fresh_broker):
    ensure_topics(fresh_broker, {"t.out": 2})
    publisher = Publisher({"bootstrap_servers": fresh_broker}, "test-publisher")
    try:
        bad = Send("t.out", 7, b"k", b"no such partition")
        failed = publisher.publish([Send("t.out", 0, b"k", b"fine"), bad, Send("t.out", 1, None, b"also fine")])
    finally:
        publisher.close()
    assert [send for send, _ in failed] == [bad]
    assert isinstance(failed[0][1], Exception)
    assert sorted(v for _, _, v in read_all(fresh_broker, "t.out", [0, 1], 2)) == [b"also fine", b"fine"]


@pytest.mark.services
def test_the_same_keys_again_go_to_the_same_partitions_in_order_with_the_kept_grouping(fresh_broker):
    """A large call's grouping by key is kept and reused by the next call with the same keys in the same order
    (the exporter's guards); other keys or another order are grouped anew. Each record lands where Kafka's
    default partitioner puts its key, in the order given."""
    from kafka.partitioner.default import murmur2
    ensure_topics(fresh_broker, {"t.keys": 3})
    keys = [b"flow-%d" % i for i in range(1500)]
    calls = [keys, keys, keys[::-1], keys[:-1] + [b"other"], keys[:-1] + [b"other"]]
    publisher = Publisher({"bootstrap_servers": fresh_broker}, "test-publisher", compression="zstd")
    try:
        for n, call in enumerate(calls):
            assert publisher.publish([Send("t.keys", None, k, b"%d:" % n + k) for k in call]) == []
            assert publisher._grouping is not None and publisher._grouping[2] == call
    finally:
        publisher.close()
    got = read_all(fresh_broker, "t.keys", [0, 1, 2], sum(map(len, calls)))
    for p in range(3):
        want = [(k, b"%d:" % n + k) for n, call in enumerate(calls) for k in call if (murmur2(k) & 0x7FFFFFFF) % 3 == p]
        assert [(k, v) for q, k, v in got if q == p] == want
