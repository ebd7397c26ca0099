"""The output of one loop iteration on its way out, in the background: stored in InfluxDB, then published.

The processor's loop hands each iteration's :class:`Output` (InfluxDB lines,
then the Kafka records: results, the alarms they change, dead letters) to a
:class:`Writer` and goes on with the next batch while the writer waits for
InfluxDB and the brokers. At most one output is in flight: :meth:`Writer.submit`
requires that the previous one was collected with :meth:`Writer.wait`, which
returns it once it is done, so the loop finishes its records (ledger, offsets,
commit) strictly after their results are stored and published.

Order within an output: the lines first, retried until InfluxDB takes them
all, then the records, sending again only those not acknowledged, until all
are. So a result on ``srv6pm.loss`` or ``srv6pm.delay`` is already in
InfluxDB. A crash between the two leaves results stored but not published:
their records are re-read (nothing was committed) and give the same results,
which are then published once; InfluxDB takes the same points again
(idempotent). While the processor is stopping a failed attempt is not
retried: :meth:`Writer.wait` raises, and the records are re-read by the next
owner of their partitions.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any

from srv6pm.influx import InfluxWriter, StoreError
from srv6pm.publish import Publisher, Send
from srv6pm.waiting import Waiting

__all__ = ["Output", "Writer"]


Origin = tuple[str, int]  # input (topic, partition)


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

    def __post_init__(self):
        if len(self.line_origins) != len(self.lines) or len(self.send_origins) != len(self.sends):
            raise ValueError("every line and every send needs its origin")


class Writer:
    """Stores and publishes one :class:`Output` at a time in a thread of its own (see the module docstring)."""

    def __init__(self, store: InfluxWriter, publisher: Publisher, stopping: threading.Event, retry_max_s: float,
                 waiting: Waiting):
        self._store = store
        self._publisher = publisher
        self._stopping = stopping
        self._retry_max_s = retry_max_s
        self._waiting = waiting
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srv6pm-writer")
        self._in_flight: tuple[Output, Future] | None = None
        self._lock = threading.Lock()  # guards Output.withdrawn and _attempt
        self._attempt: set[Origin] = set()  # origins of the store or publish attempt under way
        self.phase: str | None = None  # what the output in flight waits for: "influxdb", "kafka" or None

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    @property
    def done(self) -> bool:
        """True when there is an output in flight and it is finished (:meth:`wait` returns at once)."""
        return self._in_flight is not None and self._in_flight[1].done()

    def submit(self, output: Output) -> None:
        if self._in_flight is not None:
            raise RuntimeError("an output is still in flight: wait() for it first")
        self._in_flight = (output, self._pool.submit(self._write, output))

    def wait(self) -> Output | None:
        """The output in flight once stored and published (None if there is none); raises what stopped it."""
        if self._in_flight is None:
            return None
        output, future = self._in_flight
        self._in_flight = None
        future.result()
        return output

    def settle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the output in flight to be done; True when it is (or none is in flight)."""
        if self._in_flight is None:
            return True
        done, _ = futures_wait([self._in_flight[1]], timeout=timeout_s)
        return bool(done)

    def withdraw(self, origins: set[Origin]) -> bool:
        """Take the lines and records of ``origins`` out of the output in flight.

        Returns True once none of them can be stored or published by this writer any more; False while
        an attempt that includes some of them is under way (call again: it ends within the store's or
        the brokers' request timeout).
        """
        if self._in_flight is None:
            return True
        with self._lock:
            self._in_flight[0].withdrawn.update(origins)
            return not (self._attempt & origins)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- in the writer's thread ------------------------------------------------

    def _write(self, output: Output) -> None:
        try:
            if output.lines:
                self.phase = "influxdb"
                self._store_all(output)
            if output.sends:
                self.phase = "kafka"
                self._publish_all(output)
        finally:
            self.phase = None
        output.done_s = time.time()

    def _begin(self, output: Output, items: list, origins: list[Origin]) -> tuple[list, list[Origin]]:
        """The items whose origin is not withdrawn, and their origins; marks those origins as under way."""
        with self._lock:
            gone = output.withdrawn
            if gone:
                pairs = [(item, origin) for item, origin in zip(items, origins, strict=True) if origin not in gone]
                items, origins = [item for item, _ in pairs], [origin for _, origin in pairs]
            self._attempt = set(origins)
        return items, origins

    def _end(self) -> None:
        with self._lock:
            self._attempt = set()

    def _retry_or_raise(self, output: Output, kind: str, what: str, error: object, delay: float) -> float:
        """Count a failed attempt, report the wait, raise if stopping, sleep; returns the next delay."""
        output.errors[kind] += 1
        self._waiting.failed(what, error)
        if self._stopping.is_set():
            raise RuntimeError(f"stopping before the output was written (its records will be re-read): {error}")
        time.sleep(delay)
        return min(delay * 2, self._retry_max_s)

    def _store_all(self, output: Output) -> None:
        delay = 0.2
        while True:
            lines, _ = self._begin(output, output.lines, output.line_origins)
            try:
                if lines:
                    self._store.write(lines)
                    self._waiting.ok("influxdb")
                return
            except StoreError as exc:
                error = exc
            finally:
                self._end()
            delay = self._retry_or_raise(output, "store", "influxdb", error, delay)

    def _publish_all(self, output: Output) -> None:
        pending, origins = output.sends, output.send_origins
        delay = 0.2
        while True:
            sends, origins = self._begin(output, pending, origins)
            try:
                failed = self._publisher.publish(sends) if sends else []
            finally:
                self._end()
            if not failed:
                if sends:
                    self._waiting.ok("kafka")
                return
            origin_of = {id(send): origin for send, origin in zip(sends, origins, strict=True)}
            pending = [send for send, _ in failed]
            origins = [origin_of[id(send)] for send in pending]
            delay = self._retry_or_raise(output, "publish", "kafka",
                                         f"{len(failed)} records not acknowledged: {failed[0][1]}", delay)
