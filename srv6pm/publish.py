"""Publishing many records at once: one record batch per partition, acknowledged by every in-sync replica.

kafka-python's producer spends about 20 µs of Python on every ``send`` (its
accumulator, a future per record, the partitioner), more than the rest of
the processor's work on a result. The processor always publishes a whole
loop iteration's records and then waits for all of them, so
:class:`Publisher` does exactly that and no more: it encodes each
partition's records as one Kafka record batch (message format v2, CRC32C
over the batch; uncompressed, or compressed with one of :data:`CODECS`, as
kafka-python's producer would, which its consumer reads), sends one produce request per leader
with ``acks=all`` (-1), and returns the records that were not acknowledged,
with the error. It uses kafka-python's connection manager (bootstrap,
metadata, TLS, SASL are kafka-python's), only not its producer.

Contract of :meth:`Publisher.publish`: records of one partition are appended
in the order given; the call returns when each record is either acknowledged
or listed as failed; of one partition's records, those acknowledged come
before those failed (a failed batch stops the partition's later ones).
:attr:`Publisher.ends` holds, per partition written, the offset after the
last batch acknowledged (a lower bound of where later records will land). A failed record may still have been written (a lost
response); the processor's re-publication of failures is at least once, as
with any producer's retries. Records larger than one batch's limit are sent
one to a batch (a record that alone exceeds the broker's limit fails with
the broker's error).
"""

from __future__ import annotations

import random
import struct
import threading
import time
from bisect import bisect_right
from collections import defaultdict
from itertools import accumulate, repeat
from operator import add, itemgetter
from typing import Iterable, NamedTuple, cast

from crc32c import crc32c
from kafka import codec as kafka_codec
from kafka import errors as kafka_errors
from kafka.net.compat import KafkaNetClient
from kafka.partitioner.default import murmur2
from kafka.protocol.producer import ProduceRequest
from kafka.structs import TopicPartition

__all__ = ["Publisher", "Send", "encode_batch"]

MAX_BATCH_BYTES = 512 * 1024  # well under the broker's default message.max.bytes (1 MiB)
COMPRESSED_CHUNK = 4  # a compressed batch holds up to 4 * MAX_BATCH_BYTES of records (fewer round trips)
_KEYS_KEPT = 1_000_000  # keys whose partition is remembered (murmur2 is pure Python: ~6 µs a key)
_GROUP_AT = 1000  # a publish of this many records by key (one topic) keeps its grouping for the next (_keep_grouping)

# Record batch header (KIP-98), offsets as in the Kafka protocol guide.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_FROM = 21  # the CRC covers attributes .. end
_NO_PRODUCER = (-1, -1, -1)  # producer id, epoch, base sequence: not idempotent

ZSTD_LEVEL = 1  # zstd's fastest positive level; counters records come out about 12 % larger than at level 3
_zstd = threading.local()  # each thread's compressor, made once (a compressor is not for two threads at once)


def _zstd_encode(payload: bytes) -> bytes:
    """A zstd frame of ``payload``, as kafka-python's own codec makes (its consumer reads it), with one compressor
    per thread kept (kafka-python makes one per batch) at :data:`ZSTD_LEVEL`."""
    compressor = getattr(_zstd, "compressor", None)
    if compressor is None:
        import zstandard
        compressor = _zstd.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return compressor.compress(payload)


# Compression codecs of a record batch: name -> (the attributes' codec bits, compress, is its library there).
# kafka-python's own codec functions (zstd: the same with its compressor kept), so a batch is compressed as its
# producer would (and its consumer reads).
CODECS = {
    "gzip": (1, kafka_codec.gzip_encode, kafka_codec.has_gzip),
    "snappy": (2, kafka_codec.snappy_encode, kafka_codec.has_snappy),
    "lz4": (3, kafka_codec.lz4_encode, kafka_codec.has_lz4),
    "zstd": (4, _zstd_encode, kafka_codec.has_zstd),
}


