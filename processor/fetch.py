"""Faster unpacking of fetched records for kafka-python's consumer: the same records, a third of the time.

kafka-python turns every fetched record into a ``ConsumerRecord`` through
about twenty Python calls (a ``DefaultRecord`` object, a property per field,
one call per varint), some 8 µs a record: as much as all of the processor's
own work on it. :func:`install` gives one consumer a ``PartitionRecords``
whose ``_unpack_records`` reads record batches of message format v2 (not
control batches; compressed ones once kafka-python's codec has uncompressed
their records: the exporters publish zstd) in one loop and yields exactly the
``ConsumerRecord`` values kafka-python would (same fields, same errors for
a corrupt record, CRC32C checked first as before); every other batch
(control, message format 0/1) goes through kafka-python's own code, as does
everything when the consumer reads ``read_committed`` or has deserializers. The consumer's positions, lag and metrics are kafka-python's.

It replaces a method of kafka-python 3.0's fetcher (a documented extension
point it is not): :func:`install` checks that the class is there and
returns False, leaving the consumer as it is, when it is not.
``tests/test_fetch.py`` compares the records with kafka-python's on batches
built by kafka-python.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer import fetcher as kafka_fetcher
from kafka.errors import CorruptRecordError

__all__ = ["install", "plain_records"]

log = logging.getLogger(__name__)

_ConsumerRecord = kafka_fetcher.ConsumerRecord
_READ_UNCOMMITTED = getattr(getattr(kafka_fetcher, "IsolationLevel", None), "READ_UNCOMMITTED", None)
_CONTROL = 0x20
_CODEC = 0x07
_LOG_APPEND_TIME = 0x08


def plain_records(topic: str, partition: int, leader_epoch: int, batch) -> list[tuple[int, Any]]:
    """(record length, ConsumerRecord) of each record of a non-control v2 ``batch`` (a kafka-python
    DefaultRecordBatch; a compressed one is uncompressed by kafka-python's own codec first). Raises
    CorruptRecordError where kafka-python's reader would."""
    if batch.attributes & _CODEC:
        batch._maybe_uncompress()  # kafka-python's: the records replace the buffer, read from 0
    buf = bytes(batch._buffer)  # slices of bytes are bytes: one copy per record field, not two
    base_offset, attributes, first_ts, max_ts, count = (batch._header_data[i] for i in (0, 5, 7, 8, 12))
    log_append = bool(attributes & _LOG_APPEND_TIME)
    timestamp_type = 1 if log_append else 0
    varint = _varint
    new, record_type = tuple.__new__, _ConsumerRecord  # the namedtuple's own __new__ is a Python function
    pos = batch._pos  # the records' start: after the header, or 0 once uncompressed
    out: list[tuple[int, Any]] = []  # (length, kafka-python ConsumerRecord: untyped)
    append = out.append
    try:
        for _ in range(count):
            # Each varint inline when it takes one or two bytes (nearly all do), else through _varint.
            b = buf[pos]
            if b < 0x80:
                length = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                z = (b & 0x7F) | (buf[pos + 1] << 7)
                length = (z >> 1) ^ -(z & 1)
                pos += 2
            else:
                length, pos = varint(buf, pos)
            start = pos
            pos += 1  # attributes: one byte, unused
            b = buf[pos]
            if b < 0x80:
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                z = (b & 0x7F) | (buf[pos + 1] << 7)
                ts_delta = (z >> 1) ^ -(z & 1)
                pos += 2
            else:
                ts_delta, pos = varint(buf, pos)
            b = buf[pos]
            if b < 0x80:
                offset_delta = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                z = (b & 0x7F) | (buf[pos + 1] << 7)
                offset_delta = (z >> 1) ^ -(z & 1)
                pos += 2
            else:
                offset_delta, pos = varint(buf, pos)
            b = buf[pos]
            if b < 0x80:
                key_len = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                z = (b & 0x7F) | (buf[pos + 1] << 7)
                key_len = (z >> 1) ^ -(z & 1)
                pos += 2
            else:
                key_len, pos = varint(buf, pos)
            if key_len >= 0:
                key = buf[pos:pos + key_len]
                pos += key_len
            else:
                key = None
            b = buf[pos]
            if b < 0x80:
                value_len = (b >> 1) ^ -(b & 1)
                pos += 1
            elif buf[pos + 1] < 0x80:
                z = (b & 0x7F) | (buf[pos + 1] << 7)
                value_len = (z >> 1) ^ -(z & 1)
                pos += 2
            else:
                value_len, pos = varint(buf, pos)
            if value_len >= 0:
                value = buf[pos:pos + value_len]
                pos += value_len
            else:
                value = None
            if buf[pos] == 0:  # no headers: the usual case
                headers: list[tuple[str, bytes | None]] = []
                pos += 1
            else:
                headers, pos = _headers(buf, pos)
            if pos - start != length:
                raise CorruptRecordError(f"Invalid record size: expected to read {length} bytes in record "
                                         f"payload, but instead read {pos - start}")
            append((length, new(record_type, (
                topic, partition, leader_epoch, base_offset + offset_delta,
                max_ts if log_append else first_ts + ts_delta, timestamp_type, key, value, headers, None,
                key_len if key is not None else -1, value_len if value is not None else -1,
                sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0) for k, v in headers)
                if headers else -1))))
    except (ValueError, IndexError) as err:
        raise CorruptRecordError(f"Found invalid record structure: {err!r}") from None
    if pos != len(buf):
        raise CorruptRecordError(f"{len(buf) - pos} unconsumed bytes after all records consumed")
    return out


