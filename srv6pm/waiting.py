"""Saying, once, that a component waits for a service that is away, and once that it is back.

A component that retries an action against InfluxDB, the brokers or another
store reports each attempt here: :meth:`Waiting.failed` after a failed one,
:meth:`Waiting.ok` after one that worked. The first failure of a wait logs
one warning (``waiting for <what>``, with the error) and sets the gauge
``srv6pm_waiting{component, what}`` to 1 (and counts the wait in
``srv6pm_waits_total``); the failures that follow log nothing above debug; the
first success logs one warning ``<what> is back`` with the seconds and attempts
the wait took and sets the gauge to 0. ``what`` is a short name of what is
awaited (``influxdb``, ``kafka``, ``kafka_commit``, ...): one wait per name, so
different actions against one service each say their own.

Thread-safe: the processor's writer thread and its loop report to one object.
"""

from __future__ import annotations

import logging
import threading
import time

from srv6pm import metrics as metrics_mod

__all__ = ["Waiting"]


class Waiting:
    """What ``component`` is waiting for right now (see the module docstring)."""

    def __init__(self, component: str, log: logging.Logger, metrics: metrics_mod.Metrics | None = None):
        self.component = component
        self._log = log
        self._metrics = metrics or metrics_mod.get()
        self._lock = threading.Lock()
        self._since: dict[str, tuple[float, int]] = {}  # what -> (monotonic start, failed attempts)

    def failed(self, what: str, error: object) -> None:
        """An attempt at ``what`` failed with ``error``: the first failure of a wait is logged and counted."""
        with self._lock:
            started = self._since.get(what)
            self._since[what] = (started[0], started[1] + 1) if started else (time.monotonic(), 1)
        if started is None:
            self._metrics.waiting.labels(self.component, what).set(1)
            self._metrics.waits.labels(self.component, what).inc()
            self._log.warning(f"waiting for {what}", extra={"waiting_for": what, "error": str(error)})
        else:
            self._log.debug(f"still waiting for {what}", extra={"waiting_for": what, "error": str(error)})

    def ok(self, what: str) -> None:
        """An attempt at ``what`` worked: a wait for it, if any, ends (logged once)."""
        if what not in self._since:  # the usual case, without taking the lock
            return
        with self._lock:
            started = self._since.pop(what, None)
        if started is None:
            return
        self._metrics.waiting.labels(self.component, what).set(0)
        self._log.warning(f"{what} is back", extra={"waiting_for": what, "waited_s": round(time.monotonic() - started[0], 3),
                                                    "failed_attempts": started[1]})

    def active(self, what: str | None = None) -> bool:
        """True while waiting for ``what`` (None: for anything)."""
        return bool(self._since) if what is None else what in self._since

    def now(self) -> dict[str, float]:
        """What is awaited, with the seconds waited so far."""
        with self._lock:
            items = list(self._since.items())
        return {what: time.monotonic() - started for what, (started, _) in items}
