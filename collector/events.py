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
(:func:`srv6pm.kafka.ensure_topics`), builds its :class:`srv6pm.publish.Publisher`,
and retries both with backoff while the broker is away. It takes everything
queued at once and publishes it as Kafka record batches (of up to 512 KiB, in
order, each acknowledged before the next): 50,000 events in about a second
where kafka-python's producer, a ``send`` and a future per record, managed about
7,000 a second and a burst overflowed the queue. When a publish attempt fails
(the broker is away), what it did not get goes back at the head of the queue
and the queue is held to :data:`QUEUE_LIMIT` events until an attempt succeeds
again: the oldest are dropped, counted in ``stats["dropped"]`` and logged.
While the broker takes what it is sent, the queue is not cut: a burst only
waits for the next batch. Without Kafka settings, events are only logged.
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
from srv6pm.publish import Publisher, Send
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
        self._queue: collections.deque[Send] = collections.deque()  # the records of the events to publish
        self._cond = threading.Condition()
        self._closing = False
        # The last publish attempt failed: the queue is held to QUEUE_LIMIT. While the broker takes what it is
        # sent, a burst (a reconcile's fifty thousand events) may queue more: it is only waiting for the next batch.
        self._away = False
        self._thread: threading.Thread | None = None
        self._publisher: Publisher | None = None  # made (with the topic) when the first batch is sent
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
        value = records.encode_fast(record)
        if decode.typed(records.EVENTS, value) is None:
            records.validate(records.EVENTS, record)
        level = logging.WARNING if kind in _WARN else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, kind, extra={k: v for k, v in record.items()
                                        if k not in ("v", "kind", "time") and v is not None})
        self.stats["emitted"] += 1
        self.history.append(event)
        if self.kafka is not None:
            with self._cond:
                if self._away and len(self._queue) >= QUEUE_LIMIT:
                    self._queue.popleft()
                    self._dropped(1)
                self._queue.append(Send(records.EVENTS, None, event.key.encode(), value))
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
                unsent, error = self._send(batch)
            except Exception as exc:  # no publisher (the broker is away, the topic cannot be made)
                unsent, error = batch, exc
            published = len(batch) - len(unsent)
            if published:
                self.stats["published"] += published
                metrics.get().records_out.labels("collector", records.EVENTS).inc(published)
            if not unsent:
                delay, self._away = 0.5, False
                continue
            # Not acknowledged: keep them (at least once: one may have been written), before the newer ones.
            self.stats["failed"] += 1
            metrics.get().errors.labels("collector", "publish").inc()
            log.warning("cannot publish events", extra={"topic": records.EVENTS, "queued": len(unsent),
                                                        "error": repr(error), "retry_s": round(delay, 2)})
            self._drop_publisher()
            with self._cond:
                self._away = True
                self._queue.extendleft(reversed(unsent))
                excess = len(self._queue) - QUEUE_LIMIT
                if excess > 0:  # the oldest go
                    for _ in range(excess):
                        self._queue.popleft()
                    self._dropped(excess)
                self._cond.wait_for(lambda: self._closing, timeout=delay)
            delay = min(self.retry_max_s, delay * 2)
        self._drop_publisher()

    def _send(self, batch: list[Send]) -> tuple[list[Send], Exception | None]:
        """Publish ``batch`` (one call: record batches in order); returns those not acknowledged, in order,
        and the first one's error."""
        if self._publisher is None:
            from srv6pm.kafka import ensure_topics
            ensure_topics(self.kafka, {records.EVENTS: PARTITIONS}, timeout=5.0)
            options = ({"bootstrap_servers": self.kafka} if isinstance(self.kafka, str)
                       else self.kafka.client_options())
            self._publisher = Publisher(options, "srv6pm-collector", request_timeout_ms=5000)
        failed = self._publisher.publish(batch)
        if not failed:
            return [], None
        ids = {id(send) for send, _ in failed}
        return [send for send in batch if id(send) in ids], failed[0][1]

    def _dropped(self, n: int) -> None:
        """``n`` events are dropped (the queue is full: the broker has been away long): counted and logged
        (the first drop, then one line each time the count passes a thousand more)."""
        before = self.stats["dropped"]
        self.stats["dropped"] = before + n
        if before // 1000 != (before + n) // 1000 or before == 0:
            log.warning("events dropped: the queue is full", extra={"topic": records.EVENTS, "dropped": before + n,
                                                                     "queue_limit": QUEUE_LIMIT})

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:
                pass
            self._publisher = None
