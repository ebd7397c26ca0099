"""Path liveness on the node exporter: each declaration of a STAMP session's sender, published at once.

A session whose ``StampSession.liveness`` is set runs its sender with
:class:`~srv6pm.stamp.liveness.LivenessSettings`; every
:class:`~srv6pm.stamp.liveness.Change` the sender declares becomes two
records, published by the exporter itself (the processor is not involved):

* ``srv6pm.alarms``, kind ``liveness``, key and subject the session,
  ``raised`` true when the path went down and false when it came up again
  (:func:`alarm`);
* ``srv6pm.events``, kind ``path_down`` or ``path_up``, key the node
  (:func:`event`).

A session's path starts unknown (:class:`~srv6pm.stamp.liveness.PathState`):
nothing is published until the sender's first decision, and a first decision
of up is not published at all, so the records keep their two states (down, up
again) and a path that answers from its start publishes nothing. A path that
never answers is published down after the usual ``down_after`` misses, with
no last reply (``last_reply_ns`` null, "no reply yet" in the event).

:class:`LivenessPublisher` sends them from a thread of its own and flushes
the producer right after, so the records leave at once (not after the
producer's linger) and the session's thread, which declared the change, never
waits for the broker. A session stopped while its path is down publishes
nothing more: its alarm stays raised until a session of that name reports the
path up again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from srv6pm import metrics, records
from srv6pm.clock import period_clock, rfc3339
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.stamp.liveness import Change

__all__ = ["LivenessPublisher", "alarm", "event", "reflector_of"]

log = logging.getLogger("srv6pm.exporter.liveness")

FLUSH_TIMEOUT_S = 5.0


def reflector_of(s: pb.StampSession) -> str:
    """The session's reflector as records name it: its node, else its address."""
    return s.reflector_node or s.destination


def alarm(change: Change, s: pb.StampSession, node: str, period_s: float) -> records.Alarm:
    """The ``srv6pm.alarms`` record of ``change`` in session ``s`` run by ``node``."""
    clock = period_clock(period_s)
    period = clock.period_at(change.time_ns)
    return records.Alarm(kind="liveness", subject=s.name, direction=None, period=period,
                         period_start=clock.start_rfc3339(period), period_s=period_s, value=change.count,
                         threshold=change.threshold, raised=not change.up, time_ns=change.time_ns,
                         last_reply_ns=change.last_reply_ns, sender=node, reflector=reflector_of(s))


def event(change: Change, s: pb.StampSession, node: str, boot_id: str | None) -> records.Event:
    """The ``srv6pm.events`` record of ``change`` (generation 0: it is the exporter's, not the collector's)."""
    if change.up:
        detail = f"{change.count} consecutive replies from {reflector_of(s)}"
    else:
        silent = ("no reply yet" if change.last_reply_ns is None
                  else f"last reply {(change.time_ns - change.last_reply_ns) / 1e6:.1f} ms before")
        detail = f"{change.count} consecutive test packets to {reflector_of(s)} without a reply ({silent})"
    return records.Event(kind="path_up" if change.up else "path_down", time=rfc3339(change.time_ns), generation=0,
                         node=node, object=f"stamp_session {s.name}", detail=detail, boot_id=boot_id)


class LivenessPublisher:
    """Publishes liveness changes on ``srv6pm.alarms`` and ``srv6pm.events`` as they come. Thread safe.

    :meth:`changed` only queues (it is called in a session's thread);
    :meth:`close` publishes what is queued and ends the thread.
    """

    def __init__(self, producer, node: str, period_s: float, boot_id: str | None = None):
        self.node = node
        self.period_s = period_s
        self.boot_id = boot_id
        self._producer = producer
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.published = 0  # changes handed to the producer

    def changed(self, s: pb.StampSession, change: Change) -> None:
        """Queue ``change`` of session ``s`` for publication now; never blocks."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stamp-liveness", daemon=True)
                self._thread.start()
        self._queue.put((s, change))

    def close(self) -> None:
        """Publish the queued changes and stop the thread; idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=FLUSH_TIMEOUT_S + 1)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            s, change = item
            try:
                self._publish(s, change)
            except Exception as exc:  # the producer retries in the background; the sessions go on
                log.error("liveness change not published", extra={"session": s.name, "error": repr(exc)})

    def _publish(self, s: pb.StampSession, change: Change) -> None:
        a = alarm(change, s, self.node, self.period_s)
        e = event(change, s, self.node, self.boot_id)
        self._producer.send(records.ALARMS, key=a.key.encode(), value=a.to_json())
        self._producer.send(records.EVENTS, key=e.key.encode(), value=e.to_json())
        self._producer.flush(timeout=FLUSH_TIMEOUT_S)
        self.published += 1
        m = metrics.get()
        m.records_out.labels("exporter", records.ALARMS).inc()
        m.records_out.labels("exporter", records.EVENTS).inc()
        log.warning("STAMP path up" if change.up else "STAMP path down",
                    extra={"node": self.node, "session": s.name, "count": change.count,
                           "delay_ms": (time.time_ns() - change.time_ns) / 1e6})
