"""What the processor's loop observes, said once per event, to every sink behind one interface.

The loop delivers (results stored and published, offsets committed); it
observes only through a :class:`Sensor`, told once per event, with the counts
of a whole batch at a time (so observing costs per batch, not per record):

======================================  ==================================================
call                                    event
======================================  ==================================================
``consumed(topic, n)``                  ``n`` records of input topic ``topic`` polled
``nodes(seen)``                         records per node polled, ``{node: (count, newest
                                        Kafka timestamp in seconds or None)}``
``replayed(n)``                         ``n`` records whose result was already made
``results(stage_topics, latencies,      results of one stage finished (stored, published):
incomplete)``                           ``stage_topics`` = (input, output topic), one latency
                                        (end of period → finished, s) each, ``incomplete``
                                        of them incomplete
``deadlettered(topic, n)``              ``n`` records of ``topic`` dead-lettered (finished)
``alarms(n)``                           ``n`` alarm records finished
``error(kind, topics)``                 a failed attempt (``store``, ``publish``,
                                        ``health``) touching input ``topics``
``hold()`` / ``held(seconds)``          the input paused / a hold of ``seconds`` ended
``lag(topic, partition, behind)``       a partition's consumer lag
``gone(partitions)``                    partitions revoked: their lag is no longer known
======================================  ==================================================

Sinks: :class:`Stats` (the ``stats`` dict of :class:`~srv6pm.processor.service.Processor`),
:class:`Prometheus` (``srv6pm.metrics``, ``component="processor"``) and
:class:`HealthPoints` (the ``pipeline`` and ``exporter`` points, ``health``).
:class:`Sensors` fans each call out to several. A sink never raises into the loop's
delivery and never blocks it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from srv6pm import metrics as metrics_mod
from srv6pm import records

from .health import Health

__all__ = ["HealthPoints", "Prometheus", "Sensor", "Sensors", "Stats"]

StageTopics = tuple[str, str]  # (input topic, output topic)


class Sensor:
    """The events the loop reports (see the module docstring); every method does nothing here."""

    def consumed(self, topic: str, n: int) -> None:
        pass

    def nodes(self, seen: dict[str, tuple[int, float | None]]) -> None:
        pass

    def replayed(self, n: int) -> None:
        pass

    def results(self, stage_topics: StageTopics, latencies: Sequence[float], incomplete: int) -> None:
        pass

    def deadlettered(self, topic: str, n: int) -> None:
        pass

    def alarms(self, n: int) -> None:
        pass

    def error(self, kind: str, topics: Iterable[str]) -> None:
        pass

    def hold(self) -> None:
        pass

    def held(self, seconds: float) -> None:
        pass

    def lag(self, topic: str, partition: int, behind: int) -> None:
        pass

    def gone(self, partitions: Iterable[tuple[str, int]]) -> None:
        pass


class Stats(Sensor):
    """Counts in a dict: records, results, incomplete, deadletters, replayed, holds."""

    def __init__(self):
        self.counts = {"records": 0, "results": 0, "incomplete": 0, "deadletters": 0, "replayed": 0, "holds": 0}

    def consumed(self, topic, n):
        self.counts["records"] += n

    def replayed(self, n):
        self.counts["replayed"] += n

    def results(self, stage_topics, latencies, incomplete):
        self.counts["results"] += len(latencies)
        self.counts["incomplete"] += incomplete

    def deadlettered(self, topic, n):
        self.counts["deadletters"] += n

    def hold(self):
        self.counts["holds"] += 1


class Prometheus(Sensor):
    """The processor's Prometheus series (``srv6pm.metrics``)."""

    def __init__(self, metrics: metrics_mod.Metrics, component: str = "processor"):
        self.metrics = metrics
        self.component = component
        self._lag_partitions: set[tuple[str, int]] = set()

    def consumed(self, topic, n):
        self.metrics.records_in.labels(self.component, topic).inc(n)

    def results(self, stage_topics, latencies, incomplete):
        output_topic = stage_topics[1]
        self.metrics.records_out.labels(self.component, output_topic).inc(len(latencies))
        metrics_mod.observe_all(self.metrics.period_latency.labels(self.component, output_topic), latencies)

    def deadlettered(self, topic, n):
        self.metrics.deadletters.labels(self.component, topic).inc(n)
        self.metrics.records_out.labels(self.component, records.DEADLETTER).inc(n)

    def alarms(self, n):
        self.metrics.records_out.labels(self.component, records.ALARMS).inc(n)

    def error(self, kind, topics):
        self.metrics.errors.labels(self.component, kind).inc()

    def lag(self, topic, partition, behind):
        self.metrics.consumer_lag.labels(self.component, topic, str(partition)).set(behind)
        self._lag_partitions.add((topic, partition))

    def gone(self, partitions):
        for topic, partition in set(partitions) & self._lag_partitions:
            self.metrics.consumer_lag.remove(self.component, topic, str(partition))
            self._lag_partitions.discard((topic, partition))


class HealthPoints(Sensor):
    """The counts of the ``pipeline`` and ``exporter`` points (``health``)."""

    def __init__(self, health: Health):
        self.health = health

    def consumed(self, topic, n):
        self.health.count(topic, "records_in", n)

    def nodes(self, seen):
        for node, (count, newest_s) in seen.items():
            self.health.seen(node, newest_s, count)

    def results(self, stage_topics, latencies, incomplete):
        self.health.count(stage_topics[0], "records_out", len(latencies))

    def deadlettered(self, topic, n):
        self.health.count(topic, "deadletters", n)

    def error(self, kind, topics):
        for topic in topics:
            self.health.count(topic, "errors")

    def held(self, seconds):
        self.health.held(seconds)


class Sensors(Sensor):
    """Each call to every sink in turn."""

    def __init__(self, sinks: Sequence[Sensor]):
        self.sinks = tuple(sinks)

    def consumed(self, topic, n):
        for s in self.sinks:
            s.consumed(topic, n)

    def nodes(self, seen):
        for s in self.sinks:
            s.nodes(seen)

    def replayed(self, n):
        for s in self.sinks:
            s.replayed(n)

    def results(self, stage_topics, latencies, incomplete):
        for s in self.sinks:
            s.results(stage_topics, latencies, incomplete)

    def deadlettered(self, topic, n):
        for s in self.sinks:
            s.deadlettered(topic, n)

    def alarms(self, n):
        for s in self.sinks:
            s.alarms(n)

    def error(self, kind, topics):
        topics = tuple(topics)
        for s in self.sinks:
            s.error(kind, topics)

    def hold(self):
        for s in self.sinks:
            s.hold()

    def held(self, seconds):
        for s in self.sinks:
            s.held(seconds)

    def lag(self, topic, partition, behind):
        for s in self.sinks:
            s.lag(topic, partition, behind)

    def gone(self, partitions):
        partitions = tuple(partitions)
        for s in self.sinks:
            s.gone(partitions)
