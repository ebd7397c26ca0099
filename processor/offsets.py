"""Which consumer offsets may be committed.

A record's offset may be committed only when the record's work is finished:
its result stored and published, or the record dead-lettered. Records finish
out of order (a block waits for its partner), so the committable position of a
partition is the lowest offset still unfinished, or one past the highest offset
seen when nothing is unfinished. After a restart the consumer resumes there;
records between that position and the old high mark are seen again, which is
why downstream writes must be idempotent (see ``ledger``).
"""

from __future__ import annotations

import heapq
import operator
from itertools import islice
from typing import Hashable

__all__ = ["OffsetTracker"]

Partition = Hashable


class OffsetTracker:
    """Tracks unfinished offsets per partition."""

    def __init__(self):
        self._unfinished: dict[Partition, set[int]] = {}
        self._heaps: dict[Partition, list[int]] = {}
        self._next: dict[Partition, int] = {}

    def seen(self, partition: Partition, offset: int) -> None:
        """A record at ``offset`` was consumed and is not finished yet."""
        self._unfinished.setdefault(partition, set()).add(offset)
        heapq.heappush(self._heaps.setdefault(partition, []), offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def seen_all(self, partition: Partition, offsets: list[int]) -> None:
        """:meth:`seen` for each of ``offsets``."""
        unfinished = self._unfinished.setdefault(partition, set())
        unfinished.update(offsets)
        heap = self._heaps.setdefault(partition, [])
        if offsets and offsets[0] >= self._next.get(partition, 0) \
                and all(map(operator.lt, offsets, islice(offsets, 1, None))):
            # Ascending and past every offset seen (a poll's records): appended in order, the list stays a
            # heap (every new item is at least each item before it, so at least its parent).
            heap += offsets
        else:
            push = heapq.heappush
            for offset in offsets:
                push(heap, offset)
        if offsets:
            self._next[partition] = max(self._next.get(partition, 0), max(offsets) + 1)

    def finished(self, partition: Partition, offset: int) -> None:
        """The record at ``offset`` needs nothing more."""
        unfinished = self._unfinished.get(partition)
        if unfinished is not None:
            unfinished.discard(offset)

    def finished_all(self, partition: Partition, offsets) -> None:
        """:meth:`finished` for each of ``offsets``."""
        unfinished = self._unfinished.get(partition)
        if unfinished is not None:
            unfinished.difference_update(offsets)

    def committable(self) -> dict[Partition, int]:
        """For every partition seen: the offset to commit (the next record to read after a restart)."""
        out = {}
        for partition, nxt in self._next.items():
            heap = self._heaps[partition]
            unfinished = self._unfinished[partition]
            while heap and heap[0] not in unfinished:
                heapq.heappop(heap)
            out[partition] = heap[0] if heap else nxt
        return out

    def forget(self, partitions) -> None:
        """Drop all state of ``partitions`` (revoked from this consumer)."""
        for partition in partitions:
            self._unfinished.pop(partition, None)
            self._heaps.pop(partition, None)
            self._next.pop(partition, None)