class Send(NamedTuple):
    """One record to publish. ``partition`` None: by key (murmur2, as Kafka's clients), any when no key."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes


def _varint(n: int) -> bytes:
    """Zigzag varint (the record fields' encoding)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_KEY_VALUE = itemgetter(2, 3)  # a Send's (key, value)
_TOPIC, _PARTITION, _KEY, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
_SMALL = [_varint(n) for n in range(16384)]
_NULL = _varint(-1)
_HEADS = [b"\x00\x00" + v for v in _SMALL]  # a record's attributes (0), timestamp delta (0) and offset delta


def _v(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 16384 else _varint(n)


def encode_batch(keys_values: Iterable[tuple[bytes | None, bytes]], timestamp_ms: int, compression: str | None = None) -> bytes:
    """One record batch (magic 2) of the (key, value) records, all with timestamp ``timestamp_ms``;
    ``compression`` (a name of :data:`CODECS`) compresses its records.

    A record is framed from precomputed pieces (its attributes, timestamp and offset deltas for the first
    :data:`_SMALL` offsets, the varints of small lengths) and the records joined once: no copy of a value
    but the join's."""
    parts: list[bytes] = []
    extend = parts.extend
    heads, small, null = _HEADS, _SMALL, _NULL
    offset = -1  # the last record's (none: -1)
    for offset, (key, value) in enumerate(keys_values):
        head = heads[offset] if offset < 16384 else b"\x00\x00" + _varint(offset)  # attributes, deltas
        n = len(value)
        value_length = small[n] if n < 16384 else _varint(n)
        if key is None:
            size = len(head) + 1 + len(value_length) + n + 1
            extend((_v(size), head, null, value_length, value, b"\x00"))  # no headers
        else:
            k = len(key)
            key_length = small[k] if k < 16384 else _varint(k)
            size = len(head) + len(key_length) + k + len(value_length) + n + 1
            extend((small[size] if size < 16384 else _varint(size), head, key_length, key, value_length, value,
                    b"\x00"))
    records = b"".join(parts)
    attributes = 0
    if compression is not None:
        attributes, compress, _ = CODECS[compression]
        records = compress(records)
    count = offset + 1
    header = _HEADER.pack(0, _HEADER.size - 12 + len(records), -1, 2, 0, attributes, count - 1, timestamp_ms, timestamp_ms,
                          *_NO_PRODUCER, count)
    batch = bytearray(header)
    batch += records
    struct.pack_into(">I", batch, 17, crc32c(memoryview(batch)[_CRC_FROM:]))
    return bytes(batch)


class Publisher:
    """Publishes lists of :class:`Send` (see the module docstring for the contract). Not thread-safe."""

    def __init__(self, client_options: dict, client_id: str, *, request_timeout_ms: int = 30_000,
                 max_batch_bytes: int = MAX_BATCH_BYTES, compression: str | None = None):
        if compression is not None:
            if compression not in CODECS:
                raise ValueError(f"unknown compression {compression!r}: one of {', '.join(CODECS)} or None")
            if not CODECS[compression][2]():
                raise ValueError(f"compression {compression!r} needs its Python library, which is not installed")
        self.compression = compression
        # Records per batch, by their uncompressed size: compressed, a batch of COMPRESSED_CHUNK times as many
        # bytes is still under max_batch_bytes unless its records compress less than that (JSON: 5-50 times).
        self.chunk_bytes = max_batch_bytes * (COMPRESSED_CHUNK if compression is not None else 1)
        options = {k: v for k, v in client_options.items()}
        options.update(client_id=client_id, request_timeout_ms=request_timeout_ms)
        self.request_timeout_ms = request_timeout_ms
        self.max_batch_bytes = max_batch_bytes
        self._client = KafkaNetClient(**options)
        self._manager = self._client._manager
        self._net = self._manager._net
        self._net.start()
        try:
            self._manager.bootstrap(request_timeout_ms)
        except BaseException:
            self.close()
            raise
        self._cluster = self._manager.cluster
        self.ends: dict[TopicPartition, int] = {}  # partition -> offset after the last batch acknowledged
        self._by_key: dict[str, dict[bytes, tuple[int, int]]] = defaultdict(dict)  # topic -> key -> (count, p)
        # the last large call's grouping: (topic, its partitions, the keys in order, partition -> pick, partition ->
        # its records' key lengths + 16)
        self._grouping: tuple[str, list[int], list[bytes], dict[TopicPartition, itemgetter | int],
                              dict[TopicPartition, list[int]]] | None = None

    def publish(self, sends: list[Send]) -> list[tuple[Send, Exception]]:
        """Publish ``sends``; returns those not acknowledged, each with its error (see the module docstring)."""
        if not sends:
            return []
        topics = sorted(set(map(_TOPIC, sends)))
        self._net.run(self._known, topics)
        failed: list[tuple[Send, Exception]] = []
        partitions = {t: sorted(self._cluster.partitions_for_topic(t) or ()) for t in topics}
        grouped = self._grouped(sends, topics, partitions)
        if grouped is not None:
            return self._send_rounds(grouped, failed, cast(tuple, self._grouping)[4])  # set: it grouped them
        per_partition: dict[TopicPartition, list[Send]] = defaultdict(list)
        known = {t: (len(partitions[t]), self._by_key[t]) for t in topics}  # the keys' partitions remembered
        lists: dict[tuple[str, int], list[Send]] = {}  # (topic, partition) -> its sends
        for send in sends:
            topic, p, key = send[0], send[1], send[2]
            if p is None:  # by key: a remembered key's partition inline (the common case), else _partition
                n, by_key = known[topic]
                cached = by_key.get(key) if key is not None else None
                if cached is not None and cached[0] == n:
                    p = cached[1]
                else:
                    try:
                        p = self._partition(send, partitions[topic])
                    except kafka_errors.KafkaError as exc:
                        failed.append((send, exc))
                        continue
            at = (topic, p)
            bucket = lists.get(at)
            if bucket is None:
                bucket = lists[at] = per_partition[TopicPartition(topic, p)]
            bucket.append(send)
        if not failed:
            self._keep_grouping(sends, topics, partitions)
        return self._send_rounds(per_partition, failed)

    def _send_rounds(self, per_partition: dict[TopicPartition, list[Send]], failed: list[tuple[Send, Exception]],
                     key_sizes: dict[TopicPartition, list[int]] | None = None) -> list[tuple[Send, Exception]]:
        """Send each partition's records, in rounds of one chunk per partition (``key_sizes``: as for
        :meth:`_rounds`); ``failed`` and those not acknowledged."""
        broken: dict[TopicPartition, Exception] = {}  # a partition whose chunk failed sends no later chunk
        for chunks in self._rounds(per_partition, key_sizes):
            for tp in [tp for tp in chunks if tp in broken]:
                failed += [(s, broken[tp]) for s in chunks.pop(tp)]
            for send, error in self._net.run(self._send_round, chunks):
                broken.setdefault(TopicPartition(send.topic, self._partition(send)), error)
                failed.append((send, error))
        return failed

    def close(self) -> None:
        try:
            self._client.close()
        finally:
            self._net.stop()

    # -- internals -----------------------------------------------------------

    def _partition(self, send: Send, partitions: list[int] | None = None) -> int:
        """``send``'s partition; ``partitions``: its topic's, sorted (None: looked up). A key's is remembered."""
        if send.partition is not None:
            return send.partition
        if partitions is None:
            partitions = sorted(self._cluster.partitions_for_topic(send.topic) or ())
        if not partitions:
            raise kafka_errors.UnknownTopicOrPartitionError(send.topic)
        if send.key is None:
            return random.choice(partitions)
        n = len(partitions)
        known = self._by_key[send.topic]
        cached = known.get(send.key)
        if cached is not None and cached[0] == n:
            return cached[1]
        partition = partitions[(murmur2(send.key) & 0x7FFFFFFF) % n]
        if len(known) >= _KEYS_KEPT:
            known.clear()
        known[send.key] = (n, partition)
        return partition

    def _grouped(self, sends: list[Send], topics: list[str],
                 partitions: dict[str, list[int]]) -> dict[TopicPartition, list[Send]] | None:
        """``sends`` by partition from the grouping kept by :meth:`_keep_grouping`, if it is theirs (one topic, by
        key, the same keys in the same order, the same partitions), else None."""
        kept = self._grouping
        if kept is None or topics != [kept[0]] or partitions[kept[0]] != kept[1]:
            return None
        keys = list(map(_KEY, sends))
        if keys != kept[2] or set(map(_PARTITION, sends)) != {None}:
            return None
        return {tp: [sends[pick]] if isinstance(pick, int) else list(pick(sends)) for tp, pick in kept[3].items()}

    def _keep_grouping(self, sends: list[Send], topics: list[str], partitions: dict[str, list[int]]) -> None:
        """Keep how ``sends`` (all by key, of one topic; each key's partition remembered) go to partitions, for the
        next call with the same keys in the same order.

        The exporter publishes the same keys in the same order every period (100,000 at a guard): the next
        call then groups its records with one C-level pick per partition (:meth:`_grouped`) instead of a
        loop over them that looks up each key's partition."""
        self._grouping = None
        if len(topics) != 1 or len(sends) < _GROUP_AT:
            return
        keys = list(map(_KEY, sends))
        if None in keys or set(map(_PARTITION, sends)) != {None}:
            return
        topic = topics[0]
        n, by_key = len(partitions[topic]), self._by_key[topic]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            cached = by_key.get(key)
            if cached is None or cached[0] != n:
                return  # (the remembered keys were cleared meanwhile)
            groups[cached[1]].append(i)
        self._grouping = (topic, partitions[topic], keys, {
            TopicPartition(topic, p): indices[0] if len(indices) == 1 else itemgetter(*indices)
            for p, indices in groups.items()}, {
            TopicPartition(topic, p): [len(keys[i]) + 16 for i in indices] for p, indices in groups.items()})

    def _rounds(self, per_partition: dict[TopicPartition, list[Send]],
                key_sizes: dict[TopicPartition, list[int]] | None = None) -> list[dict[TopicPartition, list[Send]]]:
        """Chunks of at most :attr:`chunk_bytes` per partition; round r holds the r-th chunk of every partition.
        ``key_sizes``: per partition, each record's key length + 16, when known (the kept grouping's)."""
        rounds: list[dict[TopicPartition, list[Send]]] = []
        limit = self.chunk_bytes
        for tp, sends in per_partition.items():
            sizes: Iterable[int]
            known = key_sizes.get(tp) if key_sizes is not None else None
            keys = [] if known is not None else list(map(_KEY, sends))
            if known is not None:  # a record's size as below, the keys' part kept
                sizes = map(add, map(len, map(_VALUE, sends)), known)
            elif None in keys:
                sizes = (len(s.value) + len(s.key or b"") + 16 for s in sends)  # a record's ~size
            else:  # the same sizes, summed in C
                sizes = map(add, map(add, map(len, map(_VALUE, sends)), map(len, keys)), repeat(16))
            ends = list(accumulate(sizes))
            start, base, r = 0, 0, 0
            while start < len(sends):
                end = max(start + 1, bisect_right(ends, base + limit, start))  # a record alone may be larger
                if r == len(rounds):
                    rounds.append({})
                rounds[r][tp] = sends[start:end]
                start, base, r = end, ends[end - 1], r + 1
        return rounds

    async def _known(self, topics: list[str]) -> None:
        """Metadata of ``topics`` is there (fetched once, and again after a leader error)."""
        missing = [t for t in topics if t not in self._cluster.topics()]
        for topic in missing:
            self._cluster.add_topic(topic)
        if missing or self._cluster.need_update:
            try:
                await self._cluster.refresh_metadata()
            except kafka_errors.KafkaError:
                pass  # the sends to partitions without a leader fail below, with that error

    async def _send_round(self, chunks: dict[TopicPartition, list[Send]]) -> list[tuple[Send, Exception]]:
        failed: list[tuple[Send, Exception]] = []
        by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
        for tp in chunks:
            leader = self._cluster.leader_for_partition(tp)
            if leader is None or leader < 0:
                self._cluster.request_update()
                failed += [(s, kafka_errors.LeaderNotAvailableError(str(tp))) for s in chunks[tp]]
            else:
                by_leader[leader].append(tp)
        now_ms = int(time.time() * 1000)
        futures = []
        for leader, tps in by_leader.items():
            request = _produce_request(
                {tp: encode_batch(map(_KEY_VALUE, chunks[tp]), now_ms, self.compression) for tp in tps},
                self.request_timeout_ms)
            futures.append((tps, self._manager.send(request, node_id=leader, request_timeout_ms=self.request_timeout_ms)))
        for tps, future in futures:
            try:
                response = await future
            except Exception as exc:  # connection lost, timeout: nothing of this request is known to be written
                failed += [(s, exc) for tp in tps for s in chunks[tp]]
                continue
            for topic in response.responses:
                for part in topic.partition_responses:
                    if part.error_code:
                        error = kafka_errors.for_code(part.error_code)(part.error_message or "")
                        if getattr(error, "invalid_metadata", False):
                            self._cluster.request_update()
                        failed += [(s, error) for s in chunks[TopicPartition(topic.name, part.index)]]
                    else:
                        tp = TopicPartition(topic.name, part.index)
                        self.ends[tp] = part.base_offset + len(chunks[tp])
        return failed


def _produce_request(batches: dict[TopicPartition, bytes], timeout_ms: int) -> ProduceRequest:
    topic_cls = ProduceRequest.TopicProduceData
    partition_cls = topic_cls.PartitionProduceData
    topics: dict[str, list] = defaultdict(list)
    for tp, batch in batches.items():
        topics[tp.topic].append(partition_cls(index=tp.partition, records=batch))
    return ProduceRequest(transactional_id=None, acks=-1, timeout_ms=timeout_ms,
                          topic_data=[topic_cls(name=name, partition_data=parts) for name, parts in topics.items()],
                          min_version=3, max_version=9)
