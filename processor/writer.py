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

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from srv6pm.influx import InfluxWriter, StoreError
from srv6pm.publish import Publisher, Send

__all__ = ["Output", "Writer"]

log = logging.getLogger("srv6pm.processor")


@dataclass
class Output:
    """What one iteration writes. ``state`` is the loop's own, handed back untouched by :meth:`Writer.wait`."""

    lines: list[str]
    sends: list[Send]
    state: Any = None
    errors: Counter = field(default_factory=Counter)  # failed attempts by kind ("store", "publish")
    done_s: float | None = None  # wall-clock time when stored and published


class Writer:
    """Stores and publishes one :class:`Output` at a time in a thread of its own (see the module docstring)."""

    def __init__(self, store: InfluxWriter, publisher: Publisher, stopping: threading.Event, retry_max_s: float):
        self._store = store
        self._publisher = publisher
        self._stopping = stopping
        self._retry_max_s = retry_max_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srv6pm-writer")
        self._in_flight: tuple[Output, Future] | None = None

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

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

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- in the writer's thread ------------------------------------------------

    def _write(self, output: Output) -> None:
        if output.lines:
            self._store_all(output)
        if output.sends:
            self._publish_all(output)
        output.done_s = time.time()

    def _store_all(self, output: Output) -> None:
        delay = 0.2
        while True:
            try:
                self._store.write(output.lines)
                return
            except StoreError as exc:
                output.errors["store"] += 1
                if self._stopping.is_set():
                    raise RuntimeError(f"stopping before the results were stored (records will be re-read): "
                                       f"{exc}") from None
                log.warning("retrying", extra={"action": "store results in InfluxDB", "error": str(exc),
                                               "delay_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)

    def _publish_all(self, output: Output) -> None:
        pending = output.sends
        delay = 0.2
        while pending:
            failed = self._publisher.publish(pending)
            if not failed:
                return
            error = failed[0][1]
            output.errors["publish"] += 1
            if self._stopping.is_set():
                raise RuntimeError(f"stopping with {len(failed)} unpublished records (will be re-read): {error}")
            log.warning("publish failed, retrying", extra={"records": len(failed), "error": str(error)})
            time.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)
            pending = [send for send, _ in failed]
