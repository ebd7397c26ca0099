"""The collector's events: structured logs and records on ``srv6pm.events``.

:class:`Events` turns each event into an :class:`srv6pm.records.Event`,
validated against ``srv6pm/schemas/srv6pm.events.schema.json`` (by the typed
decoder of :mod:`srv6pm.decode`, which takes only what the schema takes;
jsonschema for the rest), logs it on
``srv6pm.collector.events`` (INFO; WARNING for node_down, apply_failed and
config_rejected) and hands it to a background publisher that sends it to Kafka
(key = node name, or ``"collector"``; ``acks=all``).

Kafka being slow or unreachable never holds up the caller: :meth:`Events.emit`
only queues. The publisher makes sure the topic exists
(:func:`srv6pm.kafka.ensure_topics`), builds its producer, and retries both
with backoff while the broker is away; events that arrive meanwhile wait in a
bounded queue (the oldest are dropped when it is full, and counted in
``stats["dropped"]``). Without Kafka settings, events are only logged.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

from srv6pm import decode, metrics, records
from srv6pm.records import Event

__all__ = ["Events", "now_rfc3339"]

log = logging.getLogger("srv6pm.collector.events")

_WARN = {"node_down", "apply_failed", "config_rejected"}
QUEUE_LIMIT = 10_000
PARTITIONS = 1  # events are few; one partition keeps them in order


def now_rfc3339(ns: int | None = None) -> str:
    """RFC 3339 UTC with microseconds (truncated), e.g. ``2025-11-25T17:04:05.123456Z``."""
    ns = time.time_ns() if ns is None else ns
    seconds, micros = divmod(ns // 1000, 1_000_000)
    return f"{_second(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a UTC second (events come thousands a second: formatted once each)."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


class Events:
    """Emits events; publishes them to ``kafka`` (bootstrap string or KafkaSettings) unless it is None.

    ``generation`` is the configuration generation stamped on every event (set
    by the collector at each accepted load). Call :meth:`start` to start
    publishing and :meth:`close` to flush (up to ``flush_timeout`` seconds)
    and stop.
    """

    def __init__(self, kafka: Any = None, *, retry_max_s: float = 10.0, flush_timeout: float = 5.0):
        self.kafka = kafka
        self.generation = 0
        self.retry_max_s = retry_max_s
        self.flush_timeout = flush_timeout
        self.stats = {"emitted": 0, "published": 0, "dropped": 0, "failed": 0}
        self._queue: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._producer: Any = None  # a kafka-python KafkaProducer (untyped) once the first batch is sent
        self.history: collections.deque[Event] = collections.deque(maxlen=1000)  # recent events, for tests/status

    # ------------------------------------------------------------ emitting

    def emit(self, kind: str, *, node: str | None = None, object: str | None = None, detail: str | None = None,
             boot_id: str | None = None, generation: int | None = None) -> Event:
        """Record one event (never blocks on Kafka); returns it. ``generation`` defaults to :attr:`generation`."""
        generation = self.generation if generation is None else generation
        event = Event(kind=kind, time=now_rfc3339(), generation=generation, node=node, object=object,
                      detail=detail, boot_id=boot_id or None)
        record = event.to_dict()
        # A bug here must be loud, not a bad record on the topic. The typed decoder accepts only what the schema
        # accepts (srv6pm.decode, kept in agreement by its tests) at a tenth of jsonschema's cost (ten thousand
        # new flows are fifty thousand events); what it does not take, jsonschema judges.
        if decode.typed(records.EVENTS, records.encode_fast(record)) is None:
            records.validate(records.EVENTS, record)
        level = logging.WARNING if kind in _WARN else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, kind, extra={k: v for k, v in record.items()
                                        if k not in ("v", "kind", "time") and v is not None})
        self.stats["emitted"] += 1
        self.history.append(event)
        if self.kafka is not None:
            with self._cond:
                if len(self._queue) >= QUEUE_LIMIT:
                    self._queue.popleft()
                    self.stats["dropped"] += 1
                self._queue.append(event)
                self._cond.notify()
        return event

    # ------------------------------------------------------------ publishing

    def start(self) -> None:
        if self.kafka is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._publish_loop, name="srv6pm-collector-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Flush what is queued (bounded by ``flush_timeout``) and stop the publisher."""
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify()
            thread.join(self.flush_timeout + 2)
            self._thread = None

    def _publish_loop(self) -> None:
        delay = 0.5
        deadline = None
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    deadline = deadline or time.monotonic() + self.flush_timeout
                    if not self._queue or time.monotonic() >= deadline:
                        break
                batch = list(self._queue)
                self._queue.clear()
            try:
                self._send(batch)
            except Exception as exc:  # the broker is away: keep the events (at least once), retry later
                self.stats["failed"] += 1
                metrics.get().errors.labels("collector", "publish").inc()
                log.warning("cannot publish events", extra={"topic": records.EVENTS, "queued": len(batch),
                                                            "error": repr(exc), "retry_s": round(delay, 2)})
                self._drop_producer()
                with self._cond:
                    room = QUEUE_LIMIT - len(self._queue)
                    keep = batch[-room:] if room > 0 else []
                    self.stats["dropped"] += len(batch) - len(keep)
                    self._queue.extendleft(reversed(keep))
                    self._cond.wait_for(lambda: self._closing, timeout=delay)
                delay = min(self.retry_max_s, delay * 2)
                continue
            delay = 0.5
            self.stats["published"] += len(batch)
            metrics.get().records_out.labels("collector", records.EVENTS).inc(len(batch))
        self._drop_producer()

    def _send(self, batch: list[Event]) -> None:
        if self._producer is None:
            from kafka import KafkaProducer

            from srv6pm.kafka import PRODUCER_LIMITS, ensure_topics
            ensure_topics(self.kafka, {records.EVENTS: PARTITIONS}, timeout=5.0)
            options = ({"bootstrap_servers": self.kafka} if isinstance(self.kafka, str)
                       else self.kafka.client_options())
            self._producer = KafkaProducer(**options, client_id="srv6pm-collector", acks="all", linger_ms=5,
                                           retries=3, max_block_ms=5000, request_timeout_ms=5000,
                                           delivery_timeout_ms=15_000, **PRODUCER_LIMITS)
        futures = [self._producer.send(records.EVENTS, key=e.key.encode(), value=e.to_json()) for e in batch]
        self._producer.flush(timeout=10)
        for f in futures:
            f.get(timeout=0)  # raises the delivery error, if any

    def _drop_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:
                pass
            self._producer = None
