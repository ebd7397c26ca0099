"""The consume loop shared by every srv6pm consumer-group member: poll, act, commit.

A component that consumes topics in a consumer group (the processor, the
collector's results consumer) owns what it does with a batch; the loop's
mechanics live here, once, in :class:`ConsumeLoop`. Its contract:

Poll
    :meth:`ConsumeLoop.poll` returns one batch, ``{TopicPartition: [records]}``.
    A poll that fails (``KafkaError``) is reported to ``waiting`` as
    ``kafka_consumer`` (said once, see :mod:`srv6pm.waiting`) and gives an
    empty batch; the polls that follow wait ``poll_ms`` without asking the
    brokers, with a back-off doubling from 0.2 s to ``retry_max_s``, until
    one works. A failed commit sets the same back-off when the owner says so
    (:meth:`ConsumeLoop.back_off`).

Hold through outages
    While what a batch produces cannot be stored or published, the owner
    calls :meth:`ConsumeLoop.hold`: every assigned partition is paused and
    :meth:`ConsumeLoop.poll` goes on polling (so the member keeps its place
    in the group and takes part in rebalances) but returns nothing: a record
    that still arrives is sought back, to be read again after
    :meth:`ConsumeLoop.release`, which resumes the partitions where they
    stopped (except those the owner still keeps paused).

Rebalances
    :class:`Rebalance` adapts kafka-python 3's asynchronous listener: its
    callbacks get the sorted ``(topic, partition)`` pairs, run on
    kafka-python's IO thread inside ``poll`` (waiting in them keeps the
    heartbeats going, see :func:`io_sleep`). What a revoked partition had in
    flight is the owner's to withdraw; commits stay on the loop's thread.

Commit only after store and publish
    :meth:`ConsumeLoop.commit` commits ``{(topic, partition): next offset}``
    on the loop's thread, with a timeout. The owner passes only offsets whose
    records' results are stored and published (the loop cannot know it; it
    commits exactly what it is given). It answers :data:`COMMITTED`;
    :data:`REFUSED` when the group moved on (a rebalance: the partitions' next
    owner re-reads from the last commit, logged at info); or :data:`FAILED`
    when the brokers are away (reported to ``waiting`` as ``kafka_commit``;
    the owner tries again with its next commit).

Stop
    :meth:`ConsumeLoop.run` calls the owner's step until :meth:`ConsumeLoop.stop`
    (from a signal handler or another thread), then the owner's close.
    :meth:`ConsumeLoop.retry` retries an action against a store until it
    works, reporting the wait; once stopping it raises :class:`Stopped`
    instead (nothing of the batch committed: it is read again at the next start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.net.selector import KernelEvent
from kafka.structs import OffsetAndMetadata

from srv6pm.errors import OperationError
from srv6pm.waiting import Waiting

__all__ = ["COMMITTED", "COMMIT_TIMEOUT_MS", "ConsumeLoop", "FAILED", "REFUSED", "Rebalance", "Stopped", "io_sleep"]

COMMIT_TIMEOUT_MS = 5_000  # a commit that takes longer is given up and tried again with the next one
FIRST_DELAY_S = 0.2

COMMITTED, REFUSED, FAILED = "committed", "refused", "failed"

Partition = tuple[str, int]  # (topic, partition)
T = TypeVar("T")


class Stopped(OperationError, RuntimeError):
    """The loop was stopped while an action was still being retried; its records are read again later."""


class Rebalance(AsyncConsumerRebalanceListener):
    """kafka-python 3's listener, calling the owner with sorted (topic, partition) pairs (see the module docstring).

    ``revoked(partitions, lost)`` is awaited (a coroutine function); ``assigned(partitions)`` is a plain call.
    """

    def __init__(self, revoked: Callable[..., Any], assigned: Callable[[list[Partition]], None]):
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked):
        await self._revoked(sorted((tp.topic, tp.partition) for tp in revoked), False)

    async def on_partitions_lost(self, lost):
        await self._revoked(sorted((tp.topic, tp.partition) for tp in lost), True)

    async def on_partitions_assigned(self, assigned):
        self._assigned(sorted((tp.topic, tp.partition) for tp in assigned))


async def io_sleep(seconds: float) -> None:
    """Sleep inside a listener callback without blocking kafka-python's IO loop (its own sleep event)."""
    await KernelEvent("_sleep", seconds)


