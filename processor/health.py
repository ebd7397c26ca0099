"""The processor's health figures, written to InfluxDB beside the results.

So that the pipeline-health dashboard needs no second datasource, every
processor writes, every ``interval_s`` seconds, two measurements:

``pipeline`` — one point per input topic of this processor.
  Tags ``component`` (``processor``), ``instance`` (the Kafka client id),
  ``topic`` (the input topic). Integer fields:

  - ``records_in``: records consumed from the topic,
  - ``records_out``: results published from them (on the stage's result topic),
  - ``deadletters``: of them, records sent to ``srv6pm.deadletter``,
  - ``errors``: failed attempts to publish or store this topic's results,

  each counted since this instance's previous ``pipeline`` point (so a sum over
  a time range is the exact total, and ``records_in / interval_s`` the rate);
  float field ``interval_s``, the seconds that point covers; and integer field
  ``lag``: records on the assigned partitions of the topic not yet consumed
  (end offset − position, summed), left out when the broker could not say.

``exporter`` — one point per node whose records this processor has seen.
  Tags ``node``, ``instance``. Fields ``records`` (integer: the node's
  ``srv6pm.counters`` and ``srv6pm.stamp`` records consumed since the previous
  point) and ``last_record_age_s`` (float: seconds since the node produced the
  newest of its records seen so far, by the Kafka record timestamp). A node
  whose exporter stopped keeps its point, with a growing age. With several
  processors, a node's records spread over all of them: its liveness is the
  *minimum* age over the instances.

A failed write keeps the counts for the next one: nothing is counted twice or
lost while the processor runs. :class:`Health` never reads a clock; callers
pass ``now`` (wall-clock seconds since the epoch) in, so that it is pure like
the stages.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from influxdb_client import Point, WritePrecision

from srv6pm.influx_schema import EXPORTER, PIPELINE

__all__ = ["FIELDS", "Health", "node_of"]

FIELDS = (PIPELINE.records_in, PIPELINE.records_out, PIPELINE.deadletters, PIPELINE.errors)


def node_of(record) -> str | None:
    """The node whose exporter produced ``record``: a counter block's ``node``, a STAMP sample's ``sender``."""
    return getattr(record, "node", None) or getattr(record, "sender", None)


@dataclass
class _Node:
    newest_s: float | None = None  # newest record timestamp seen, seconds since the epoch
    records: int = 0  # since the last written point


@dataclass
class Health:
    """Counts of one processor instance, turned into points every ``interval_s`` seconds."""

    instance: str
    topics: tuple[str, ...]
    interval_s: float = 10.0
    _counts: dict = field(default_factory=lambda: defaultdict(lambda: dict.fromkeys(FIELDS, 0)))
    _nodes: dict = field(default_factory=dict)
    _last_s: float | None = None  # end of the interval the last written points covered
    _pending: tuple | None = None  # what the last points() reported, until written()

    def __post_init__(self):
        if not self.interval_s > 0:
            raise ValueError("interval_s must be positive")

    # -- counting ----------------------------------------------------------

    def count(self, topic: str, name: str, n: int = 1) -> None:
        """Add ``n`` to field ``name`` (one of FIELDS) of input topic ``topic``."""
        if name not in FIELDS:
            raise ValueError(f"unknown health field {name!r}")
        self._counts[topic][name] += n

    def seen(self, node: str | None, timestamp_s: float | None, records: int = 1) -> None:
        """``records`` records from ``node`` were consumed, the newest produced at ``timestamp_s`` (Kafka time)."""
        if not node:
            return
        entry = self._nodes.setdefault(node, _Node())
        entry.records += records
        if timestamp_s is not None and (entry.newest_s is None or timestamp_s > entry.newest_s):
            entry.newest_s = timestamp_s

    # -- reporting ---------------------------------------------------------

    def due(self, now: float) -> bool:
        """True when the next points should be written (the first time: at once, to mark the start)."""
        if self._last_s is None:
            self._last_s = now  # the first interval starts now; nothing to report yet
            return False
        return now - self._last_s >= self.interval_s

    def points(self, now: float, lag: dict[str, int] | None = None) -> list[Point]:
        """The points of the interval ending at ``now``; call :meth:`written` once InfluxDB took them."""
        lag = lag or {}
        start = self._last_s if self._last_s is not None else now
        ts = int(now * 1e9)
        out = []
        for topic in self.topics:
            counts = self._counts[topic]
            point = (Point(PIPELINE.measurement).tag(PIPELINE.component, "processor")
                     .tag(PIPELINE.instance, self.instance).tag(PIPELINE.topic, topic)
                     .field(PIPELINE.interval_s, round(now - start, 3)))
            for name in FIELDS:
                point.field(name, int(counts[name]))
            if topic in lag:
                point.field(PIPELINE.lag, int(lag[topic]))
            out.append(point.time(ts, WritePrecision.NS))
        for node in sorted(self._nodes):
            entry = self._nodes[node]
            point = (Point(EXPORTER.measurement).tag(EXPORTER.node, node).tag(EXPORTER.instance, self.instance)
                     .field(EXPORTER.records, entry.records))
            if entry.newest_s is not None:
                point.field(EXPORTER.last_record_age_s, round(max(0.0, now - entry.newest_s), 3))
            out.append(point.time(ts, WritePrecision.NS))
        self._pending = ({t: dict(c) for t, c in self._counts.items()}, {n: e.records for n, e in self._nodes.items()})
        return out

    def written(self, now: float) -> None:
        """The points made by the last :meth:`points` call are stored: start the next interval at ``now``."""
        if self._pending is None:
            raise RuntimeError("written() without points()")
        counts, records = self._pending
        self._pending = None
        for topic, values in counts.items():
            for name, n in values.items():
                self._counts[topic][name] -= n
        for node, n in records.items():
            self._nodes[node].records -= n
        self._last_s = now
