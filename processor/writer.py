"""The output of one loop iteration on its way out, in the background: stored in InfluxDB, then published.

The processor's loop hands each iteration's :class:`Output` (InfluxDB lines,
then the Kafka records: results, the alarms they change, dead letters) to a
:class:`Writer` and goes on with the next batch while the writer waits for
InfluxDB and the brokers. The writer is a pipeline of two threads: one stores
outputs in InfluxDB, one publishes them, each in the order they were submitted,
so an output is published while the next one is stored. At most ``depth``
outputs are in flight (:data:`DEPTH`, two: one per thread):
:meth:`Writer.submit` requires room, and :meth:`Writer.wait` returns the oldest
once it is done, so the loop finishes its records (ledger, offsets, commit) in
order and strictly after their results are stored and published.

Order within an output: the lines first, retried until InfluxDB has taken
each of them or refused it as data (below), then the records (with the dead
letters of refused lines), sending again only those not acknowledged, until
all are. So a result on ``srv6pm.loss`` or ``srv6pm.delay`` is already in
InfluxDB, or InfluxDB refused its point and its dead letter is published
with it. A crash between the two leaves results stored but not published:
their records are re-read (nothing was committed) and give the same results,
which are then published once; InfluxDB takes the same points again
(idempotent). While the processor is stopping a failed attempt is not
retried: :meth:`Writer.wait` raises, and the records are re-read by the next
owner of their partitions.

What a failed store calls for is the :class:`~srv6pm.influx.StoreError`'s ``kind``:

* ``transient`` (InfluxDB away, a timeout, 5xx, 429): retried with capped
  back-off (at least InfluxDB's Retry-After), as long as it takes;
* ``config`` (401, 403, an unknown bucket or database, ...): retried the same
  way, since nothing is lost while the output waits, and said as an error
  naming the cause and the setting to fix, at once and then every
  :data:`CONFIG_LOG_INTERVAL_S` while it lasts; the gauge
  ``srv6pm_store_misconfigured{cause}`` is 1 meanwhile;
* ``data`` (400, 413, 422): the lines are split in halves, and the halves
  again, until every line is stored or refused alone (or all the lines of a
  request are refused, as a partial write's ``dropped`` count can say). The
  refused lines go to the output's ``letters`` (the dead letters of their
  results, published with the output's records); the others are stored. A
  partial write of 1.x already stored the good points of a refused request:
  writing them again changes nothing. An output without ``letters`` is
  retried instead, as for ``config``: nothing is dropped that cannot be
  dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any

from srv6pm import metrics as metrics_mod
from srv6pm import records
from srv6pm.influx import CONFIG_LOG_INTERVAL_S, InfluxWriter, Refusals, Split, StoreError
from srv6pm.publish import Publisher, Send
from srv6pm.quote import shorten
from srv6pm.waiting import Waiting

__all__ = ["CONFIG_LOG_INTERVAL_S", "DEPTH", "Output", "Writer", "result_letters"]

log = logging.getLogger("srv6pm.processor")

Origin = tuple[str, int]  # input (topic, partition)

DEPTH = 2  # outputs in flight: one being stored while the one before it is published


@dataclass
class Output:
    """What one iteration writes. ``state`` is the loop's own, handed back untouched by :meth:`Writer.wait`.

    ``line_origins`` and ``send_origins`` give the origin of each line and each send (same lengths);
    ``withdrawn`` collects the origins taken out with :meth:`Writer.withdraw` (or by the loop, for an
    output not yet submitted).
    """

    lines: list[str]
    sends: list[Send]
    state: Any = None
    line_origins: list[Origin] = field(default_factory=list)
    send_origins: list[Origin] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # failed attempts by kind ("store", "publish")
    done_s: float | None = None  # wall-clock time when stored and published
    withdrawn: set[Origin] = field(default_factory=set)
    # The dead letters of refused lines: called with ``state``, {line index: reason} and ``lines``, in the
    # writer's thread, it returns each letter to publish with its origin. None: refused lines are retried.
    letters: Callable[[Any, dict[int, str], list[str]], list[tuple[Send, Origin]]] | None = None
    refused: dict[int, str] = field(default_factory=dict)  # lines InfluxDB refused (index into lines -> reason)
    lettered: list[Origin] = field(default_factory=list)  # the origin of each dead letter ``letters`` made
    phase: str | None = None  # what it waits for once submitted: "influxdb", "kafka", or None once done

    def __post_init__(self):
        if len(self.line_origins) != len(self.lines) or len(self.send_origins) != len(self.sends):
            raise ValueError("every line and every send needs its origin")


class Writer:
    """Stores and publishes up to ``depth`` :class:`Output` values at a time, in order, in two threads of its own
    (see the module docstring)."""

    def __init__(self, store: InfluxWriter, publisher: Publisher, stopping: threading.Event, retry_max_s: float,
                 waiting: Waiting, metrics: metrics_mod.Metrics | None = None, depth: int = DEPTH):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._store = store
        self._metrics = metrics or metrics_mod.get()
        self._refusals = Refusals(waiting, "influxdb", log, self._metrics)
        self._publisher = publisher
        self._stopping = stopping
        self._retry_max_s = retry_max_s
        self._waiting = waiting
        self._depth = depth
        self._storing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srv6pm-writer-store")
        self._publishing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srv6pm-writer-publish")
        self._in_flight: deque[tuple[Output, Future, float]] = deque()  # oldest first, with time.monotonic()
        # when submitted
        self._lock = threading.Lock()  # guards Output.withdrawn and _attempt
        # Origins of the attempt under way, by thread ("store", "publish").
        self._attempt: dict[str, set[Origin]] = {"store": set(), "publish": set()}

    @property
    def busy(self) -> bool:
        """True while an output is in flight."""
        return bool(self._in_flight)

    @property
    def full(self) -> bool:
        """True when ``depth`` outputs are in flight: :meth:`submit` needs the oldest collected first."""
        return len(self._in_flight) >= self._depth

    @property
    def done(self) -> bool:
        """True when there is an output in flight and the oldest is finished (:meth:`wait` returns at once)."""
        return bool(self._in_flight) and self._in_flight[0][1].done()

    @property
    def all_done(self) -> bool:
        """True when every output in flight is finished (also when there is none)."""
        return all(future.done() for _, future, _ in self._in_flight)

    @property
    def phase(self) -> str | None:
        """What the oldest output in flight waits for: "influxdb", "kafka" or None."""
        return self._in_flight[0][0].phase if self._in_flight else None

    def submit(self, output: Output) -> None:
        if self.full:
            raise RuntimeError(f"{len(self._in_flight)} outputs are in flight: wait() for the oldest first")
        output.phase = "influxdb" if output.lines else "kafka"
        stored = self._storing.submit(self._store_phase, output)
        before = self._in_flight[-1][1] if self._in_flight else None  # published before this one
        self._in_flight.append((output, self._publishing.submit(self._publish_phase, output, stored, before),
                                time.monotonic()))

    def wait(self) -> Output | None:
        """The oldest output in flight once stored and published (None if there is none); raises what stopped
        it."""
        if not self._in_flight:
            return None
        output, future, _ = self._in_flight.popleft()
        future.result()
        return output

    def settle(self, timeout_s: float) -> bool:
        """Whether the writer keeps up: False when its oldest output in flight is not done ``timeout_s`` after it
        was submitted, or, with ``depth`` in flight, ``timeout_s`` from now (waiting that long for it)."""
        if not self._in_flight:
            return True
        _, future, submitted = self._in_flight[0]
        if future.done():
            return True
        if not self.full:
            return time.monotonic() - submitted < timeout_s
        done, _ = futures_wait([future], timeout=timeout_s)
        return bool(done)

    def withdraw(self, origins: set[Origin]) -> bool:
        """Take the lines and records of ``origins`` out of every output in flight.

        Returns True once none of them can be stored or published by this writer any more; False while
        an attempt that includes some of them is under way (call again: it ends within the store's or
        the brokers' request timeout).
        """
        if not self._in_flight:
            return True
        with self._lock:
            for output, _, _ in self._in_flight:
                output.withdrawn.update(origins)
            return not any(attempt & origins for attempt in self._attempt.values())

    def close(self) -> None:
        self._storing.shutdown(wait=True)
        self._publishing.shutdown(wait=True)

    # -- in the writer's threads ---------------------------------------------

    def _store_phase(self, output: Output) -> None:
        if output.lines:
            self._store_all(output)
        output.phase = "kafka"

    def _publish_phase(self, output: Output, stored: Future, before: Future | None) -> None:
        """After ``stored`` (its store phase; raises what stopped it), publish the output's records, unless the
        output ``before`` it (done by now: one thread publishes, in order) was not written: then neither is this
        one, so that results are never published out of order."""
        try:
            if before is not None and before.exception() is not None:
                raise RuntimeError("an earlier output was not written (its records will be re-read)")
            stored.result()
            if output.sends:
                self._publish_all(output)
        finally:
            output.phase = None
        output.done_s = time.time()

    def _begin(self, output: Output, items: list, origins: list[Origin]) -> tuple[list, list[Origin]]:
        """The items whose origin is not withdrawn, and their origins; marks those origins as under way."""
        with self._lock:
            gone = output.withdrawn
            if gone:
                pairs = [(item, origin) for item, origin in zip(items, origins, strict=True) if origin not in gone]
                items, origins = [item for item, _ in pairs], [origin for _, origin in pairs]
            self._attempt["publish"] = set(origins)
        return items, origins

    def _end(self, phase: str) -> None:
        with self._lock:
            self._attempt[phase] = set()

    def _retry_or_raise(self, output: Output, kind: str, what: str, error: object, delay: float,
                        at_least_s: float | None = None) -> float:
        """Count a failed attempt, report the wait, raise if stopping, sleep (at least ``at_least_s``); returns
        the next delay."""
        output.errors[kind] += 1
        self._waiting.failed(what, error)
        if self._stopping.is_set() or self._stopping.wait(max(delay, at_least_s or 0.0)):
            raise RuntimeError(f"stopping before the output was written (its records will be re-read): {error}")
        return min(delay * 2, self._retry_max_s)

    def _store_all(self, output: Output) -> None:
        """Store the output's lines: all of them, or all but those InfluxDB refuses as data (see the module
        docstring and :class:`srv6pm.influx.Split`)."""
        split = Split(output.lines, split=output.letters is not None)
        origins = output.line_origins
        delay = 0.2

        def select(group: list[int]) -> list[int]:
            with self._lock:
                gone = output.withdrawn
                chosen = [i for i in group if origins[i] not in gone] if gone else group
                self._attempt["store"] = {origins[i] for i in chosen}
            return chosen

        def write(lines: list[str]) -> None:
            try:
                self._store.write(lines)
            finally:
                self._end("store")

        while True:
            try:
                output.refused.update(split.write(write, self._refusals, select))
                break
            except StoreError as error:
                delay = self._retry_or_raise(output, "store", "influxdb", error, delay, error.retry_after_s)
        if output.refused:
            self._letters(output)

    def _letters(self, output: Output) -> None:
        """Add the dead letters of the refused lines to the output's records."""
        assert output.letters is not None, "lines are refused only when the output can dead-letter them"
        made = output.letters(output.state, dict(output.refused), output.lines)
        output.sends = output.sends + [send for send, _ in made]
        output.send_origins = output.send_origins + [origin for _, origin in made]
        output.lettered = [origin for _, origin in made]
        first = next(iter(output.refused.values()))
        log.warning("InfluxDB refused points: their results are dead-lettered, the other points are stored",
                    extra={"points": len(output.refused), "of": len(output.lines), "dead_letters": len(made),
                           "error": first})

    def _publish_all(self, output: Output) -> None:
        pending, origins = output.sends, output.send_origins
        delay = 0.2
        while True:
            sends, origins = self._begin(output, pending, origins)
            try:
                failed = self._publisher.publish(sends) if sends else []
            finally:
                self._end("publish")
            if not failed:
                if sends:
                    self._waiting.ok("kafka")
                return
            origin_of = {id(send): origin for send, origin in zip(sends, origins, strict=True)}
            pending = [send for send, _ in failed]
            origins = [origin_of[id(send)] for send in pending]
            delay = self._retry_or_raise(output, "publish", "kafka",
                                         f"{len(failed)} records not acknowledged: {failed[0][1]}", delay)


