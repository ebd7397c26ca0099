"""The node exporter's loop: loss monitoring, plus the STAMP probes of ``probes``.

On a schedule fixed by the period clock (all nodes agree on it through NTP):

* at the start of every period ``k`` (only if the node is an ingress of some
  flow): switch the marking colour to ``k mod 2`` — one nftables transaction;
* at the guard time of period ``k`` (the middle of ``k+1``): read the counters
  of colour ``k mod 2``, turn them into blocks (:mod:`.blocks`), publish one
  ``srv6pm.counters`` record per flow and role, keyed by flow, and persist
  the new baselines.

A guard read that cannot happen on time (the process stalled into period
``k+2``, when colour ``k mod 2`` is being marked again) is skipped: the next
reading of that colour then only re-baselines, so the stall shows up as
incomplete periods, never as loss.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaProducer

from srv6pm import records
from srv6pm.clock import PeriodClock
from srv6pm.config import KafkaSettings

from .blocks import Baselines
from .config import ExporterConfig
from .dataplane import CountingTable, FlowMatch
from .nft import Nft
from .probes import Probes

__all__ = ["Exporter"]

log = logging.getLogger("srv6pm.exporter")

# How close to the end of the safe window (the start of period k+2) a guard
# read may still start.
_GUARD_MARGIN_NS = 50_000_000


class Exporter:
    """Marks, counts and publishes for one node."""

    def __init__(self, config: ExporterConfig, kafka: KafkaSettings, producer: KafkaProducer | None = None):
        self.config = config
        self.clock = PeriodClock(config.period)
        self._producer = producer or KafkaProducer(**kafka.client_options(), client_id=f"srv6pm-exporter-{config.node}",
                                                   acks="all", linger_ms=20, retries=10,
                                                   delivery_timeout_ms=120_000)
        self._roles = [r for r in ("ingress", "egress") if config.flows_of(r)]
        self._nft = Nft(config.netns) if self._roles else None
        self._table = CountingTable(self._nft, dscp=config.dscp) if self._roles else None
        self._baselines = Baselines(config.state_file)
        self._probes = Probes(config, self._producer)
        self._stop = threading.Event()

    def _matches(self, role: str) -> list[FlowMatch]:
        return [FlowMatch(f.name, f.src, f.dst) for f in self.config.flows_of(role)]

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Start the STAMP probes, install the counting table and loop until :meth:`stop`."""
        self._probes.start()
        if not self._roles:
            try:
                self._stop.wait()
            finally:
                self.close()
            return
        clock = self.clock
        now = time.time_ns()
        k = clock.period_at(now)
        self._table.install(self._matches("ingress"), self._matches("egress"), clock.colour(k))
        log.info("counting", extra={"node": self.config.node, "flows": len(self.config.flows),
                                    "period_s": self.config.period, "colour": clock.colour(k)})
        next_boundary = k + 1  # next period whose start switches the colour
        next_guard = k - 1 if now < clock.guard_ns(k - 1) else k  # next period whose block is read
        try:
            while not self._stop.is_set():
                t_boundary = clock.start_ns(next_boundary) if "ingress" in self._roles else None
                t_guard = clock.guard_ns(next_guard)
                t_next = min(t for t in (t_boundary, t_guard) if t is not None)
                if self._stop.wait(max(0, t_next - time.time_ns()) / 1e9):
                    break
                now = time.time_ns()
                if t_boundary is not None and now >= t_boundary:
                    current = clock.period_at(now)
                    self._table.set_colour(clock.colour(current))
                    next_boundary = current + 1
                if now >= clock.guard_ns(next_guard):
                    self._guard(next_guard, now)
                    next_guard += 1
        finally:
            self.close()

    def _guard(self, k: int, now: int) -> None:
        """Read, publish and persist the block of period ``k``."""
        clock = self.clock
        if now > clock.start_ns(k + 2) - _GUARD_MARGIN_NS:
            log.warning("guard time missed, skipping the block", extra={"node": self.config.node, "period": k})
            return
        colour = clock.colour(k)
        out = []
        for role in self._roles:
            reading = self._table.read(role, colour)
            for block in self._baselines.advance(role, colour, k, reading.generation, reading.counts):
                out.append(records.CounterRecord(
                    node=self.config.node, flow=block.flow, role=role, period=k, period_s=self.config.period,
                    color=colour, packets=block.packets, bytes=block.bytes, read_ns=now))
        for record in out:
            self._producer.send(records.COUNTERS, key=record.flow.encode(), value=record.to_json())
        try:
            self._producer.flush(timeout=max(1.0, self.config.period / 4))
        except Exception as exc:  # the producer keeps retrying in the background
            log.warning("publish not yet acknowledged", extra={"node": self.config.node, "period": k, "error": str(exc)})
        self._baselines.save()
        log.info("block", extra={"node": self.config.node, "period": k, "records": len(out)})

    def close(self) -> None:
        self._probes.stop()
        try:
            self._producer.flush(timeout=5)
        except Exception as exc:
            log.warning("unsent records at exit", extra={"error": str(exc)})
        self._producer.close(timeout=5)
        if self._nft is not None:
            self._nft.close()
