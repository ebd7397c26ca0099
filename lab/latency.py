"""Detection latency: from the end of a period to its loss result being in InfluxDB and on ``srv6pm.loss``.

The processor stores an iteration's results in InfluxDB before it publishes
them (``srv6pm.processor.writer``), and the record's Kafka timestamp is the
time it was published; so ``timestamp - end of the period`` is the time until
the result was in both places (its acknowledgement follows within
milliseconds). Periods end at ``(period + 1) * period_s`` in Unix time, on the
clock the exporters and the processor share (one machine in the lab).

What bounds it: a block is read at the guard time, half a period after the
period's end; the processor decides the period when both ends are in, or
when the pair wait runs out for a missing one; then one loop iteration
stores and publishes it. So latency <= period_s / 2 + pair wait + a small
constant (exporter publishing, the consumer's fetch wait, the iteration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["DetectionLatency"]


@dataclass
class DetectionLatency:
    """Latencies of the loss results of one run; :meth:`summary` gives p50 and p99 (nearest rank)."""

    pair_wait_s: float
    seconds: list[float] = field(default_factory=list)
    guard_s: float | None = None  # half the period, from the first result

    def add(self, result: dict, published_s: float) -> None:
        """A ``srv6pm.loss`` record and its Kafka timestamp in seconds."""
        period_s = result["period_s"]
        self.guard_s = period_s / 2
        self.seconds.append(published_s - (result["period"] + 1) * period_s)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]

    def summary(self) -> str:
        """One line: p50, p99 and max over the run, and what bounds them."""
        if not self.seconds:
            return "detection latency: no loss results"
        assert self.guard_s is not None  # set by add() with the first result
        return (f"detection latency (period end -> result in InfluxDB and on srv6pm.loss), {len(self.seconds)} "
                f"results: p50 {self.percentile(50):.2f} s, p99 {self.percentile(99):.2f} s, "
                f"max {max(self.seconds):.2f} s; guard {self.guard_s:g} s + pair wait {self.pair_wait_s:g} s "
                f"= {self.guard_s + self.pair_wait_s:g} s")
