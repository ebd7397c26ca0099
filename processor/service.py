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
3. waits until the writer has room (two outputs in flight: one being stored,
   the one before it being published; see ``writer``), finishes every output
   that is stored in InfluxDB and then published (acknowledged by the
   brokers), oldest first, which the writer did in the background while this
   batch was processed: only then marks their records finished and commits
   the offsets that :class:`~srv6pm.processor.offsets.OffsetTracker` allows;
4. hands this batch's output to the writer.

While InfluxDB or the brokers are away the outputs in flight cannot be
finished: once the oldest output in flight is not done ``hold_after_s`` after
it was handed over (with the writer full: after waiting that long for it) the
loop *holds* — it pauses every assigned
partition and goes on polling (so the member keeps its place in the group and
takes part in rebalances), keeps the batch it made, and stops the stages'
clock (a pairing wait does not run out while nothing can be read); once the
writer is done it finishes that output, commits, hands the kept one over and
resumes the partitions, where it stopped. The wait is said once in the logs
and in ``srv6pm_waiting`` (``srv6pm.waiting``), not once per retry.

Rebalances (kafka-python 3's asynchronous listener, on its IO thread, inside
``poll``): a revoked or lost partition's lines and records are withdrawn from
the outputs in flight and the one kept (``writer``), its state dropped; nothing
of it is stored or published by this member any more, and the next owner
re-reads its uncommitted records. Newly assigned partitions stay paused until
the loop, on its own thread, has read their ledgers (retried while the
brokers are away) and set them back to their last commit (also a partition
this member keeps: its unfinished work was dropped with the revocation). Commits happen only on the loop's thread, with a timeout;
a failed commit is tried again with the next one.

A record re-read after a restart whose result the ledger already holds is
not published again; its results are re-written to InfluxDB (idempotent).
A record whose result was made earlier in the same batch or is still being
written (a late or repeated block) is finished as it is.

The loop's mechanics (poll, back-off, hold, rebalance listener, commit) are
the shared :class:`srv6pm.consume.ConsumeLoop`; what the processor keeps per
input partition is one :class:`~srv6pm.processor.partitions.PartitionState`,
cleared in one place when partitions go.

Self-monitoring: the loop tells one :class:`~srv6pm.processor.sensor.Sensor`
what it does, once per event and batch; behind it are the ``stats`` dict,
Prometheus metrics (``srv6pm.metrics``, label ``component="processor"``) and,
every ``health_interval_s``, the ``pipeline`` and ``exporter`` measurements
(``health``) written to the same InfluxDB. A failed health write is
logged and retried with the next one; it never holds up results.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, groupby, islice, repeat
from operator import attrgetter, is_, itemgetter, le
from typing import cast

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from srv6pm import metrics as metrics_mod
from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.consume import COMMIT_TIMEOUT_MS, COMMITTED, ConsumeLoop, Rebalance, io_sleep
from srv6pm.influx import InfluxWriter, StoreError
from srv6pm.kafka import CONSUMER_LIMITS, MAX_REQUEST_BYTES, group_consumer
from srv6pm.waiting import Waiting
from srv6pm.publish import Publisher, Send

from . import fetch
from .alarms import AlarmRules, Alarms
from .health import Health
from .ledger import Ledger
from .outcome import Outcome
from .partitions import PartitionState
from .sensor import HealthPoints, Prometheus, Sensors, Stats
from .stages import DelayStage, LossStage, Stage
from .writer import Output, Writer, result_letters

__all__ = ["BUSY_POLL_MS", "Processor", "ProcessorOptions", "tune_gc"]

log = logging.getLogger("srv6pm.processor")

COMPONENT = "processor"
LAG_INTERVAL_S = 10.0  # how often the lag gauges are refreshed when no health points are written
LAG_TIMEOUT_MS = 2_000  # end offsets for the lag: given up after this long (the point goes without lag)
BUSY_POLL_MS = 20  # the poll's longest wait while outputs are in flight
REVOKE_GRACE_S = 2.0  # a revocation first waits this long for the outputs in flight to be written

# The token the processor gives each record it hands a stage (stages treat tokens as opaque).
MessageToken = tuple[str, int, int]  # (topic, partition, offset)
Partition = tuple[str, int]  # (topic, partition): what the offset tracker is given

