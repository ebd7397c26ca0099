"""The processor's record unpacking (processor/fetch.py) against kafka-python's own, on batches kafka-python builds."""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from srv6pm.processor import fetch

TP = TopicPartition("t", 3)

record = st.tuples(
    st.integers(min_value=0, max_value=10**6),  # timestamp delta
    st.one_of(st.none(), st.binary(max_size=200)),  # key
    st.one_of(st.none(), st.binary(max_size=3000)),  # value
    st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=5))), max_size=2),  # headers
)
batch = st.tuples(st.sampled_from([0, 0, 0, 1, 4]),  # compression: none, gzip or zstd (what the exporters publish)
                  st.lists(record, min_size=1, max_size=30),
                  st.booleans())  # log-append time (the broker's timestamps) instead of create time


def build(batches, base_offset=100, base_ts=1_700_000_000_000):
    out = b""
    offset = base_offset
    for codec, recs, log_append in batches:
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                            producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=2**24)
        for i, (delta, key, value, headers) in enumerate(recs):
            builder.append(i, timestamp=base_ts + delta, key=key, value=value, headers=headers)
        data = bytearray(builder.build())
        struct.pack_into(">q", data, 0, offset)
        if log_append:
            struct.pack_into(">h", data, 21, struct.unpack_from(">h", data, 21)[0] | 0x08)
            struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
        offset += len(recs)
        out += bytes(data)
    return out


def unpack(cls, data, fetch_offset=100, take=None):
    """The records ``cls`` gives, ``take`` at a time, with its position and counts after each take."""
    parts = cls(fetch_offset, TP, MemoryRecords(data))
    got = []
    while parts:
        chunk = parts.take(take)
        got.append((chunk, parts.next_fetch_offset, parts.records_read, parts.bytes_read))
        if not chunk:
            break
    return got, parts.next_fetch_offset, parts.records_read, parts.bytes_read, bool(parts)


@settings(max_examples=150, deadline=None)
@given(st.lists(batch, min_size=1, max_size=4), st.sampled_from([None, 1, 7]), st.integers(0, 5))
def test_records_are_kafka_pythons(batches, take, skip):
    data = build(batches)
    assert unpack(fetch._PartitionRecords, data, 100 + skip, take) == unpack(Fetcher.PartitionRecords, data,
                                                                             100 + skip, take)


def test_a_batch_with_a_bad_crc_is_refused_as_by_kafka_python():
    data = bytearray(build([(0, [(0, b"k", b"v", [])], False)]))
    data[-1] ^= 0xFF
    for cls in (fetch._PartitionRecords, Fetcher.PartitionRecords):
        with pytest.raises(CorruptRecordError, match="crc"):
            unpack(cls, bytes(data))


def test_install_gives_the_consumer_the_fast_unpacking(broker):
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(bootstrap_servers=broker, group_id=None)
    try:
        assert fetch.install(consumer)
        assert consumer._fetcher.PartitionRecords is fetch._PartitionRecords
    finally:
        consumer.close()