def result_letters(refused: dict[int, str], lines: list[str], results: Iterable[tuple[Any, int, dict, bytes | None]],
                   tokens: Iterable[tuple[str, int, int]], consumer: str) -> list[tuple[Send, Origin]]:
    """The dead letters of the results whose InfluxDB points were ``refused`` (line index -> reason).

    ``results`` are (stage, partition, result as published, its JSON or None) in the order of their lines
    in ``lines`` (each result's lines are ``stage.lines(result)``); ``tokens`` the (topic, partition,
    offset) of the records the output finishes. One letter per result with a refused point, keyed by
    the result's subject: ``topic`` and ``partition`` of its input, ``offset`` the newest of the output's
    records of that partition (the commit moves past it once the letter is out), ``raw`` the result's
    JSON, ``result_topic`` the topic it is published on, ``point`` its first refused line, and the
    reason InfluxDB gave.
    """
    newest: dict[Origin, int] = {}
    for topic, partition, offset in tokens:
        if offset > newest.get((topic, partition), -1):
            newest[(topic, partition)] = offset
    out: list[tuple[Send, Origin]] = []
    at = 0
    for stage, partition, result, value in results:
        n = len(stage.lines(result))
        first = next((i for i in range(at, at + n) if i in refused), None)
        at += n
        if first is None:
            continue
        origin = (stage.input_topic, partition)
        raw = value if value is not None else records.encode(result)
        letter = records.dead_letter(stage.input_topic, partition, newest.get(origin, 0), refused[first], raw,
                                     consumer)
        letter.update(result_topic=stage.output_topic, point=shorten(lines[first], records.DEADLETTER_REASON_CHARS))
        key = records.dead_letter_key(str(result[stage.subject_field]).encode())
        out.append((Send(records.DEADLETTER, None, key, records.encode(letter)), origin))
    if at != len(lines):
        raise AssertionError(f"the results give {at} lines, the output has {len(lines)}")
    return out