_new_send = partial(tuple.__new__, Send)  # Send is a NamedTuple: its own __new__ is a Python function
_partition_of = itemgetter(0, 1)  # of a MessageToken
_offset_of = itemgetter(2)
_period_of = attrgetter("period", "period_s")  # of a result
_offset_attr, _value_attr, _timestamp_attr = attrgetter("offset"), attrgetter("value"), attrgetter("timestamp")  # of a
# ConsumerRecord


def tune_gc() -> None:
    """Fewer collections of the young generation, for a process that runs a processor.

    A processor allocates some fifteen tracked objects per flow-period and keeps them until the
    batch's output is written: with a batch of 10,000 records and one in flight, about 170,000
    live at a time, and tens of thousands more (pending blocks, alarm states) for longer. With
    Python's default threshold (700) the collector runs several thousand times a second; with a
    threshold below a batch's objects it still runs a few times per batch, each time walking the
    whole batch (up to a fifth of the loop's time, measured with ``bench/processor.py``). Collecting
    every 100,000 net allocations lets a batch's objects be freed before most collections (and
    leaves start-up's objects out of them); it costs some memory, not time. Process-wide: the
    command line calls it, a library user may.
    """
    gc.freeze()
    gc.set_threshold(100_000, 20, 20)


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
    hold_after_s: float = 1.0  # the oldest output in flight not written after this long: pause the input and wait
    health_interval_s: float | None = 10.0  # None: no health points in InfluxDB
    alarms: AlarmRules = field(default_factory=AlarmRules)


