"""The exporter's publication of its records: batched, in order, riding out the broker's absence.

:meth:`Outbox.put` hands records (``srv6pm.counters`` from the guard,
``srv6pm.stamp`` from the STAMP sessions) to one background thread that
connects at once (so an unreachable broker shows at start) and publishes
them with the shared batch :class:`~srv6pm.publish.Publisher` (one record
batch per partition, ``acks=all``), in the order they were put;
:meth:`Outbox.wait` lets the guard wait until its records are acknowledged or
safely on disk.

When the broker cannot be reached or a publish fails, nothing exits: the
records not acknowledged, and every later one, go to the bounded on-disk
buffer (:mod:`.spool`), and the thread connects again with capped
exponential backoff (``backoff_s`` doubling up to ``max_backoff_s``), saying
so once in the log ("broker unreachable") and in the metric
``srv6pm_exporter_broker_waiting``. When the broker is back the buffer is
published first, oldest first, then the new records, so each partition gets
the records in the order they were made. Records are written to disk only
when they cannot be published: a healthy exporter never writes its records.

Exactly once: a failed produce request (typically a timeout while the broker
is stopped) may still be written later by the broker. Such records are kept
with the floors of their partitions (:meth:`~.spool.Spool.set_floors`), and
before they are sent again the partitions are read back from there
(:mod:`.readback`) and the records already present are left out. The same
happens after an exporter restart with a non-empty buffer.

Overflow: the buffer holds at most its ``max_bytes``; beyond it the oldest
records (whole guard times) are dropped, counted in
``srv6pm_exporter_buffer_dropped`` and logged with one warning line per
write that dropped any. A period whose record was dropped is incomplete at
the processor (its partner's block waits in vain), never loss.

What is not kept: records put but neither acknowledged nor yet on disk when
the process is killed with SIGKILL (at most those of the last guard and the
STAMP samples of the moment). :meth:`Outbox.close` (a normal stop) writes
those to the buffer too.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Iterator

from kafka.structs import TopicPartition

from srv6pm import metrics
from srv6pm.errors import OperationError
from srv6pm.publish import Publisher, Send

from . import readback
from .spool import Spool

__all__ = ["Outbox", "gc_paused"]

log = logging.getLogger("srv6pm.exporter.outbox")

_SPOOL_AT = 1000  # while the broker is away, records waiting in memory beyond this go to disk at once
_PAUSE_GC_AT = 1000  # a publish of this many records or more runs with the cyclic garbage collector paused

_gc_lock = threading.Lock()
_gc_holders = 0  # threads inside gc_paused() now
_gc_resume = False  # whether the collector was enabled when the first of them came in


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while any thread is inside (it is one switch for the process: the
    guard's thread and the outbox's pause it together, and it runs again when the last one leaves, if it ran
    before the first came in).

    A guard of 100,000 flows makes some hundred thousand short-lived objects (blocks, records, record batches'
    pieces), none in a cycle, on the guard's thread and then on the outbox's and the client's: collections
    triggered meanwhile scan them and the exporter's live objects (a young generation's about 20 ms each, a full
    one a third of a guard). Paused, the next collection comes after the publish, when they are freed."""
    global _gc_holders, _gc_resume
    with _gc_lock:
        if _gc_holders == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_resume:
                gc.enable()


class _Failed(OperationError):
    """A publish left records unacknowledged (the first error is the argument)."""