class ConsumeLoop:
    """Poll, hold, commit and stop for one consumer (see the module docstring)."""

    def __init__(self, consumer: KafkaConsumer, waiting: Waiting, log: logging.Logger, *, poll_ms: int,
                 retry_max_s: float, stopping: threading.Event | None = None):
        self.consumer = consumer
        self.waiting = waiting
        self.stopping = stopping or threading.Event()
        self.poll_ms = poll_ms
        self.retry_max_s = retry_max_s
        self.holding = False
        self._log = log
        self._retry_at = 0.0
        self._delay = FIRST_DELAY_S
        self._pending: dict[Partition, int] = {}  # commit_after's offsets not committed yet

    # -- running -------------------------------------------------------------

    def run(self, step: Callable[[], object], close: Callable[[], None]) -> None:
        """Call ``step`` until :meth:`stop`; then ``close`` (also when ``step`` raised). A step that ends in
        :class:`Stopped` (a retry given up because of the stop) ends the loop like the stop itself."""
        try:
            while not self.stopping.is_set():
                try:
                    step()
                except Stopped as exc:
                    self._log.debug("stopped while retrying", extra={"error": str(exc)})
                    break
        finally:
            close()

    def stop(self) -> None:
        self.stopping.set()

    # -- polling -------------------------------------------------------------

    def poll(self, timeout_ms: int | None = None) -> dict:
        """One batch (empty while backing off, after a failure, or while holding), waiting at most
        ``timeout_ms`` (default ``poll_ms``) for one."""
        timeout_ms = self.poll_ms if timeout_ms is None else timeout_ms
        if time.monotonic() < self._retry_at:
            self.stopping.wait(timeout_ms / 1000)
            return {}
        try:
            batch = self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            self.back_off("kafka_consumer", exc)
            return {}
        self.waiting.ok("kafka_consumer")
        self._delay = FIRST_DELAY_S
        if self.holding and batch:  # paused, yet fetched before the pause took effect: read again later
            for tp, messages in batch.items():
                self.consumer.seek(tp, messages[0].offset)
            return {}
        return batch

    def back_off(self, what: str, error: object) -> None:
        """Report a failed attempt at ``what``; the next polls wait (capped exponential back-off)."""
        self.waiting.failed(what, error)
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.retry_max_s)

    def hold(self) -> None:
        """Pause every assigned partition; :meth:`poll` keeps the member in its group and returns nothing."""
        self.holding = True
        self.consumer.pause(*self.consumer.assignment())

    def release(self, keep_paused: set[Partition] | frozenset = frozenset()) -> None:
        """Resume the assigned partitions (but ``keep_paused``) where they stopped."""
        self.holding = False
        self.consumer.resume(*(tp for tp in self.consumer.assignment()
                               if (tp.topic, tp.partition) not in keep_paused))

    # -- committing ----------------------------------------------------------

    def commit(self, offsets: Mapping[Partition, int]) -> str:
        """Commit ``offsets`` (the next offset to read per partition): COMMITTED, REFUSED or FAILED."""
        if not offsets:
            return COMMITTED
        try:
            self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()},
                                 timeout_ms=COMMIT_TIMEOUT_MS)
        except CommitFailedError as exc:  # the group moved on: the partitions' next owner re-reads from the last commit
            self._log.info("commit refused after a rebalance", extra={"error": str(exc)})
            return REFUSED
        except KafkaError as exc:
            self.waiting.failed("kafka_commit", exc)
            return FAILED
        self.waiting.ok("kafka_commit")
        return COMMITTED

    def commit_after(self, offsets: Mapping[Partition, int]) -> str:
        """Commit ``offsets`` together with those an earlier failed call kept: for owners whose batches are
        stored in order, one after another. On FAILED they are kept for the next call and the polls back off;
        on COMMITTED or REFUSED (re-read by the partitions' next owner) they are done with."""
        self._pending.update(offsets)
        if not self._pending:
            return COMMITTED
        result = self.commit(self._pending)
        if result == FAILED:
            self.back_off("kafka_commit", "commit failed")
        else:
            self._pending.clear()
        return result

    # -- retrying a store ----------------------------------------------------

    def retry(self, action: Callable[[], T], errors: type[Exception] | tuple[type[Exception], ...], what: str) -> T:
        """``action()`` until it raises none of ``errors``; each failure reported as ``what``. Stopping: :class:`Stopped`.

        The waits double from :data:`FIRST_DELAY_S` up to ``retry_max_s``; a failure that says when to try again
        (an attribute ``retry_after_s``, seconds: InfluxDB's Retry-After, see :class:`srv6pm.influx.StoreError`)
        is waited for at least that long."""
        delay = FIRST_DELAY_S
        while True:
            try:
                result = action()
            except errors as exc:
                if self.stopping.is_set():
                    raise Stopped(f"stopping before {what} took the batch (it will be re-read): {exc}") from None
                self.waiting.failed(what, exc)
                self.stopping.wait(max(delay, getattr(exc, "retry_after_s", None) or 0.0))
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.waiting.ok(what)
            return result
