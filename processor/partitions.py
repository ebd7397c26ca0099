"""What the processor keeps per input partition, in one object, cleared in one place.

For each assigned input partition ``(topic, partition)`` the processor keeps:

- which of its offsets are unfinished (``tracker``, see ``offsets``) and the
  offset last committed (``committed``);
- the ``(subject, period)`` keys of results made but not yet in the ledger
  (``closed``): a record of such a result is finished as it is;
- the raw key and value of records to dead-letter, until the dead letter is made
  (``raw``, by token);
- whether its ledger is still to be read (``unloaded``: paused until then);
- and, in the stages, ledgers and alarm states, its pending records, published
  results and alarm states.

:meth:`PartitionState.forget` drops all of it for revoked or lost partitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from .offsets import OffsetTracker
from .outcome import Token

__all__ = ["PartitionState", "partition_of"]

Partition = tuple[str, int]  # (topic, partition)


def partition_of(token: Token) -> Partition:
    """The (topic, partition) of a token the processor made, ``(topic, partition, offset)``."""
    return cast(tuple[str, int, int], token)[:2]


class PartitionState:
    """Per-partition state of one processor (see the module docstring)."""

    def __init__(self, stages: Mapping[str, Any], ledgers: Mapping[str, Any], alarms: Mapping[str, Any]):
        self._stages = stages
        self._ledgers = ledgers
        self._alarms = alarms
        self.tracker = OffsetTracker()
        self.committed: dict[Partition, int] = {}
        self.closed: dict[Partition, set[tuple]] = {}
        self.raw: dict[Token, tuple[bytes | None, bytes | None]] = {}
        self.unloaded: set[Partition] = set()

    def closed_of(self, tp: Partition) -> set[tuple]:
        closed = self.closed.get(tp)
        if closed is None:
            closed = self.closed[tp] = set()
        return closed

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop every state of ``partitions`` (revoked from or lost by this member)."""
        partitions = list(partitions)
        gone = set(partitions)
        for topic, stage in self._stages.items():
            stage.drop({t for t in stage.pending_tokens() if partition_of(t) in gone})
            mine = [p for t, p in partitions if t == topic]
            self._ledgers[topic].forget(mine)
            self._alarms[topic].forget(mine)
        self.tracker.forget(partitions)
        for tp in partitions:
            self.committed.pop(tp, None)
            self.closed.pop(tp, None)
        self.unloaded -= gone
        self.raw = {t: v for t, v in self.raw.items() if partition_of(t) not in gone}
