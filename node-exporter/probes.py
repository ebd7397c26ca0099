"""STAMP on the node exporter: a Session-Reflector and Session-Senders whose samples go to Kafka.

Each configured session runs a :class:`~srv6pm.stamp.Sender` in its own
thread (sockets in the data plane's namespace, if configured), sending
``rate`` test packets per second until the exporter stops. Every sample
becomes one ``srv6pm.stamp`` record keyed by the session name, with the
exporter's period so that the processor can cut per-period statistics; the
producer batches them (``linger_ms``). Samples are published in the order the
sender decides them, which is what the processor's event-time windows expect.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from kafka import KafkaProducer

from srv6pm import records
from srv6pm.stamp import TIMESTAMP_KINDS, Reflector, ReflectorConfig, Sender, SenderConfig
from srv6pm.stamp.keys import load_key

from .config import ExporterConfig, SessionSettings

__all__ = ["Probes"]

log = logging.getLogger("srv6pm.exporter.stamp")


class Probes:
    """The STAMP reflector and senders of one exporter."""

    def __init__(self, config: ExporterConfig, producer: KafkaProducer):
        self.config = config
        self._producer = producer
        self._reflector: Reflector | None = None
        self._senders: list[tuple[Sender, threading.Thread]] = []
        # Build everything first, so that a bad key file or address fails before anything runs.
        if config.reflector is not None:
            r = config.reflector
            key = load_key(r.auth_key_file) if r.auth_key_file else None
            self._reflector = Reflector(ReflectorConfig(bind=r.bind, port=r.port, key=key, stateful=r.stateful,
                                                        netns=config.netns))
        self._pending = [self._sender(s) for s in config.sessions]

    def _sender(self, s: SessionSettings) -> Sender:
        key = load_key(s.auth_key_file) if s.auth_key_file else None
        return Sender(SenderConfig(
            dest=s.dest, port=s.port, session=s.name, source=s.source, count=None, interval=1.0 / s.rate,
            segments=s.segments, return_segments=s.return_segments, key=key, timeout=s.timeout,
            netns=self.config.netns, reflector_timestamps=TIMESTAMP_KINDS))

    def start(self) -> None:
        if self._reflector is not None:
            self._reflector.start()
            log.info("reflector started", extra={"node": self.config.node, "bind": self.config.reflector.bind})
        for settings, sender in zip(self.config.sessions, self._pending):
            thread = threading.Thread(target=self._run, args=(settings, sender), name=f"stamp-{settings.name}",
                                      daemon=True)
            thread.start()
            self._senders.append((sender, thread))

    def _run(self, settings: SessionSettings, sender: Sender) -> None:
        try:
            for sample in sender.samples():
                self._publish(settings, sample)
        except Exception as exc:  # a session that cannot run says why, the others go on
            log.error("STAMP session failed", extra={"session": settings.name, "error": str(exc)})

    def _publish(self, settings: SessionSettings, sample) -> None:
        if sample.t1 is None:  # never sent (socket error): nothing was measured
            log.warning("test packet not sent", extra={"session": settings.name, "seq": sample.seq})
            return
        record = records.StampSample(
            session=settings.name, seq=sample.seq, period_s=self.config.period,
            t1=sample.t1, t2=None if sample.lost else sample.t2, t3=None if sample.lost else sample.t3,
            t4=None if sample.lost else sample.t4, lost=sample.lost, sender=self.config.node,
            reflector=settings.reflector or settings.dest, timestamps=sample.timestamps or None,
            ttl=sample.ttl, reflector_seq=sample.reflector_seq)
        self._producer.send(records.STAMP, key=settings.name.encode(), value=record.to_json())

    def reflector_stats(self):
        return None if self._reflector is None else self._reflector.stats()

    def stop(self) -> None:
        for sender, _ in self._senders:
            sender.stop()
        for _, thread in self._senders:
            thread.join(timeout=5)
        if self._reflector is not None:
            stats = self._reflector.stats()
            self._reflector.stop()
            self._reflector.close()
            log.info("reflector stopped", extra={"node": self.config.node, **dataclasses.asdict(stats)})
