"""Liveness alarms into InfluxDB: the ``liveness`` points the dashboards show.

The node exporters publish the liveness alarms of the STAMP sessions that
watch their path themselves, on ``srv6pm.alarms`` (the processor does not make
them). :class:`LivenessStore` reads them there and writes each as one
``liveness`` point (:data:`srv6pm.influx_schema.LIVENESS`, :func:`liveness_lines`);
the other alarm kinds are read and skipped. A record that is not a valid
alarm (:func:`srv6pm.decode.decode_alarm`) goes to ``srv6pm.deadletter`` with
the reason, as the processor's bad inputs do (``consumer`` is this store's
group), and is counted in ``stats["bad"]``.

InfluxDB's refusals are told apart as the processor's writer does
(:class:`srv6pm.influx.Split`, :class:`srv6pm.influx.Refusals`): while it is
away (or answers 5xx, 429) the batch is retried; while it refuses every write
for its configuration (401, 403, an unknown database or bucket) too, and that
is said as an error naming the setting to fix, with
``srv6pm_store_misconfigured{component="processor"}`` 1 meanwhile; points it
refuses as data (400, 413, 422: a field type conflict, a body too large) are
split out until each is alone, and the alarm record of each refused point goes
to ``srv6pm.deadletter`` with InfluxDB's reason (``raw`` the record as
consumed, ``topic``, ``partition`` and ``offset`` its own, ``point`` the
refused line), counted in ``stats["refused"]``; the other points are stored.

It is a member of a consumer group of its own (the processor's group name
with ``-liveness``), beside the processor's loop, so every processor of a
group stores its share of the partitions. Offsets are committed only after
InfluxDB accepted the batch's points; after a crash the tail is read and
written again, which changes nothing (same series, same timestamp), and a
dead letter may be published again. Offsets move only after the batch's dead
letters (also those of refused points) are acknowledged as well. While InfluxDB or the brokers fail, the
batch is retried with back-off, the wait said once when it starts and once
when it ends (:class:`srv6pm.waiting.Waiting`, ``influxdb_liveness`` and
``kafka_deadletter``); :meth:`stop` ends that (nothing of it committed). Polling,
retrying and committing are the shared loop's (:class:`srv6pm.consume.ConsumeLoop`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kafka.errors import KafkaError

from srv6pm import decode, records
from srv6pm import metrics as metrics_mod
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.consume import ConsumeLoop
from srv6pm.influx import InfluxWriter, Refusals, Split, StoreError
from srv6pm.influx_schema import LIVENESS
from srv6pm.kafka import group_consumer
from srv6pm.publish import Publisher, Send
from srv6pm.quote import shorten
from srv6pm.records import Alarm
from srv6pm.waiting import Waiting

from .lines import line
from .sensor import Prometheus

__all__ = ["LivenessStore", "liveness_lines", "start"]

log = logging.getLogger("srv6pm.processor.liveness")


COMPONENT = "processor"  # the liveness store runs in the processor; its waits and dead letters are the processor's


def liveness_lines(alarm: Alarm) -> list[str]:
    """The ``liveness`` line of a liveness alarm as published (see :class:`srv6pm.influx_schema.LivenessNames`)."""
    n = LIVENESS
    assert alarm.time_ns is not None, "a liveness alarm has its time_ns (the topic's schema)"
    return [line(n.measurement,
                 {n.session: alarm.subject, n.sender: alarm.sender, n.reflector: alarm.reflector},
                 {n.up: 0 if alarm.raised else 1, n.count: int(alarm.value),
                  n.threshold: int(alarm.threshold), n.last_reply_ns: alarm.last_reply_ns},
                 alarm.time_ns)]


class LivenessStore:
    """Reads liveness alarms from ``srv6pm.alarms`` and writes them to InfluxDB (see the module docstring)."""

    def __init__(self, kafka: KafkaSettings, influx: InfluxSettings, group: str, client_id: str, *,
                 poll_ms: int = 200, session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 1_000,
                 retry_max_s: float = 10.0, metrics: metrics_mod.Metrics | None = None):
        self.group = f"{group}-liveness"
        self._store = InfluxWriter(influx)
        self._consumer = group_consumer(kafka, (records.ALARMS,), self.group, f"{client_id}-liveness",
                                        session_timeout_ms=session_timeout_ms,
                                        heartbeat_interval_ms=heartbeat_interval_ms, max_poll_interval_ms=60_000,
                                        max_poll_records=5000)
        self._kafka = kafka
        self._client_id = f"{client_id}-liveness"
        self._publisher: Publisher | None = None  # made for the first dead letter
        self.metrics = metrics or metrics_mod.get()
        self.waiting = Waiting(COMPONENT, log, self.metrics)
        self._sensor = Prometheus(self.metrics, COMPONENT)  # the processor's dead-letter counts, as its loop counts them
        self._refusals = Refusals(self.waiting, "influxdb_liveness", log, self.metrics)
        self.stats = {"records": 0, "stored": 0, "bad": 0, "refused": 0}
        self._loop = ConsumeLoop(self._consumer, self.waiting, log, poll_ms=poll_ms, retry_max_s=retry_max_s)

    def run(self) -> None:
        """Store until :meth:`stop`; then close."""
        self._loop.run(self.step, self.close)

    def stop(self) -> None:
        self._loop.stop()

    def step(self) -> int:
        """Poll one batch, write its liveness points, commit it. Returns the number of records consumed.
        Raises :class:`srv6pm.consume.Stopped` when stopped while InfluxDB or the brokers are away
        (nothing of the batch committed)."""
        batch = self._loop.poll()
        lines: list[str] = []
        sources: list[tuple[int, Any]] = []  # the (partition, record) of each line
        letters: list[Send] = []
        offsets: dict[tuple[str, int], int] = {}
        count = 0
        for tp, messages in batch.items():
            for m in messages:
                count += 1
                offsets[(tp.topic, tp.partition)] = m.offset + 1
                try:
                    alarm = decode.decode_alarm(m.value)
                except records.RecordError as exc:
                    letters.append(self._dead_letter(tp.partition, m, str(exc)))
                    continue
                if alarm.kind == "liveness":
                    made = liveness_lines(alarm)
                    lines += made
                    sources += [(tp.partition, m)] * len(made)
        self.stats["records"] += count
        bad = len(letters)
        if lines:
            split = Split(lines)
            self._loop.retry(lambda: split.write(self._store.write, self._refusals), StoreError, "influxdb_liveness")
            letters += self._refused_letters(split.refused, lines, sources)
            self.stats["stored"] += len(lines) - len(split.refused)
        refused = len(letters) - bad
        if letters:
            self._loop.retry(lambda: self._publish(letters), KafkaError, "kafka_deadletter")
        self.stats["bad"] += bad
        self.stats["refused"] += refused
        self._sensor.deadlettered(records.ALARMS, bad + refused)
        self._loop.commit_after(offsets)  # refused: re-read by the next owner, and writing them is idempotent
        return count

    def _refused_letters(self, refused: dict[int, str], lines: list[str], sources: list[tuple[int, Any]]
                         ) -> list[Send]:
        """The dead letters of the alarm records whose points InfluxDB refused (line index -> reason): one per
        record, with its first refused line as ``point``."""
        out: list[Send] = []
        seen: set[int] = set()
        for i in sorted(refused):
            partition, message = sources[i]
            if id(message) in seen:
                continue
            seen.add(id(message))
            out.append(self._letter(partition, message, refused[i],
                                    point=shorten(lines[i], records.DEADLETTER_REASON_CHARS)))
        if out:
            log.warning("InfluxDB refused liveness points: their alarms are dead-lettered, the other points are "
                        "stored", extra={"points": len(refused), "of": len(lines), "dead_letters": len(out),
                                         "error": next(iter(refused.values()))})
        return out

    def _dead_letter(self, partition: int, message, reason: str) -> Send:
        """The dead letter of a record that is not an alarm, said."""
        log.warning("record dead-lettered", extra={"topic": records.ALARMS, "partition": partition,
                                                   "offset": message.offset, "reason": shorten(reason)})
        return self._letter(partition, message, reason)

    def _letter(self, partition: int, message, reason: str, **extra: str) -> Send:
        """The dead letter of an alarms record (``message``, as consumed), the processor's
        (``srv6pm.records.dead_letter``) with ``extra`` (``point`` for a refused point)."""
        letter = records.dead_letter(records.ALARMS, partition, message.offset, reason, message.value, self.group)
        letter.update(extra)
        return Send(records.DEADLETTER, None, records.dead_letter_key(message.key), records.encode(letter))

    def _publish(self, sends: list[Send]) -> None:
        """Publish ``sends``; those not acknowledged are left in it, and KafkaError says why."""
        if self._publisher is None:
            self._publisher = Publisher(self._kafka.client_options(), self._client_id)
        failed = self._publisher.publish(sends)
        sends[:] = [send for send, _ in failed]
        if failed:
            raise KafkaError(f"{len(failed)} dead letter(s) not acknowledged: {shorten(str(failed[0][1]))}")

    def close(self) -> None:
        publisher = self._publisher
        for closer in (self._consumer.close, self._store.close) + ((publisher.close,) if publisher else ()):
            try:
                closer()
            except Exception as exc:  # closing must not hide the reason we are closing
                log.debug("error while closing", extra={"error": str(exc)})


def start(kafka: KafkaSettings, influx: InfluxSettings, group: str, client_id: str) -> tuple[LivenessStore,
                                                                                             threading.Thread]:
    """A :class:`LivenessStore` running in a daemon thread of its own (stop it with ``store.stop()``)."""
    store = LivenessStore(kafka, influx, group, client_id)
    thread = threading.Thread(target=store.run, name="srv6pm-liveness-store", daemon=True)
    thread.start()
    return store, thread