@dataclass
class _Written:
    """The loop's part of an output in flight: what to finish once it is stored and published."""

    docs: list  # (stage, partition, results, their records, their JSON, their (subject, period)s): a run each
    alarms: list  # (input topic, partition, alarm)
    letters: list[tuple[str, int]]  # input (topic, partition) of each dead letter
    tokens: list  # every record the output finishes
    involved: set[str]  # input topics with results or dead letters
    keys: dict  # (input topic, partition) -> {(subject, period)} of the results
    restores: list = field(default_factory=list)  # (stage, partition, result) re-written from the ledger


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
            max_poll_records=o.max_records, listener=Rebalance(self._revoked, self._assigned),
        )
        self._ledger_reader = KafkaConsumer(**{**CONSUMER_LIMITS, **client}, group_id=None,
                                            client_id=f"{o.client_id}-ledger", enable_auto_commit=False)
        fetch.install(self._consumer)
        self._publisher = Publisher(client, o.client_id, max_batch_bytes=MAX_REQUEST_BYTES // 2)
        self._store = InfluxWriter(influx)
        self._health_store = InfluxWriter(influx)
        self._health_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srv6pm-health")
        self._health_job: tuple[Future, float] | None = None  # (write under way, its time)
        self._ledgers = {t: Ledger(s.output_topic, s.subject_field, o.ledger_records) for t, s in self.stages.items()}
        self._alarms = {t: Alarms(o.alarms, s.alarm_kinds, o.ledger_records) for t, s in self.stages.items()}
        self._partitions = PartitionState(self.stages, self._ledgers, self._alarms)
        self._stop = threading.Event()
        self.metrics = metrics or metrics_mod.get()
        self.waiting = Waiting(COMPONENT, log, self.metrics)
        self._loop = ConsumeLoop(self._consumer, self.waiting, log, poll_ms=o.poll_ms, retry_max_s=o.retry_max_s,
                                 stopping=self._stop)
        self._writer = Writer(self._store, self._publisher, self._stop, o.retry_max_s, self.waiting, self.metrics)
        self._held: Output | None = None  # the batch made while holding (see the module docstring)
        self._holding_since: float | None = None  # monotonic start of the hold
        self._held_s = 0.0  # seconds held so far: the stages' clock stands still meanwhile
        self._ledger_retry_at = 0.0
        self._ledger_delay = 0.2
        self.health = (Health(o.client_id, tuple(self.stages), o.health_interval_s)
                       if o.health_interval_s else None)
        stats = Stats()
        self.stats = stats.counts
        self.sensor = Sensors([stats, Prometheus(self.metrics, COMPONENT)]
                              + ([HealthPoints(self.health)] if self.health else []))
        self._lag_due_s = 0.0

    @property
    def _unloaded(self) -> set[tuple[str, int]]:
        """Assigned partitions still paused until their ledger is read."""
        return self._partitions.unloaded

    # -- rebalancing ---------------------------------------------------------

    def _assigned(self, partitions: list[tuple[str, int]]) -> None:
        """Listener callback: the partitions stay paused until the loop has read their ledgers."""
        fresh = [tp for tp in partitions if tp[0] in self._ledgers]
        self._partitions.unloaded.update(fresh)
        self._ledger_retry_at = 0.0
        self._consumer.pause(*(TopicPartition(t, p) for t, p in fresh))

    def _load_ledgers(self) -> None:
        """On the loop's thread: read the ledgers (and alarm states) of newly assigned partitions, then resume them.

        While the brokers cannot give the tails the partitions stay paused (processing without the ledger
        could publish a result twice); loading is retried with capped backoff.
        """
        if not self._unloaded or time.monotonic() < self._ledger_retry_at:
            return
        for topic, ledger in self._ledgers.items():
            mine = sorted(p for t, p in self._unloaded if t == topic)
            if not mine:
                continue
            alarms = self._alarms[topic]
            try:
                self._rewind(topic, mine)
                loaded = ledger.load(self._ledger_reader, mine)
                states = alarms.load(self._ledger_reader, mine) if alarms.enabled else 0
            except (KafkaError, TimeoutError, OSError) as exc:
                self.waiting.failed("kafka_ledger", exc)
                self._ledger_retry_at = time.monotonic() + self._ledger_delay
                self._ledger_delay = min(self._ledger_delay * 2, self.options.retry_max_s)
                return
            log.info("partitions assigned", extra={"topic": topic, "partitions": mine, "ledger_results": loaded,
                                                   "alarms": states})
            done = {(topic, p) for p in mine}
            self._partitions.unloaded -= done
            if self._holding_since is None:
                self._consumer.resume(*(TopicPartition(t, p) for t, p in sorted(done)))
        self.waiting.ok("kafka_ledger")
        self._ledger_delay = 0.2

    def _rewind(self, topic: str, partitions: list[int]) -> None:
        """Read the partitions from their last committed offset (the earliest record without one).

        A partition assigned to this member again keeps kafka-python 3's position, but its unfinished work
        was dropped when it was revoked: like any next owner, this member reads it again from the commit.
        """
        for p in partitions:
            tp = TopicPartition(topic, p)
            offset = self._consumer.committed(tp, timeout_ms=COMMIT_TIMEOUT_MS)
            if offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)

    async def _revoked(self, partitions: list[tuple[str, int]], lost: bool = False) -> None:
        """Listener callback (on kafka-python's IO thread, while the loop waits in ``poll``).

        The outputs in flight are given ``REVOKE_GRACE_S`` to be written; those that are are finished here as
        the loop would have. The partitions' lines and records are withdrawn from the others (and from the
        batch held, if any), waiting for an attempt under way to end: once this returns, this member stores
        and publishes nothing more of theirs, so their next owner, which re-reads their uncommitted records
        and the ledger's tail, makes each result once. Nothing is committed here: commits are the loop's.
        """
        gone = set(partitions)
        deadline = time.monotonic() + (0.0 if lost else REVOKE_GRACE_S)
        while not self._writer.all_done and time.monotonic() < deadline:
            await io_sleep(0.02)
        if self._writer.done and self._held is None:
            try:
                self._finish_written()
            except Exception as exc:  # stopping: what it held is re-read by the next owner
                log.warning("output in flight not written", extra={"error": str(exc)})
        while not self._writer.withdraw(gone):
            await io_sleep(0.02)
        if self._held is not None:
            self._held.withdrawn.update(gone)
        self._partitions.forget(partitions)
        self.sensor.gone(partitions)
        log.info("partitions lost" if lost else "partitions revoked", extra={"partitions": partitions})

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        """Process until :meth:`stop` is called (from a signal handler or another thread)."""
        self._loop.run(self.step, self.close)

    def stop(self) -> None:
        self._loop.stop()

    def step(self) -> None:
        """One iteration: poll and process a batch; finish the previous output; commit; hand this one over.

        While holding (see the module docstring) it only polls the paused partitions and checks whether the
        oldest output in flight is written.
        """
        self._load_ledgers()
        if self._holding_since is not None:
            self._loop.poll()  # none while paused; any that come are read again later
            if self._writer.busy and not self._writer.done:
                self._housekeeping()
                return
            self._release()
            self._housekeeping()
            return
        # While outputs are in flight, a short poll: one the writer finishes meanwhile is finished (and its
        # offsets committed) within BUSY_POLL_MS, not after a whole poll_ms of an idle topic.
        batch = self._loop.poll(min(self.options.poll_ms, BUSY_POLL_MS) if self._writer.busy else None)
        now, now_ns = self._stage_clock(), time.time_ns()
        outcomes: list[Outcome] = []
        restores: list[tuple[Stage, int, dict]] = []
        for tp, messages in batch.items():
            self._take(tp, messages, now, now_ns, outcomes, restores)
        for stage in self.stages.values():
            outcomes.extend(stage.expire(now))
        output = self._output(outcomes, restores) if outcomes else None
        if not self._writer.settle(self.options.hold_after_s):
            self._hold(output)
            return
        self._finish_written()
        self._commit()
        if output is not None:
            self._writer.submit(output)
        self._housekeeping()

    def _housekeeping(self) -> None:
        """Health points (written in the background, see :meth:`_health_step`) or lag gauges, when due."""
        now_s = time.time()
        if self.health is not None:
            self._health_step()
        elif now_s >= self._lag_due_s:  # no health points: the lag gauges are still kept current
            self._lag_due_s = now_s + LAG_INTERVAL_S
            self._safe_lag()

    def _stage_clock(self) -> float:
        """The stages' clock: monotonic seconds, standing still while the loop holds."""
        return time.monotonic() - self._held_s

    def _hold(self, output: Output | None) -> None:
        """The oldest output in flight is not written in time: keep ``output``, pause the input, stop the stages'
        clock."""
        self._held = output
        self._holding_since = time.monotonic()
        self.sensor.hold()
        self._loop.hold()
        log.warning("input paused until the results in flight are written",
                    extra={"waiting_for": self._writer.phase, "failing": sorted(self.waiting.now())})

    def _release(self) -> None:
        """The oldest output in flight is written: finish it (and any after it that are), commit, hand the held one
        over, resume the input."""
        assert self._holding_since is not None, "released only while holding (_hold set it)"
        held_s = time.monotonic() - self._holding_since
        self._held_s += held_s
        self.sensor.held(held_s)
        self._holding_since = None
        held, self._held = self._held, None
        self._finish_written()
        self._commit()
        if held is not None:
            self._writer.submit(held)
        self._loop.release(self._partitions.unloaded)
        log.warning("input resumed", extra={"held_s": round(held_s, 3)})

    def _take(self, tp, messages, now: float, now_ns: int, outcomes: list[Outcome], restores: list) -> None:
        """Decode the records of one partition and give them to its stage (``now_ns``: the batch's wall clock).

        A run at a time: the stage decodes and checks the whole run (:meth:`Stage.decode_all`), then takes
        the records it accepted (:meth:`Stage.take`), which finishes as they are those whose result is
        made already (in this batch, being written, or in the ledger: then stored again).
        """
        topic, partition = tp.topic, tp.partition
        stage = self.stages[topic]
        state = self._partitions
        self.sensor.consumed(topic, len(messages))
        offsets = list(map(_offset_attr, messages))
        state.tracker.seen_all((topic, partition), offsets)
        tokens: list = list(zip(repeat(topic), repeat(partition), offsets))  # MessageTokens
        raws = list(map(_value_attr, messages))
        try:
            decoded, reasons = stage.decode_all(raws, now_ns)
        except Exception as exc:  # noqa: BLE001  # the run's decoder failed as a whole: record by record
            log.debug("run decoded record by record", extra={"topic": topic, "error": repr(exc)})
            decoded, reasons = Stage.decode_all(stage, raws, now_ns)
        times = list(map(_timestamp_attr, messages))
        if reasons:
            for i, reason in reasons.items():
                self._reject(tokens[i], messages[i], reason, outcomes)
            kept = [i for i in range(len(decoded)) if i not in reasons]
            decoded, tokens, times = [decoded[i] for i in kept], [tokens[i] for i in kept], [times[i] for i in kept]
        if decoded:
            self._seen_nodes(stage, decoded, times)
        taken, restored, replayed = stage.take(decoded, tokens, now, state.closed_of((topic, partition)),
                                               self._ledgers[topic].partition(partition))
        for outcome in taken:
            if outcome.rejected:
                at = {m.offset: m for m in messages}
                for token in outcome.rejected:
                    m = at.get(cast(MessageToken, token)[2])
                    state.raw[token] = (m.key, m.value) if m is not None else (None, None)
        outcomes += taken
        if restored:
            restores += [(stage, partition, doc) for held in restored for doc in Ledger.decoded(held)]
        if replayed:
            self.sensor.replayed(replayed)

    def _seen_nodes(self, stage: Stage, decoded: list, times: list) -> None:
        """Tell the sensor the records per node of a run and each node's newest Kafka timestamp."""
        nodes = list(map(attrgetter(stage.node_field), decoded))
        counts = Counter(nodes)
        for absent in ("", None):
            counts.pop(absent, None)
        if not counts:
            return
        newest: dict[str, int] = {}
        try:
            ordered = all(map(le, times, islice(times, 1, None)))
        except TypeError:  # a record without a timestamp (None)
            ordered = False
        if ordered:  # each node's newest timestamp is its last one
            newest = {node: ts for node, ts in dict(zip(nodes, times, strict=True)).items() if ts and ts > 0}
        else:
            for node, ts in zip(nodes, times, strict=True):
                if node and ts and ts > 0 and ts > newest.get(node, 0):
                    newest[node] = ts
        self.sensor.nodes({node: (n, newest[node] / 1000 if node in newest else None) for node, n in counts.items()})

    def _reject(self, token, message, reason: str, outcomes: list[Outcome]) -> None:
        self._partitions.raw[token] = (message.key, message.value)
        outcomes.append(Outcome([token], rejected={token: reason}))

    def _output(self, outcomes: list[Outcome], restores: list[tuple[Stage, int, dict]]) -> Output:
        """Everything the outcomes write: lines of results (and of re-read ones), results, alarms, dead letters.

        The results of an outcome are made into records, JSON, sends and lines together (a run of a
        partition's results is one outcome, see :meth:`Stage.take`).
        """
        sends: list[Send] = []
        send_origins: list[tuple[str, int]] = []
        runs: list[tuple] = []
        lines: list[str] = []
        line_origins: list[tuple[str, int]] = []
        keys: dict[tuple[str, int], set[tuple]] = {}
        letters: list[tuple[str, int]] = []  # input (topic, partition) of each dead letter
        encode_all = records.encode_fast_all
        for outcome in outcomes:
            for token, reason in outcome.rejected.items():
                key, raw = self._partitions.raw.pop(token, (None, None))
                topic, partition, offset = cast(MessageToken, token)
                letter = records.dead_letter(topic, partition, offset, reason, raw, self.options.group)
                sends.append(Send(records.DEADLETTER, None, records.dead_letter_key(key), records.encode(letter)))
                send_origins.append((topic, partition))
                letters.append((topic, partition))
                log.warning("record dead-lettered", extra={"topic": topic, "partition": partition,
                                                           "offset": offset, "reason": reason})
            results = outcome.results
            if not results:
                continue
            topic, partition, _ = cast(MessageToken, outcome.tokens[0])
            origin = (topic, partition)
            stage = self.stages[topic]
            docs = [result.to_dict() for result in results]
            values = encode_all(docs)
            subjects = list(map(itemgetter(stage.subject_field), docs))
            made = list(zip(subjects, map(itemgetter("period"), docs), strict=True))
            runs.append((stage, partition, results, docs, values, made))
            sends += map(_new_send, zip(repeat(stage.output_topic), repeat(partition),
                                        map(str.encode, subjects), values))
            send_origins += [origin] * len(results)
            texts = stage.lines_all(docs)
            lines += texts
            line_origins += [origin] * len(texts)
            closing = keys.get(origin)
            if closing is None:
                closing = keys[origin] = set()
            closing.update(made)
        alarms = self._evaluate_alarms(runs, restores)
        for topic, partition, alarm in alarms:
            sends.append(Send(records.ALARMS, partition, alarm.key.encode(), alarm.to_json()))
            send_origins.append((topic, partition))
        for stage, partition, doc in restores:
            texts = stage.lines(doc)
            lines += texts
            line_origins += [(stage.input_topic, partition)] * len(texts)
        involved = {cast(MessageToken, o.tokens[0])[0] for o in outcomes if o.results or o.rejected}
        tokens = list(chain.from_iterable(o.tokens for o in outcomes))
        state = _Written(runs, alarms, letters, tokens, involved, keys, restores)
        return Output(lines, sends, state, line_origins=line_origins, send_origins=send_origins,
                      letters=self._refused_letters)

    def _refused_letters(self, done: _Written, refused: dict[int, str],
                         lines: list[str]) -> list[tuple[Send, tuple[str, int]]]:
        """In the writer's thread: the dead letters of the results whose points InfluxDB refused (the results
        in the order of their lines: the runs', then the re-written ones')."""
        results = [(stage, partition, doc, value) for stage, partition, _, docs, values, _ in done.docs
                   for doc, value in zip(docs, values, strict=True)]
        results += [(stage, partition, doc, None) for stage, partition, doc in done.restores]
        return result_letters(refused, lines, results, done.tokens, self.options.group)

    def _finish_written(self, block: bool = False) -> None:
        """Finish the outputs in flight that are written, oldest first (with ``block``, wait for all of them)."""
        writer = self._writer
        while writer.busy and (block or writer.done):
            output = writer.wait()
            assert output is not None, "busy: an output is in flight"
            self._finish(output)

    def _finish(self, output: Output) -> None:
        """Remember the results of a written ``output`` and let its records' offsets move."""
        done: _Written = output.state
        gone = output.withdrawn  # origins revoked meanwhile: their next owner makes and finishes these
        for kind, n in output.errors.items():
            for _ in range(n):
                self.sensor.error(kind, done.involved)
        alarms = [a for t, p, a in done.alarms if (t, p) not in gone]
        self.sensor.alarms(len(alarms))
        for alarm in alarms:
            log.warning("alarm raised" if alarm.raised else "alarm cleared",
                        extra={"kind": alarm.kind, "subject": alarm.subject, "direction": alarm.direction,
                               "period": alarm.period, "value": alarm.value, "threshold": alarm.threshold})
        letters: dict[str, int] = {}
        for topic, partition in done.letters + output.lettered:  # input records, then results InfluxDB refused
            if (topic, partition) not in gone:
                letters[topic] = letters.get(topic, 0) + 1
        for topic, n in letters.items():
            self.sensor.deadlettered(topic, n)
        per_stage: dict[Stage, list[float]] = {}
        incomplete: dict[Stage, int] = {}
        info = log.isEnabledFor(logging.INFO)
        done_s = output.done_s
        assert done_s is not None, "the writer sets done_s once the output is stored and published"
        for stage, partition, results, docs, values, made in done.docs:
            if gone and (stage.input_topic, partition) in gone:
                continue
            self._ledgers[stage.input_topic].add_all(partition, made, values)
            latencies = per_stage.setdefault(stage, [])
            for (period, period_s), n in Counter(map(_period_of, results)).items():
                latencies += [max(0.0, done_s - (period + 1) * period_s)] * n  # from the period's end, Unix s
            incomplete[stage] = incomplete.get(stage, 0) + sum(
                map(is_, map(dict.get, docs, repeat("complete"), repeat(True)), repeat(False)))
            if info:
                for result in results:
                    log.info("result", extra={"topic": stage.output_topic, "subject": result.subject,
                                              "period": result.period})
        for stage, latencies in per_stage.items():
            self.sensor.results((stage.input_topic, stage.output_topic), latencies, incomplete.get(stage, 0))
        finished = self._partitions.tracker.finished_all
        for tp, tokens in groupby(done.tokens, key=_partition_of):
            finished(tp, map(_offset_of, tokens))  # a forgotten (revoked) partition ignores them
        closed = self._partitions.closed
        for tp, written in done.keys.items():
            if tp in closed:
                closed[tp] -= written

    def _evaluate_alarms(self, runs: list[tuple], restores: list[tuple[Stage, int, dict]]
                         ) -> list[tuple[str, int, records.Alarm]]:
        """(input topic, partition, alarm) for each alarm state the results change, evaluated in period order
        (per input partition: the states are a partition's)."""
        grouped: dict[tuple[Stage, int], list[dict]] = {}
        for stage, partition, _, docs, _, _ in runs:
            grouped.setdefault((stage, partition), []).extend(docs)
        for stage, partition, doc in restores:
            grouped.setdefault((stage, partition), []).append(doc)
        out = []
        for (stage, partition), docs in grouped.items():
            alarms = self._alarms[stage.input_topic]
            if alarms.enabled:
                out += [(stage.input_topic, partition, alarm) for alarm in alarms.evaluate_all(partition, docs)]
        return out

    # -- health --------------------------------------------------------------

    def _lag(self) -> dict[str, int]:
        """Per input topic: records on the assigned partitions not yet consumed (also sets the lag gauges)."""
        assigned = sorted(self._consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        if not assigned:
            return {}
        ends = self._consumer.end_offsets(assigned, timeout_ms=LAG_TIMEOUT_MS)
        lag: dict[str, int] = {}
        for tp in assigned:
            behind = max(0, ends[tp] - self._consumer.position(tp))
            lag[tp.topic] = lag.get(tp.topic, 0) + behind
            self.sensor.lag(tp.topic, tp.partition, behind)
        return lag

    def _safe_lag(self) -> dict[str, int]:
        try:
            return self._lag()
        except Exception as exc:  # a broker hiccup must not stop processing; the point goes without lag
            log.warning("consumer lag unknown", extra={"error": str(exc)})
            return {}

    def _health_step(self) -> None:
        """Collect the health write under way, if it ended; start the next one when due.

        The write itself runs in a thread of its own (one at a time), so that InfluxDB being slow or away
        never holds up the loop's polls; the counts are kept for the next write until one succeeds.
        """
        assert self.health is not None, "called only when health points are configured"
        if self._health_job is not None:
            future, at = self._health_job
            if not future.done():
                return
            self._health_job = None
            try:
                future.result()
            except StoreError as exc:
                self.sensor.error("health", ())
                self.waiting.failed("influxdb_health", exc)
            else:
                self.waiting.ok("influxdb_health")
                self.health.written(at)
        now = time.time()
        if self.health.due(now):
            points = self.health.points(now, self._safe_lag())
            self._health_job = (self._health_pool.submit(self._health_store.write, points), now)

    def _commit(self) -> None:
        """Commit what the tracker allows, on the loop's thread; a failure leaves it for the next commit."""
        state = self._partitions
        committable = cast(dict[Partition, int], state.tracker.committable())  # it is given (topic, partition)s
        offsets = {tp: o for tp, o in committable.items() if state.committed.get(tp) != o}
        if offsets and self._loop.commit(offsets) == COMMITTED:
            state.committed.update(offsets)

    def close(self) -> None:
        try:
            self._finish_written(block=True)
            self._commit()
        except Exception as exc:  # what was not committed is re-read by the next owner
            log.warning("output in flight not written or not committed", extra={"error": str(exc)})
        self._writer.close()
        if self.health:  # the counts since the last health point, without lag (the broker may be gone)
            try:
                if self._health_job is not None:  # the write under way first, so that nothing is counted twice
                    future, at = self._health_job
                    self._health_job = None
                    future.result()
                    self.health.written(at)
                now = time.time()
                self._health_store.write(self.health.points(now))
                self.health.written(now)
            except StoreError as exc:
                log.debug("last health write failed", extra={"error": str(exc)})
        self._health_pool.shutdown(wait=True)
        for closer in (self._consumer.close, self._ledger_reader.close, self._publisher.close, self._store.close,
                       self._health_store.close):
            try:
                closer()
            except Exception as exc:  # closing must not hide the reason we are closing
                log.debug("error while closing", extra={"error": str(exc)})
