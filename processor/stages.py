"""The processor's stages: one per input topic.

A stage knows how to decode its input records, how they group into
``(subject, period)`` results, how to aggregate them, and how a result becomes
an InfluxDB point. The loop in ``service`` drives every stage the same way, so
the guarantees (offsets after store, idempotent points, dead letters, no
result published twice) hold for all of them.
"""

from __future__ import annotations

import time
from typing import Any

from srv6pm import metrics, records
from srv6pm.decode import decode_counters, decode_stamp
from srv6pm.clock import period_clock

from . import plausible
from .delay import DelayWindows
from .outcome import Outcome, Token
from .pairing import Pairing
from .store import delay_lines, loss_lines

__all__ = ["DelayStage", "LossStage", "Stage"]


class Stage:
    """Interface of a stage (see LossStage for the contract of each member)."""

    input_topic: str
    output_topic: str
    subject_field: str
    alarm_kinds: tuple[str, ...]  # the srv6pm.alarms kinds evaluated on this stage's results
    node_field: str  # the record attribute naming the node whose exporter produced it (health's "exporter")

    def decode(self, raw: bytes | None, now_ns: int | None = None) -> Any:
        """The record in ``raw``, exactly as the ``records`` decoder gives it, if it is also plausible
        (``plausible``) at ``now_ns`` (Unix ns, default: now); raises records.RecordError with its reason."""
        raise NotImplementedError

    def key(self, record: Any) -> tuple[str, int]:
        """(subject, period) of the result this record contributes to."""
        raise NotImplementedError

    def add(self, record: Any, token: Token, now: float) -> list[Outcome]:
        raise NotImplementedError

    def expire(self, now: float) -> list[Outcome]:
        raise NotImplementedError

    def drop(self, tokens: set[Token]) -> None:
        raise NotImplementedError

    def pending_tokens(self) -> list[Token]:
        raise NotImplementedError

    def lines(self, result: dict) -> list[str]:
        """The InfluxDB points of a published result (given as its record), as line protocol."""
        raise NotImplementedError


class LossStage(Stage):
    """``srv6pm.counters`` → ``srv6pm.loss``: pairs each flow's counting points (see ``pairing``)."""

    input_topic = records.COUNTERS
    output_topic = records.LOSS
    subject_field = "flow"
    alarm_kinds = ("loss_ratio",)
    node_field = "node"

    def __init__(self, pair_wait_s: float):
        self.pairing = Pairing(pair_wait_s)

    def decode(self, raw, now_ns=None):
        return plausible.counters(decode_counters(raw), time.time_ns() if now_ns is None else now_ns)

    def key(self, record):
        return record.flow, record.period

    def add(self, record, token, now):
        outcome = self.pairing.add(record, token, now)
        return () if outcome is None else (outcome,)

    def expire(self, now):
        return self.pairing.expire(now)

    def drop(self, tokens):
        self.pairing.drop(tokens)

    def pending_tokens(self):
        return self.pairing.pending_tokens()

    def lines(self, result):
        """The ``loss`` point, then one ``segment_loss`` point per segment (see ``store``)."""
        return loss_lines(result)


class DelayStage(Stage):
    """``srv6pm.stamp`` → ``srv6pm.delay``: per-period delay statistics per direction."""

    input_topic = records.STAMP
    output_topic = records.DELAY
    subject_field = "session"
    alarm_kinds = ("delay_p99_us",)
    node_field = "sender"

    def __init__(self, lateness_s: float, idle_s: float):
        self.windows = DelayWindows(lateness_s, idle_s)

    def decode(self, raw, now_ns=None):
        return plausible.stamp(decode_stamp(raw), time.time_ns() if now_ns is None else now_ns)

    def key(self, sample):
        return sample.session, period_clock(sample.period_s).period_at(sample.t1)

    def add(self, sample, token, now):
        if sample.impossible_timestamps:
            metrics.get().stamp_impossible_timestamps.labels("processor", sample.session).inc()
        return self.windows.add(sample, token, now)

    def expire(self, now):
        return self.windows.expire(now)

    def drop(self, tokens):
        self.windows.drop(tokens)

    def pending_tokens(self):
        return self.windows.pending_tokens()

    def lines(self, result):
        return delay_lines(result)