class Outbox:
    """Publishes records in order from a background thread, keeping what it cannot publish in ``spool``.

    ``connect()`` returns a connected :class:`~srv6pm.publish.Publisher` (it
    raises while the broker is unreachable); ``client_options`` (kafka-python
    keyword arguments) serve the read-back. ``topics`` are the topics
    records will be put on (others are learnt as they come). :meth:`send`
    and :meth:`flush` let code written for kafka-python's producer use it.
    Counting ``srv6pm_records_out`` is the callers' part, as with a producer.
    Thread safe. See the module docstring.
    """

    def __init__(self, spool: Spool, connect: Callable[[], Publisher], client_options: dict, topics: list[str],
                 node: str, *, timeout_ms: int = 10_000, backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        self.spool = spool
        self.node = node
        self.topics = list(topics)
        self.timeout_ms = timeout_ms
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._connect_publisher = connect
        self._options = dict(client_options)
        self._publisher: Publisher | None = None
        self._cond = threading.Condition()
        self._pending: list[Send] = []  # put, not yet taken by the thread (newer than everything in the spool)
        self._inflight: list[Send] | None = None  # taken from _pending, being published
        self._inflight_head: list[Send] | None = None  # the spool's head, being published
        self._first_error: Exception | None = None
        self.already_written = 0  # buffered records left out because the read-back found them on the broker
        self._floors: dict[TopicPartition, int] = {}  # ends before the publish in flight
        self._put = 0  # records put so far
        self._resolved = 0  # of those, the first _resolved are acknowledged, on disk or dropped
        self._down = False  # the last attempt failed
        self._closing = False
        self._closed = False
        m = metrics.get()
        self._dropped = m.buffer_dropped.labels("exporter", node)
        self._buffered = m.buffered.labels("exporter", node)
        self._waiting = m.broker_waiting.labels("exporter", node)
        self._buffered.set(spool.records)
        self._waiting.set(0)
        self._thread = threading.Thread(target=self._run, name=f"outbox-{node}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- for the guard and the probes ------------------------------------------------
    def put(self, sends: list[Send], *, durable: bool = False) -> None:
        """Publish ``sends`` after everything put before. ``durable``: while the broker is away, write them
        (and whatever waits in memory) to the buffer now rather than later."""
        if not sends:
            return
        with self._cond:
            self.topics.extend(t for t in {s.topic for s in sends} if t not in self.topics)
            self._pending.extend(sends)
            self._put += len(sends)
            if self._closed or (self._down and self._inflight is None
                                and (durable or len(self._pending) >= _SPOOL_AT)):
                self._spool_pending()
            self._cond.notify_all()

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> None:
        """:meth:`put` of one record, in kafka-python producer's terms (for the STAMP probes and liveness)."""
        self.put([Send(topic, None, key, value)])

    def flush(self, timeout: float | None = None) -> None:
        """:meth:`wait` in kafka-python producer's terms; returns when done or after ``timeout`` s regardless
        (what is not acknowledged by then is kept and published later)."""
        self.wait(60.0 if timeout is None else timeout)

    def wait(self, timeout: float) -> bool:
        """Wait until every record put so far is acknowledged or on disk; False if ``timeout`` s passed first."""
        with self._cond:
            target = self._put
            return self._cond.wait_for(lambda: self._resolved >= target, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (waiting up to ``timeout`` s for a publish in flight); what is unpublished goes to disk."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            self._closed = True
            if self._inflight_head is not None:  # still stuck publishing the head: it may be written yet
                self._keep_floors(self._inflight_head)
            if self._inflight is not None:  # the same for records taken from memory, which go to disk now
                self._keep_floors(self._inflight)
                self._pending[:0] = self._inflight
                self._inflight = None
            self._spool_pending()
        if not self._thread.is_alive() and self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    # -- the thread -------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.backoff_s
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closing or self._publisher is None or bool(self.spool)
                                    or bool(self._pending))
                if self._closing:
                    return
            try:
                if self._publisher is None:
                    self._connect()  # at start, and again after a failure
                if self._sending_spool():
                    self._send_spooled()
                else:
                    self._send_pending()
            except Exception as exc:  # the broker away, a timeout, a refusal: wait, then try again
                self._failed(exc)
                with self._cond:
                    if self._inflight is None:
                        self._spool_pending()
                    if self._cond.wait_for(lambda: self._closing, delay):
                        return
                delay = min(delay * 2, self.max_backoff_s)
            else:
                if self._down:
                    self._down = False
                    self._waiting.set(0)
                    log.warning("broker reachable again, publishing", extra={"node": self.node,
                                                                           "buffered": self.spool.records})
                delay = self.backoff_s

    def _sending_spool(self) -> bool:
        with self._cond:
            return bool(self.spool)

    def _connect(self) -> None:
        publisher = self._connect_publisher()
        try:
            ends = readback.latest_offsets(self._options, self.topics, self.timeout_ms)
        except BaseException:
            publisher.close()
            raise
        for tp, offset in ends.items():
            publisher.ends.setdefault(tp, offset)
        self._publisher = publisher

    def _failed(self, exc: Exception) -> None:
        metrics.get().errors.labels("exporter", "publish").inc()
        if not self._down:
            self._down = True
            self._waiting.set(1)
            log.warning("broker unreachable, buffering records and retrying with backoff",
                        extra={"node": self.node, "error": f"{type(exc).__name__}: {exc}"})
        else:
            log.info("publish retry failed", extra={"node": self.node, "error": f"{type(exc).__name__}: {exc}"})
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:  # a client that failed may fail to close too; it is dropped either way
                pass
            self._publisher = None

    def _publish(self, sends: list[Send]) -> list[Send]:
        """Publish ``sends``; the unacknowledged ones, in their order (their floors noted first)."""
        publisher = self._publisher
        assert publisher is not None, ("_run() connects before sending, and only it drops the publisher "
                                       "(close() does so once the thread has ended)")
        try:
            new = sorted({s.topic for s in sends} - {tp.topic for tp in publisher.ends})
            for tp, offset in (readback.latest_offsets(self._options, new, self.timeout_ms) if new else {}).items():
                publisher.ends.setdefault(tp, offset)  # a topic first put after the connection: its floors
            with self._cond:
                self._floors = dict(publisher.ends)
            failed = publisher.publish(sends)
        except Exception as exc:  # the client itself gave up: nothing of this call is known to be written
            failed = [(s, exc) for s in sends]
        if not failed:
            return []
        failed_ids = {id(s) for s, _ in failed}
        self._first_error = failed[0][1]
        return [s for s in sends if id(s) in failed_ids]

    def _send_pending(self) -> None:
        with self._cond:
            large = len(self._pending) >= _PAUSE_GC_AT
        # the records are freed when _publish_pending returns, before the collector runs again
        with gc_paused() if large else contextlib.nullcontext():
            self._publish_pending()

    def _publish_pending(self) -> None:
        """Take the records waiting in memory, publish them and settle them (acknowledged, or back in memory)."""
        with self._cond:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            self._inflight, upto = batch, self._put
        failed = self._publish(batch)
        with self._cond:
            self._inflight = None
            if self._closed:
                return
            if failed:
                self._keep_floors(failed)
                self._pending[:0] = failed
                self._spool_pending()
                raise _Failed(self._first_error)
            self._resolved = max(self._resolved, upto)
            self._cond.notify_all()

    def _send_spooled(self) -> None:
        with self._cond:
            head = self.spool.head()
            self._count_discarded()
            if head is None:
                return
            name, sends = head
            floors = dict(self.spool.floors)
        if floors:
            seen = readback.written_since(self._options, floors, self.timeout_ms)
            keep = [s for s in sends if (s.topic, s.key, s.value) not in seen]
            with self._cond:
                if self._closed:
                    return
                self.spool.replace_head(name, keep)
                self.spool.clear_floors()
                self._buffered.set(self.spool.records)
            self.already_written += len(sends) - len(keep)
            if len(keep) < len(sends):
                log.info("buffered records already on the broker left out", extra={
                    "node": self.node, "records": len(sends) - len(keep)})
            return  # the head, as it is now, goes in the next round
        self._inflight_head = sends
        failed = self._publish(sends)
        with self._cond:
            self._inflight_head = None
            if self._closed:
                return
            if failed:
                self._keep_floors(failed)
            self.spool.replace_head(name, failed)
            self._buffered.set(self.spool.records)
        if failed:
            raise _Failed(self._first_error)

    # -- helpers (under self._cond) --------------------------------------------------
    def _keep_floors(self, sends: list[Send]) -> None:
        """Note the floors of the partitions of ``sends``' topics: they may be on the broker already."""
        topics = {s.topic for s in sends}
        floors = {tp: offset for tp, offset in self._floors.items() if tp.topic in topics}
        if {tp.topic for tp in floors} != topics:
            log.warning("partitions unknown, records may be published twice",
                        extra={"node": self.node, "topics": sorted(topics - {tp.topic for tp in floors})})
        self.spool.set_floors(floors)

    def _spool_pending(self) -> None:
        if self._pending:
            dropped = self.spool.append(self._pending)
            self._pending = []
            if dropped:
                self._dropped.inc(dropped)
                log.warning("buffer full, oldest records dropped (their periods will be incomplete)",
                            extra={"node": self.node, "dropped": dropped, "max_bytes": self.spool.max_bytes,
                                   "buffered": self.spool.records})
        self._count_discarded()
        self._buffered.set(self.spool.records)
        self._resolved = self._put
        self._cond.notify_all()

    def _count_discarded(self) -> None:
        if self.spool.discarded:
            self._dropped.inc(self.spool.discarded)
            self.spool.discarded = 0
