"""The ledger of published results: what makes a restart neither lose nor double.

Offsets are committed only after results are stored and published, so after a
crash the consumer re-reads records whose results may already be out. Before
publishing, the processor asks the ledger whether ``(flow, period)`` already
has a result; if so it does not publish again, but re-writes the ledger's copy
to InfluxDB (idempotent). Results are stored before they are published
(``writer``), so a published result is also stored; one stored but not
published (a crash between the two) is not in the ledger, is made again from
the re-read records and published once.

The ledger's truth is the result topic itself. A result is published to the
same partition number as the records it came from (both topics are keyed by
flow and have the same partition count), so when this processor is assigned
counters partition ``p`` it reads the tail of result partition ``p`` — the
results published by whoever owned ``p`` before — and from then on records
its own publications. Only the tail is needed: a record is re-read only if it
was unfinished (or finished but not yet committed) at the crash or the
rebalance, and such records are at most one pairing wait and one loop
iteration old, so their results are among the last ones published to ``p``.
``tail_records`` bounds that read and the memory kept per partition; it must
exceed the number of results a partition receives during one pairing wait.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import msgspec
from kafka import KafkaConsumer, TopicPartition

from srv6pm import decode
from srv6pm.records import RecordError

__all__ = ["Ledger", "read_tail"]

log = logging.getLogger(__name__)

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_EMPTY: Mapping = MappingProxyType({})

Held = bytes | tuple[bytes, ...]  # what the ledger holds for one (subject, period)


class Ledger:
    """Published results per partition, keyed by (subject, period).

    ``subject_field`` names the result field that holds the subject (``flow``
    for loss, ``session`` for delay). Several results may share a key (the
    three directions of a delay period); they are kept together. Each is kept
    as its JSON record: tens of thousands of dicts would cost the garbage
    collector a walk over all of them at every full collection.
    """

    def __init__(self, topic: str, subject_field: str, tail_records: int = 50_000):
        if tail_records < 1:
            raise ValueError("tail_records must be at least 1")
        self.topic = topic
        self.subject_field = subject_field
        self.tail_records = tail_records
        # (subject, period) -> its JSON record, or a tuple of them when several share the key (no container
        # per result: the garbage collector never walks them)
        self._parts: dict[int, OrderedDict[tuple[str, int], Held]] = {}

    def get(self, partition: int, subject: str, period: int) -> list[dict] | None:
        """The published results of (subject, period) on ``partition``, if any."""
        part = self._parts.get(partition)
        held = None if part is None else part.get((subject, period))
        return None if held is None else self.decoded(held)

    def add(self, partition: int, result: dict, value: bytes | None = None) -> None:
        """Remember ``result``; ``value`` is its JSON record when the caller has it already."""
        self.add_all(partition, [(result[self.subject_field], result["period"])],
                     [value if value is not None else _encode(result)])

    def add_all(self, partition: int, keys: list[tuple[str, int]], values: list[bytes]) -> None:
        """:meth:`add` of each result's JSON record of ``values``, its (subject, period) in ``keys``.

        When none of the keys is held yet (nor twice among them: the usual batch of loss results), in one
        update; the oldest are then let go as :meth:`add` would have, one at a time.
        """
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = OrderedDict()
        if part.keys().isdisjoint(keys) and len(set(keys)) == len(keys):
            part.update(zip(keys, values, strict=True))
            pop = part.popitem
            for _ in range(len(part) - self.tail_records):
                pop(last=False)
            return
        for key, value in zip(keys, values, strict=True):
            held = part.get(key)
            if held is None:
                part[key] = value
                if len(part) > self.tail_records:
                    part.popitem(last=False)
            else:
                part[key] = (held, value) if type(held) is bytes else (*held, value)

    def partition(self, partition: int) -> Mapping[tuple[str, int], Held]:
        """The published results of ``partition``: (subject, period) -> their JSON records (see :meth:`decoded`;
        do not change it)."""
        return self._parts.get(partition) or _EMPTY

    @staticmethod
    def decoded(held: Held) -> list[dict]:
        """The results of what :meth:`partition` holds for one key."""
        if isinstance(held, bytes):
            return [_decode(held)]
        return [_decode(value) for value in held]

    def forget(self, partitions) -> None:
        for p in partitions:
            self._parts.pop(p, None)

    def load(self, consumer: KafkaConsumer, partitions: list[int], timeout_s: float = 30.0,
             idle_s: float = 0.5) -> int:
        """Read the tail of the result topic's ``partitions`` (see :func:`read_tail`).

        Returns the number of results loaded. Raises TimeoutError if the tail
        cannot be read in time: processing without the ledger could double results.
        """
        for p in partitions:
            self._parts[p] = OrderedDict()
        loaded = 0
        for partition, result in read_tail(consumer, self.topic, partitions, self.tail_records, timeout_s, idle_s):
            self.add(partition, result.to_dict())
            loaded += 1
        return loaded


def read_tail(consumer: KafkaConsumer, topic: str, partitions: list[int], tail_records: int,
              timeout_s: float = 30.0, idle_s: float = 0.5) -> Iterator[tuple[int, Any]]:
    """Yield (partition, record) for the last ``tail_records`` records of each of ``partitions``.

    The records are those of ``topic`` (:func:`srv6pm.decode.decode`: a
    :class:`~srv6pm.records.LossResult`, :class:`~srv6pm.records.DelayResult`
    or :class:`~srv6pm.records.Alarm`).

    Reads with ``consumer`` (no group; assigned here, unassigned at the end)
    from ``tail_records`` before the reported end until the partitions have
    been idle for ``idle_s`` past that end. (The end is only a hint: some
    Kafka-compatible brokers report the start of the last batch as the end
    offset, so records beyond it are read too.) A record that is not a JSON
    object is logged and skipped. Raises TimeoutError if the tail cannot be
    read within ``timeout_s``.
    """
    if not partitions or consumer.partitions_for_topic(topic) is None:  # no topic: nothing was published yet
        return
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    ends = consumer.end_offsets(tps)
    begins = consumer.beginning_offsets(tps)
    for tp in tps:
        consumer.seek(tp, max(begins[tp], ends[tp] - tail_records))
    deadline = time.monotonic() + timeout_s
    idle_since = None
    while True:
        batch = consumer.poll(timeout_ms=int(idle_s * 500))
        for tp, messages in batch.items():
            for message in messages:
                try:
                    record = decode.decode(topic, message.value)
                except RecordError as exc:
                    log.warning("unreadable record on a result topic, skipped",
                                extra={"topic": topic, "partition": tp.partition, "offset": message.offset,
                                       "reason": str(exc)})
                    continue
                yield tp.partition, record
        at_end = all(consumer.position(tp) >= ends[tp] for tp in tps)
        now = time.monotonic()
        if batch or not at_end:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= idle_s:
            break
        if now > deadline:
            raise TimeoutError(f"could not read the tail of {topic} partitions {partitions} in {timeout_s:g} s")
    consumer.assign([])
