"""Liveness alarms into InfluxDB: the ``liveness`` points the dashboards show.

The node exporters publish the liveness alarms of the STAMP sessions that
watch their path themselves, on ``srv6pm.alarms`` (the processor does not make
them). :class:`LivenessStore` reads them there and writes each as one
``liveness`` point (:data:`srv6pm.influx_schema.LIVENESS`, :func:`liveness_lines`);
the other alarm kinds are read and skipped. A record that is not a valid
alarm (:func:`srv6pm.decode.decode_alarm`) goes to ``srv6pm.deadletter`` with
the reason, as the processor's bad inputs do (``consumer`` is this store's
group), and is counted in ``stats["bad"]``.

It is a member of a consumer group of its own (the processor's group name
with ``-liveness``), beside the processor's loop, so every processor of a
group stores its share of the partitions. Offsets are committed only after
InfluxDB accepted the batch's points; after a crash the tail is read and
written again, which changes nothing (same series, same timestamp), and a
dead letter may be published again. Offsets move only after the batch's dead
letters are acknowledged as well. While InfluxDB or the brokers fail, the
batch is retried with back-off, the wait said once when it starts and once
when it ends (:class:`srv6pm.waiting.Waiting`, ``influxdb_liveness`` and
``kafka_deadletter``); :meth:`stop` ends that (nothing of it committed). Polling,
retrying and committing are the shared loop's (:class:`srv6pm.consume.ConsumeLoop`).
"""

from __future__ import annotations

import logging
import threading

from kafka.errors import KafkaError

from srv6pm import decode, metrics, records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.consume import ConsumeLoop
from srv6pm.influx import InfluxWriter, StoreError
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
                 retry_max_s: float = 10.0):
        self.group = f"{group}-liveness"
        self._store = InfluxWriter(influx)
        self._consumer = group_consumer(kafka, (records.ALARMS,), self.group, f"{client_id}-liveness",
                                        session_timeout_ms=session_timeout_ms,
                                        heartbeat_interval_ms=heartbeat_interval_ms, max_poll_interval_ms=60_000,
                                        max_poll_records=5000)
        self._kafka = kafka
        self._client_id = f"{client_id}-liveness"
        self._publisher: Publisher | None = None  # made for the first dead letter
        self.metrics = metrics.get()
        self.waiting = Waiting(COMPONENT, log, self.metrics)
        self._sensor = Prometheus(self.metrics, COMPONENT)  # the processor's dead-letter counts, as its loop counts them
        self.stats = {"records": 0, "stored": 0, "bad": 0}
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
                    lines += liveness_lines(alarm)
        self.stats["records"] += count
        if lines:
            self._loop.retry(lambda: self._store.write(lines), StoreError, "influxdb_liveness")
        self.stats["stored"] += len(lines)
        bad = len(letters)
        if letters:
            self._loop.retry(lambda: self._publish(letters), KafkaError, "kafka_deadletter")
        self.stats["bad"] += bad
        self._sensor.deadlettered(records.ALARMS, bad)
        self._loop.commit_after(offsets)  # refused: re-read by the next owner, and writing them is idempotent
        return count

    def _dead_letter(self, partition: int, message, reason: str) -> Send:
        """The dead letter of a record that is not an alarm: the processor's (``srv6pm.records.dead_letter``)."""
        log.warning("record dead-lettered", extra={"topic": records.ALARMS, "partition": partition,
                                                   "offset": message.offset, "reason": shorten(reason)})
        letter = records.dead_letter(records.ALARMS, partition, message.offset, reason, message.value, self.group)
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
