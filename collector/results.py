"""The collector's measurement feed: ``srv6pm.loss``, ``srv6pm.delay`` and liveness alarms into the graph.

A loss result goes onto its flow's path edge, and its segments (counters with
positions) onto the link edges between their nodes (see ``graph``). Of
``srv6pm.alarms`` only kind ``liveness`` is used: it marks its STAMP
session's path edge down or up (``alive``); the other alarms are consumed and
committed without touching the graph.

:class:`ResultsConsumer` is one member of a Kafka consumer group on both
result topics. Each loop iteration (:meth:`ResultsConsumer.step`) polls a
batch, applies it to the graph in one :meth:`GraphStore.update_many` (each
document it touches read and written once, in bulk), and only then commits
the batch's offsets.
So a record is never committed before the graph holds it; after a crash the
uncommitted tail is re-read and applied again, which changes nothing (the
same period overwrites itself, older periods never overwrite newer ones).

A record that is not JSON, or not a valid result, is logged and counted
(``stats["bad"]``) and skipped: the processor already dead-letters its bad
inputs, so here it can only be a foreign producer. While the graph store
fails (:class:`GraphStoreError`), the record is retried with back-off and
nothing is committed; :meth:`stop` ends the retries (the record is re-read
at the next start).

The brokers being away never ends the consumer: a failed poll or commit is
logged once (``srv6pm.waiting``: ``waiting for kafka_commit`` ... ``kafka_commit
is back``) and tried again; a commit refused after a rebalance leaves the
records to be re-read (applying them again changes nothing).

The topics must exist before the consumer starts (the processor or the lab
creates them with :func:`srv6pm.kafka.ensure_topics`); on the embedded broker
subscribing to a missing topic creates it with the broker's default
partition count.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field

from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from srv6pm import decode, records
from srv6pm.config import KafkaSettings
from srv6pm.kafka import group_consumer
from srv6pm.waiting import Waiting

from .graph import APPLIED, GraphStore, GraphStoreError

__all__ = ["ResultsConsumer", "ResultsOptions"]

log = logging.getLogger("srv6pm.collector.results")

TOPICS = (records.LOSS, records.DELAY, records.ALARMS)


COMMIT_TIMEOUT_MS = 5_000


@dataclass
class ResultsOptions:
    """Tuning of the consumer. Defaults suit production; the lab uses 2000/500 ms group timings."""

    client_id: str = field(default_factory=lambda: f"srv6pm-collector-{socket.gethostname()}")
    poll_ms: int = 500
    max_records: int = 5000  # one poll, one graph update: a period of 5,000 flows in one batch
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 60_000
    retry_max_s: float = 10.0


class ResultsConsumer:
    """Applies loss and delay results to ``graph``; commits offsets after the graph update."""

    def __init__(self, kafka: KafkaSettings, graph: GraphStore, group_id: str = "srv6pm-collector",
                 options: ResultsOptions | None = None):
        self.graph = graph
        self.group_id = group_id
        self.options = o = options or ResultsOptions()
        self._stop = threading.Event()
        self._consumer = group_consumer(
            kafka, TOPICS, group_id, o.client_id, session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_interval_ms, max_poll_interval_ms=o.max_poll_interval_ms,
            max_poll_records=o.max_records,
        )
        self.stats = {"records": 0, "applied": 0, "stale": 0, "unknown": 0, "bad": 0}
        self.waiting = Waiting("collector", log)
        self._retry_at = 0.0
        self._delay = 0.2
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}

    def run(self) -> None:
        """Consume until :meth:`stop` is called (from a signal handler or another thread); then close."""
        try:
            while not self._stop.is_set():
                self.step()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def step(self) -> int:
        """Poll one batch, apply it to the graph, commit it. Returns the number of records consumed."""
        if time.monotonic() < self._retry_at:
            self._stop.wait(self.options.poll_ms / 1000)
            return 0
        try:
            batch = self._consumer.poll(timeout_ms=self.options.poll_ms)
        except KafkaError as exc:
            self._failed("kafka_consumer", exc)
            return 0
        self.waiting.ok("kafka_consumer")
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        good: list[tuple[str, dict]] = []
        count = 0
        for tp, messages in batch.items():
            for m in messages:
                self.stats["records"] += 1
                try:
                    record = decode.decode(tp.topic, m.value)
                except records.RecordError as exc:
                    self.stats["bad"] += 1
                    log.warning("result record skipped", extra={"topic": tp.topic, "partition": tp.partition,
                                                                "offset": m.offset, "reason": str(exc)})
                else:
                    if tp.topic != records.ALARMS or record.kind == "liveness":
                        good.append((tp.topic, record.to_dict()))
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)
                count += 1
        if good:  # the whole poll in one graph update: one bulk read and write per collection
            for outcome in self._retry(lambda: self.graph.update_many(good)):
                self.stats[outcome if outcome != APPLIED else "applied"] += 1
        self._uncommitted.update(offsets)
        if self._uncommitted:
            self._commit()
        return count

    def _commit(self) -> None:
        """Commit the offsets applied so far; a failure keeps them for the next step's commit."""
        try:
            self._consumer.commit(dict(self._uncommitted), timeout_ms=COMMIT_TIMEOUT_MS)
        except CommitFailedError as exc:  # the group moved on: the records are re-read, applying them is idempotent
            log.info("commit refused after a rebalance", extra={"error": str(exc)})
            self._uncommitted.clear()
            return
        except KafkaError as exc:
            self._failed("kafka_commit", exc)
            return
        self._uncommitted.clear()
        self.waiting.ok("kafka_commit")
        self._delay = 0.2

    def _failed(self, what: str, exc: Exception) -> None:
        self.waiting.failed(what, exc)
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.options.retry_max_s)

    def _retry(self, action):
        delay = 0.2
        while True:
            try:
                return action()
            except GraphStoreError as exc:
                if self._stop.is_set():
                    raise RuntimeError(f"stopping before the graph took a result (it will be re-read): {exc}") from None
                log.warning("graph update failed, retrying", extra={"error": str(exc), "delay_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, self.options.retry_max_s)

    def close(self) -> None:
        try:
            self._consumer.close()
        except Exception as exc:  # closing must not hide the reason we are closing
            log.debug("error while closing", extra={"error": str(exc)})