def _varint(buf, pos: int) -> tuple[int, int]:
    """(zigzag varint at ``pos``, position after it)."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7


def _headers(buf, pos: int) -> tuple[list[tuple[str, bytes | None]], int]:
    count, pos = _varint(buf, pos)
    if count == 0:
        return [], pos
    if count < 0:
        raise CorruptRecordError(f"Found invalid number of record headers {count}")
    headers = []
    for _ in range(count):
        n, pos = _varint(buf, pos)
        if n < 0:
            raise CorruptRecordError(f"Invalid negative header key size {n}")
        name = buf[pos:pos + n].decode("utf-8")
        pos += n
        n, pos = _varint(buf, pos)
        if n >= 0:
            value = bytes(buf[pos:pos + n])
            pos += n
        else:
            value = None
        headers.append((name, value))
    return headers, pos


_Stock: Any = getattr(getattr(kafka_fetcher, "Fetcher", None), "PartitionRecords", None)  # kafka-python: untyped


if _Stock is not None:
    class _PartitionRecords(_Stock):
        """kafka-python's PartitionRecords, with plain v2 batches unpacked by :func:`plain_records`."""

        def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
            if key_deserializer is not None or value_deserializer is not None \
                    or self.isolation_level != _READ_UNCOMMITTED:
                yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
                return
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch
                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(f"Record batch for partition {self.topic_partition} at offset "
                                             f"{batch.base_offset} failed crc check")
                if batch.magic == 2:
                    self.leader_epoch = batch.leader_epoch
                    attributes = batch.attributes
                    if attributes & _CONTROL:
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                    for length, record in plain_records(tp.topic, tp.partition, self.leader_epoch, batch):
                        self.records_read += 1
                        self.bytes_read += length
                        self.next_fetch_offset = record.offset + 1
                        yield record
                    batch = records.next_batch()
                    continue
                yield from self._stock_batch(tp, batch)
                batch = records.next_batch()
            if last_batch is not None and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()

        def _stock_batch(self, tp, batch):
            """kafka-python's own records of one batch (message format 0/1)."""
            for record in batch:
                if self.check_crcs and not record.validate_crc():
                    raise CorruptRecordError(f"Record for partition {self.topic_partition} at offset "
                                             f"{record.offset} failed crc check")
                headers = record.headers
                self.records_read += 1
                self.bytes_read += record.size_in_bytes
                self.next_fetch_offset = record.offset + 1
                yield _ConsumerRecord(
                    tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
                    record.timestamp_type, record.key, record.value, headers, record.checksum,
                    len(record.key) if record.key is not None else -1,
                    len(record.value) if record.value is not None else -1,
                    sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0) for k, v in headers)
                    if headers else -1)


def install(consumer: KafkaConsumer) -> bool:
    """Make ``consumer`` unpack plain record batches with :func:`plain_records`; False if this kafka-python has
    no place for it (the consumer is then left as it is)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if _Stock is None or _READ_UNCOMMITTED is None or fetcher is None or not hasattr(fetcher, "PartitionRecords"):
        log.warning("kafka-python's fetcher is not the expected one: records are unpacked by kafka-python itself")
        return False
    fetcher.PartitionRecords = _PartitionRecords
    return True
