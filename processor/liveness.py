"""Liveness alarms into InfluxDB: the ``liveness`` points the dashboards show.

The node exporters publish the liveness alarms of the STAMP sessions that
watch their path themselves, on ``srv6pm.alarms`` (the processor does not make
them). :class:`LivenessStore` reads them there and writes each as one
``liveness`` point (:data:`srv6pm.influx_schema.LIVENESS`, :func:`liveness_lines`);
the other alarm kinds are read and skipped, and so is a record that is not a
valid alarm (logged, counted in ``stats["bad"]``: the topic has foreign
producers at most).

It is a member of a consumer group of its own (the processor's group name
with ``-liveness``), beside the processor's loop, so every processor of a
group stores its share of the partitions. Offsets are committed only after
InfluxDB accepted the batch's points; after a crash the tail is read and
written again, which changes nothing (same series, same timestamp). While
InfluxDB fails, the batch is retried with back-off; :meth:`stop` ends that
(nothing of it committed).
"""

from __future__ import annotations

import json
import logging
import threading

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import InfluxWriter, StoreError
from srv6pm.influx_schema import LIVENESS
from srv6pm.kafka import group_consumer

from .lines import line

__all__ = ["LivenessStore", "liveness_lines", "start"]

log = logging.getLogger("srv6pm.processor.liveness")


def liveness_lines(alarm: dict) -> list[str]:
    """The ``liveness`` line of a liveness alarm as published (see :class:`srv6pm.influx_schema.LivenessNames`)."""
    n = LIVENESS
    return [line(n.measurement,
                 {n.session: alarm["subject"], n.sender: alarm["sender"], n.reflector: alarm["reflector"]},
                 {n.up: 0 if alarm["raised"] else 1, n.count: int(alarm["value"]),
                  n.threshold: int(alarm["threshold"]), n.last_reply_ns: alarm["last_reply_ns"]},
                 alarm["time_ns"])]


class LivenessStore:
    """Reads liveness alarms from ``srv6pm.alarms`` and writes them to InfluxDB (see the module docstring)."""

    def __init__(self, kafka: KafkaSettings, influx: InfluxSettings, group: str, client_id: str, *,
                 poll_ms: int = 200, session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 1_000,
                 retry_max_s: float = 10.0):
        self.group = f"{group}-liveness"
        self.poll_ms = poll_ms
        self.retry_max_s = retry_max_s
        self._stop = threading.Event()
        self._store = InfluxWriter(influx)
        self._consumer = group_consumer(kafka, (records.ALARMS,), self.group, f"{client_id}-liveness",
                                        session_timeout_ms=session_timeout_ms,
                                        heartbeat_interval_ms=heartbeat_interval_ms, max_poll_interval_ms=60_000,
                                        max_poll_records=5000)
        self.stats = {"records": 0, "stored": 0, "bad": 0}

    def run(self) -> None:
        """Store until :meth:`stop`; then close."""
        try:
            while not self._stop.is_set():
                self.step()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def step(self) -> int:
        """Poll one batch, write its liveness points, commit it. Returns the number of records consumed."""
        batch = self._consumer.poll(timeout_ms=self.poll_ms)
        lines: list[str] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        count = 0
        for tp, messages in batch.items():
            for m in messages:
                count += 1
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)
                try:
                    doc = json.loads(m.value)
                    records.validate(records.ALARMS, doc)
                except (ValueError, TypeError) as exc:  # RecordError is a ValueError, so is bad JSON
                    self.stats["bad"] += 1
                    log.warning("alarm record skipped", extra={"partition": tp.partition, "offset": m.offset,
                                                               "reason": str(exc)[:300]})
                    continue
                if doc["kind"] == "liveness":
                    lines += liveness_lines(doc)
        self.stats["records"] += count
        if lines and not self._write(lines):
            return count  # stopping: nothing committed, the batch is read again next time
        self.stats["stored"] += len(lines)
        if offsets:
            self._consumer.commit(offsets)
        return count

    def _write(self, lines: list[str]) -> bool:
        delay = 0.2
        while True:
            try:
                self._store.write(lines)
                return True
            except StoreError as exc:
                if self._stop.is_set():
                    return False
                log.warning("liveness points not stored, retrying", extra={"error": str(exc), "delay_s": delay})
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max_s)

    def close(self) -> None:
        for closer in (self._consumer.close, self._store.close):
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
