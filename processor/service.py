"""The processor: counter blocks and STAMP samples in, loss and delay out.

One member of a Kafka consumer group on the input topics of its stages
(``stages``): ``srv6pm.counters`` → ``srv6pm.loss`` and, when enabled,
``srv6pm.stamp`` → ``srv6pm.delay``. Input records are keyed by flow or
session, so everything one result needs lands in one partition and one member
sees it all; more members split the flows and sessions.

Each loop iteration (:meth:`Processor.step`):

1. polls a batch of records; undecodable or invalid ones become dead letters,
   the others go to their stage, whose results this batch completes;
2. makes the batch's output (``writer``): the results' InfluxDB lines, the
   results themselves (to the input's partition number, see ``ledger``), the
   threshold alarms they raise or clear (``alarms``) and the dead letters;
3. waits for the previous iteration's output to be stored in InfluxDB and
   then published (acknowledged by the brokers), which the writer did in the
   background while this batch was processed; only then marks its records
   finished and commits the offsets that
   :class:`~srv6pm.processor.offsets.OffsetTracker` allows;
4. hands this batch's output to the writer.

A record re-read after a restart whose result the ledger already holds is
not published again; its results are re-written to InfluxDB (idempotent).
A record whose result was made earlier in the same batch or is still being
written (a late or repeated block) is finished as it is.

Self-monitoring: the loop counts what it does in Prometheus metrics
(``srv6pm.metrics``, label ``component="processor"``) and, every
``health_interval_s``, writes the ``pipeline`` and ``exporter`` measurements
(``health``) to the same InfluxDB. A failed health write is
logged and retried with the next one; it never holds up results.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from srv6pm import metrics as metrics_mod
from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import InfluxWriter, StoreError
from srv6pm.kafka import group_consumer
from srv6pm.publish import Publisher, Send

from . import fetch
from .alarms import AlarmRules, Alarms
from .health import Health, node_of
from .ledger import Ledger
from .offsets import OffsetTracker
from .outcome import Outcome
from .stages import DelayStage, LossStage, Stage
from .writer import Output, Writer

__all__ = ["Processor", "ProcessorOptions", "tune_gc"]

log = logging.getLogger("srv6pm.processor")

COMPONENT = "processor"
LAG_INTERVAL_S = 10.0  # how often the lag gauges are refreshed when no health points are written


def tune_gc() -> None:
    """Fewer collections of the young generation, for a process that runs a processor.

    A processor allocates a few dozen objects per record and keeps tens of thousands alive
    (pending blocks, alarm states, the records being written); with Python's default threshold
    (700) the collector runs several thousand times a second and takes half the loop's time.
    Collecting every 20,000 allocations (and leaving start-up's objects out of collections)
    costs some memory, not time. Process-wide: the command line calls it, a library user may.
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


@dataclass
class ProcessorOptions:
    """Tuning of one processor. Defaults suit production; the lab shortens the group timings."""

    group: str = "srv6pm-processor"
    client_id: str = field(default_factory=lambda: f"srv6pm-processor-{socket.gethostname()}")
    pair_wait_s: float = 10.0
    delay_lateness_s: float = 5.0
    delay_idle_s: float = 30.0
    ledger_records: int = 50_000
    poll_ms: int = 500
    max_records: int = 10_000  # records per poll: the iteration's fixed costs (commit, hand-over) spread thin
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 60_000
    retry_max_s: float = 10.0
    health_interval_s: float | None = 10.0  # None: no health points in InfluxDB
    alarms: AlarmRules = field(default_factory=AlarmRules)


@dataclass
class _Written:
    """The loop's part of an output in flight: what to finish once it is stored and published."""

    docs: list  # (stage, partition, result, its record, its JSON)
    alarms: list  # (partition, alarm)
    letters: list[str]  # input topic of each dead letter
    tokens: list  # every record the output finishes
    involved: set[str]  # input topics with results or dead letters
    keys: dict  # (input topic, partition) -> {(subject, period)} of the results


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, processor: "Processor"):
        self.processor = processor

    def on_partitions_revoked(self, revoked):
        self.processor._revoked([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned):
        self.processor._assigned([(tp.topic, tp.partition) for tp in assigned])


class Processor:
    """Drives its stages: consumes their inputs, publishes and stores their results."""

    def __init__(self, kafka: KafkaSettings, influx: InfluxSettings, options: ProcessorOptions | None = None,
                 stages: list[Stage] | None = None, metrics: metrics_mod.Metrics | None = None):
        self.options = options or ProcessorOptions()
        o = self.options
        stages = stages or [LossStage(o.pair_wait_s), DelayStage(o.delay_lateness_s, o.delay_idle_s)]
        self.stages = {s.input_topic: s for s in stages}
        client = kafka.client_options()
        self._consumer = group_consumer(
            kafka, list(self.stages), o.group, o.client_id, session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_interval_ms, max_poll_interval_ms=o.max_poll_interval_ms,
            max_poll_records=o.max_records, listener=_Rebalance(self),
        )
        self._ledger_reader = KafkaConsumer(**client, group_id=None, client_id=f"{o.client_id}-ledger",
                                            enable_auto_commit=False)
        fetch.install(self._consumer)
        self._publisher = Publisher(client, o.client_id)
        self._store = InfluxWriter(influx)
        self._health_store = InfluxWriter(influx)
        self._tracker = OffsetTracker()
        self._ledgers = {t: Ledger(s.output_topic, s.subject_field, o.ledger_records) for t, s in self.stages.items()}
        self._alarms = {t: Alarms(o.alarms, s.alarm_kinds, o.ledger_records) for t, s in self.stages.items()}
        self._committed: dict[tuple[str, int], int] = {}
        self._raw: dict[tuple, tuple[bytes | None, bytes | None]] = {}
        self._stop = threading.Event()
        self._writer = Writer(self._store, self._publisher, self._stop, o.retry_max_s)
        # (topic, partition) -> {(subject, period)} of results made but not yet in the ledger
        self._closed: dict[tuple[str, int], set[tuple]] = {}
        self.stats = {"records": 0, "results": 0, "incomplete": 0, "deadletters": 0, "replayed": 0}
        self.metrics = metrics or metrics_mod.get()
        self.health = (Health(o.client_id, tuple(self.stages), o.health_interval_s)
                       if o.health_interval_s else None)
        self._lag_partitions: set[tuple[str, int]] = set()
        self._lag_due_s = 0.0

    # -- rebalancing ---------------------------------------------------------

    def _assigned(self, partitions: list[tuple[str, int]]) -> None:
        for topic, ledger in self._ledgers.items():
            mine = [p for t, p in partitions if t == topic]
            loaded = ledger.load(self._ledger_reader, mine)
            alarms = self._alarms[topic]
            states = alarms.load(self._ledger_reader, mine) if alarms.enabled else 0
            log.info("partitions assigned", extra={"topic": topic, "partitions": mine, "ledger_results": loaded,
                                                   "alarms": states})

    def _revoked(self, partitions: list[tuple[str, int]]) -> None:
        """Called inside ``poll`` (on kafka-python's IO thread, while the loop waits in poll).

        The output in flight is waited for and finished first, so every result this member made for
        the partitions is published before their next owner reads the ledger's tail. Nothing is
        committed here: commits are the loop's, on its own thread (kafka-python cannot commit
        synchronously from its IO thread); the next owner re-reads the records finished since the
        loop's last commit and finds their results in the ledger.
        """
        self._finish_written()
        gone = set(partitions)
        for topic, stage in self.stages.items():
            stage.drop({t for t in stage.pending_tokens() if t[:2] in gone})
            self._ledgers[topic].forget([p for t, p in partitions if t == topic])
            self._alarms[topic].forget([p for t, p in partitions if t == topic])
        self._tracker.forget(partitions)
        for tp in partitions:
            self._committed.pop(tp, None)
        self._raw = {t: v for t, v in self._raw.items() if t[:2] not in gone}
        for topic, partition in gone & self._lag_partitions:
            self.metrics.consumer_lag.remove(COMPONENT, topic, str(partition))
        self._lag_partitions -= gone
        log.info("partitions revoked", extra={"partitions": partitions})

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        """Process until :meth:`stop` is called (from a signal handler or another thread)."""
        try:
            while not self._stop.is_set():
                self.step()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def step(self) -> None:
        """One iteration: poll and process a batch; finish the previous output; commit; hand this one over."""
        batch = self._consumer.poll(timeout_ms=self.options.poll_ms)
        now = time.monotonic()
        outcomes: list[Outcome] = []
        restores: list[tuple[Stage, int, dict]] = []
        for tp, messages in batch.items():
            self._take(tp, messages, now, outcomes, restores)
        for stage in self.stages.values():
            outcomes.extend(stage.expire(now))
        output = self._output(outcomes, restores) if outcomes else None
        self._finish_written()
        self._commit()
        if output is not None:
            self._writer.submit(output)
        now_s = time.time()
        if self.health is not None:
            if self.health.due(now_s):
                self._write_health()
        elif now_s >= self._lag_due_s:  # no health points: the lag gauges are still kept current
            self._lag_due_s = now_s + LAG_INTERVAL_S
            self._safe_lag()

    def _take(self, tp, messages, now: float, outcomes: list[Outcome], restores: list) -> None:
        """Decode the records of one partition and give them to its stage."""
        topic, partition = tp.topic, tp.partition
        stage = self.stages[topic]
        ledger = self._ledgers[topic]
        closed = self._closed.setdefault((topic, partition), set())  # (subject, period)
        self.metrics.records_in.labels(COMPONENT, topic).inc(len(messages))
        self.stats["records"] += len(messages)
        self._tracker.seen_all((topic, partition), [m.offset for m in messages])
        nodes: dict[str, list] = {}  # node -> [records, newest timestamp (s)]
        decode, key_of, add = stage.decode, stage.key, stage.add
        for m in messages:
            token = (topic, partition, m.offset)
            try:
                record = decode(m.value)
            except records.RecordError as exc:
                self._raw[token] = (m.key, m.value)
                outcomes.append(Outcome([token], rejected={token: str(exc)}))
                continue
            node = node_of(record)
            if node:
                seen = nodes.get(node)
                if seen is None:
                    seen = nodes[node] = [0, None]
                seen[0] += 1
                if m.timestamp and m.timestamp > 0 and (seen[1] is None or m.timestamp > seen[1]):
                    seen[1] = m.timestamp
            key = key_of(record)
            if key in closed:
                # Its result was made in this batch or is being written (the ledger holds it only once
                # stored and published): nothing more to do, or a late block would open the period again.
                self.stats["replayed"] += 1
                outcomes.append(Outcome([token]))
                continue
            published = ledger.get(partition, *key)
            if published is not None:
                # Re-read after a restart, or late after its period was closed.
                self.stats["replayed"] += 1
                restores += [(stage, partition, r) for r in published]
                outcomes.append(Outcome([token]))
                continue
            for outcome in add(record, token, now):
                if outcome.rejected:
                    self._raw.update({t: (m.key, m.value) for t in outcome.rejected})
                for r in outcome.results:
                    closed.add((r.subject, r.period))
                outcomes.append(outcome)
        if self.health:
            self.health.count(topic, "records_in", len(messages))
            for node, (count, newest_ms) in nodes.items():
                self.health.seen(node, newest_ms / 1000 if newest_ms is not None else None, count)

    def _output(self, outcomes: list[Outcome], restores: list[tuple[Stage, int, dict]]) -> Output:
        """Everything the outcomes write: lines of results (and of re-read ones), results, alarms, dead letters."""
        sends: list[Send] = []
        docs = []
        lines: list[str] = []
        keys: dict[tuple[str, int], set[tuple]] = {}
        letters: list[str] = []  # input topic of each dead letter
        for outcome in outcomes:
            for token, reason in outcome.rejected.items():
                key, raw = self._raw.pop(token, (None, None))
                topic, partition, offset = token
                letter = records.dead_letter(topic, partition, offset, reason, raw, self.options.group)
                sends.append(Send(records.DEADLETTER, None, key, records.encode(letter)))
                letters.append(topic)
                log.warning("record dead-lettered", extra={"topic": topic, "partition": partition,
                                                           "offset": offset, "reason": reason})
            if outcome.results:
                topic, partition, _ = outcome.tokens[0]
                stage = self.stages[topic]
                output_topic, lines_of = stage.output_topic, stage.lines
                for result in outcome.results:
                    doc = result.to_dict()
                    value = records.encode_fast(doc)
                    docs.append((stage, partition, result, doc, value))
                    sends.append(Send(output_topic, partition, result.subject.encode(), value))
                    lines += lines_of(doc)
                    keys.setdefault((topic, partition), set()).add((result.subject, result.period))
        alarms = self._evaluate_alarms([(s, p, d) for s, p, _, d, _ in docs] + restores)
        sends += [Send(records.ALARMS, partition, alarm.key.encode(), alarm.to_json()) for partition, alarm in alarms]
        lines += [text for stage, _, doc in restores for text in stage.lines(doc)]
        involved = {o.tokens[0][0] for o in outcomes if o.results or o.rejected}
        state = _Written(docs, alarms, letters, [t for o in outcomes for t in o.tokens], involved, keys)
        return Output(lines, sends, state)

    def _finish_written(self) -> None:
        """Wait for the output in flight; then remember its results and let its records' offsets move."""
        output = self._writer.wait()
        if output is None:
            return
        done: _Written = output.state
        for kind, n in output.errors.items():
            for _ in range(n):
                self._count_error(kind, done.involved)
        self.metrics.records_out.labels(COMPONENT, records.ALARMS).inc(len(done.alarms))
        for _, alarm in done.alarms:
            log.warning("alarm raised" if alarm.raised else "alarm cleared",
                        extra={"kind": alarm.kind, "subject": alarm.subject, "direction": alarm.direction,
                               "period": alarm.period, "value": alarm.value, "threshold": alarm.threshold})
        self.stats["deadletters"] += len(done.letters)
        for topic in done.letters:
            self.metrics.deadletters.labels(COMPONENT, topic).inc()
            self.metrics.records_out.labels(COMPONENT, records.DEADLETTER).inc()
            if self.health:
                self.health.count(topic, "deadletters")
        per_stage: dict[Stage, list[float]] = {}
        info = log.isEnabledFor(logging.INFO)
        for stage, partition, result, doc, value in done.docs:
            self._ledgers[stage.input_topic].add(partition, doc, value)
            end_s = (result.period + 1) * result.period_s  # the period's end, Unix seconds
            per_stage.setdefault(stage, []).append(max(0.0, output.done_s - end_s))
            self.stats["incomplete"] += getattr(result, "complete", True) is False
            if info:
                log.info("result", extra={"topic": stage.output_topic, "subject": result.subject,
                                          "period": result.period})
        for stage, latencies in per_stage.items():
            self.stats["results"] += len(latencies)
            self.metrics.records_out.labels(COMPONENT, stage.output_topic).inc(len(latencies))
            metrics_mod.observe_all(self.metrics.period_latency.labels(COMPONENT, stage.output_topic), latencies)
            if self.health:
                self.health.count(stage.input_topic, "records_out", len(latencies))
        finished = self._tracker.finished
        for topic, partition, offset in done.tokens:
            finished((topic, partition), offset)
        for tp, written in done.keys.items():
            self._closed[tp] -= written

    def _evaluate_alarms(self, results: list[tuple[Stage, int, dict]]) -> list[tuple[int, records.Alarm]]:
        """(partition, alarm) for each alarm state the results change, evaluated in period order."""
        out = []
        for stage, partition, doc in sorted(results, key=lambda r: r[2]["period"]):
            alarm = self._alarms[stage.input_topic].evaluate(partition, doc)
            if alarm is not None:
                out.append((partition, alarm))
        return out

    def _count_error(self, kind: str, topics: set[str]) -> None:
        self.metrics.errors.labels(COMPONENT, kind).inc()
        if self.health:
            for topic in topics:
                self.health.count(topic, "errors")

    # -- health --------------------------------------------------------------

    def _lag(self) -> dict[str, int]:
        """Per input topic: records on the assigned partitions not yet consumed (also sets the lag gauges)."""
        assigned = sorted(self._consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        if not assigned:
            return {}
        ends = self._consumer.end_offsets(assigned)
        lag: dict[str, int] = {}
        for tp in assigned:
            behind = max(0, ends[tp] - self._consumer.position(tp))
            lag[tp.topic] = lag.get(tp.topic, 0) + behind
            self.metrics.consumer_lag.labels(COMPONENT, tp.topic, str(tp.partition)).set(behind)
            self._lag_partitions.add((tp.topic, tp.partition))
        return lag

    def _safe_lag(self) -> dict[str, int]:
        try:
            return self._lag()
        except Exception as exc:  # a broker hiccup must not stop processing; the point goes without lag
            log.warning("consumer lag unknown", extra={"error": str(exc)})
            return {}

    def _write_health(self) -> None:
        lag = self._safe_lag()
        now = time.time()
        try:
            self._health_store.write(self.health.points(now, lag))
        except StoreError as exc:
            self.metrics.errors.labels(COMPONENT, "health").inc()
            log.warning("health write failed; its counts go with the next one", extra={"error": str(exc)})
            return
        self.health.written(now)

    def _commit(self) -> None:
        offsets = {tp: o for tp, o in self._tracker.committable().items() if self._committed.get(tp) != o}
        if not offsets:
            return
        self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        self._committed.update(offsets)

    def close(self) -> None:
        try:
            self._finish_written()
            self._commit()
        except Exception as exc:  # what was not committed is re-read by the next owner
            log.warning("output in flight not written or not committed", extra={"error": str(exc)})
        self._writer.close()
        if self.health:  # the counts since the last health point, without lag (the broker may be gone)
            try:
                now = time.time()
                self._health_store.write(self.health.points(now))
                self.health.written(now)
            except StoreError as exc:
                log.debug("last health write failed", extra={"error": str(exc)})
        for closer in (self._consumer.close, self._ledger_reader.close, self._publisher.close, self._store.close,
                       self._health_store.close):
            try:
                closer()
            except Exception as exc:  # closing must not hide the reason we are closing
                log.debug("error while closing", extra={"error": str(exc)})
