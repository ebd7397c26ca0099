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
inputs, so here it can only be a foreign producer.

The loop itself (poll, back-off, commit, stop) is the shared
:class:`srv6pm.consume.ConsumeLoop`. While the graph store fails
(:class:`GraphStoreError`), the batch is retried with back-off and nothing is
committed (``waiting for graph``, said once); :meth:`stop` ends the retries
(the batch is re-read at the next start). The brokers being away never ends
the consumer: a failed poll or commit is logged once (``srv6pm.waiting``:
``waiting for kafka_commit`` ... ``kafka_commit is back``) and tried again; a
commit refused after a rebalance leaves the records to be re-read (applying
them again changes nothing).

The topics must exist before the consumer starts (the processor or the lab
creates them with :func:`srv6pm.kafka.ensure_topics`); on the embedded broker
subscribing to a missing topic creates it with the broker's default
partition count.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from srv6pm import decode, records
from srv6pm.config import KafkaSettings
from srv6pm.consume import ConsumeLoop
from srv6pm.kafka import group_consumer
from srv6pm.waiting import Waiting

from .graph import APPLIED, Decoded, GraphStore, GraphStoreError

__all__ = ["ResultsConsumer", "ResultsOptions"]

log = logging.getLogger("srv6pm.collector.results")

TOPICS = (records.LOSS, records.DELAY, records.ALARMS)


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
        self._consumer = group_consumer(
            kafka, TOPICS, group_id, o.client_id, session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_interval_ms, max_poll_interval_ms=o.max_poll_interval_ms,
            max_poll_records=o.max_records,
        )
        self.stats = {"records": 0, "applied": 0, "stale": 0, "unknown": 0, "bad": 0}
        self.waiting = Waiting("collector", log)
        self._loop = ConsumeLoop(self._consumer, self.waiting, log, poll_ms=o.poll_ms, retry_max_s=o.retry_max_s)

    def run(self) -> None:
        """Consume until :meth:`stop` is called (from a signal handler or another thread); then close."""
        self._loop.run(self.step, self.close)

    def stop(self) -> None:
        self._loop.stop()

    def step(self) -> int:
        """Poll one batch, apply it to the graph, commit it. Returns the number of records consumed."""
        batch = self._loop.poll()
        offsets: dict[tuple[str, int], int] = {}
        good: list[tuple[str, Decoded]] = []
        count = 0
        for tp, messages in batch.items():
            for m in messages:
                try:
                    record = decode.decode(tp.topic, m.value)
                except records.RecordError as exc:
                    self.stats["bad"] += 1
                    log.warning("result record skipped", extra={"topic": tp.topic, "partition": tp.partition,
                                                                "offset": m.offset, "reason": str(exc)})
                else:
                    if tp.topic != records.ALARMS or record.kind == "liveness":
                        good.append((tp.topic, record))  # decoded, so the graph does not validate it again
            if messages:
                offsets[(tp.topic, tp.partition)] = messages[-1].offset + 1
                count += len(messages)
        self.stats["records"] += count
        if good:  # the whole poll in one graph update: one bulk read and write per collection
            for outcome in self._loop.retry(lambda: self.graph.update_many(good), GraphStoreError, "graph"):
                self.stats[outcome if outcome != APPLIED else "applied"] += 1
        self._loop.commit_after(offsets)  # refused: re-read by the next owner, and applying them is idempotent
        return count

    def close(self) -> None:
        try:
            self._consumer.close()
        except Exception as exc:  # closing must not hide the reason we are closing
            log.debug("error while closing", extra={"error": str(exc)})

