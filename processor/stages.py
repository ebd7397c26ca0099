"""The processor's stages: one per input topic.

A stage knows how to decode its input records, how they group into
``(subject, period)`` results, how to aggregate them, and how a result becomes
an InfluxDB point. The loop in ``service`` drives every stage the same way, so
the guarantees (offsets after store, idempotent points, dead letters, no
result published twice) hold for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from srv6pm import metrics, records
from srv6pm.decode import decode_counters, decode_counters_all, decode_stamp, decode_stamp_all
from srv6pm.records import CounterRecord, StampSample
from srv6pm.clock import period_clock

from . import plausible
from .delay import DelayWindows
from .outcome import Outcome, Token, gather
from .pairing import Pairing
from .store import delay_lines, delay_lines_all, loss_lines, loss_lines_all

__all__ = ["DelayStage", "LossStage", "Stage", "Taken", "rejection"]

Taken = tuple[list[Outcome], list, int]  # what Stage.take returns


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

    def decode_all(self, raws: list, now_ns: int) -> tuple[list, dict[int, str]]:
        """:meth:`decode` of each of ``raws`` (a partition's run of records): the records (None where one is
        rejected) and the reasons of the rejected ones, by index. Never raises for a record."""
        out: list = []
        reasons: dict[int, str] = {}
        for i, raw in enumerate(raws):
            try:
                out.append(self.decode(raw, now_ns))
            except Exception as exc:  # noqa: BLE001  # no record may stop the loop (see rejection)
                out.append(None)
                reasons[i] = rejection(exc)
        return out, reasons

    def key(self, record: Any) -> tuple[str, int]:
        """(subject, period) of the result this record contributes to."""
        raise NotImplementedError

    def add(self, record: Any, token: Token, now: float) -> list[Outcome]:
        raise NotImplementedError

    def take(self, blocks: list, tokens: list, now: float, closed: set, published: Mapping) -> Taken:
        """:meth:`add` of each of ``blocks`` (decoded records of one partition, in order) with its token, but for
        a record whose result is made already: its key is in ``closed`` (made in this batch or being written;
        the results made here are added to it) or in ``published`` (``Ledger.partition``: (subject, period) ->
        what the ledger holds of its partition). Such a record is finished as it is (a late or repeated record
        must not open its period again) and counted as replayed; what the ledger holds for the latter is
        returned, to be stored again. Returns (outcomes, those ledger entries, records replayed).

        ``tokens`` are the processor's, ``(topic, partition, offset)``: the outcomes whose results go to this
        run's partition (their first token is of it) and the records finished as they are make one outcome,
        so that the output is made a run at a time.
        """
        outcomes: list[Outcome] = []
        restored: list = []
        replayed = 0
        run_tokens: list = []  # of the run's outcome: what is finished as it is, and the outcomes merged into it
        run_results: list = []
        key_of, add, append = self.key, self.add, outcomes.append
        for record, token in zip(blocks, tokens, strict=True):
            key = key_of(record)
            if key in closed:
                replayed += 1
                run_tokens.append(token)
                continue
            held = published.get(key) if published else None
            if held is not None:  # re-read after a restart, or late after its period was closed
                replayed += 1
                restored.append(held)
                run_tokens.append(token)
                continue
            gather(add(record, token, now), token, closed, append, run_tokens, run_results)
        if run_tokens:
            append(Outcome(run_tokens, run_results))
        return outcomes, restored, replayed

    def expire(self, now: float) -> list[Outcome]:
        raise NotImplementedError

    def drop(self, tokens: set[Token]) -> None:
        raise NotImplementedError

    def pending_tokens(self) -> list[Token]:
        raise NotImplementedError

    def lines(self, result: dict) -> list[str]:
        """The InfluxDB points of a published result (given as its record), as line protocol."""
        raise NotImplementedError

    def lines_all(self, results: list[dict]) -> list[str]:
        """:meth:`lines` of each of ``results``, in order."""
        return [text for result in results for text in self.lines(result)]


def rejection(exc: Exception) -> str:
    """The dead-letter reason of a record whose decoding raised ``exc``: a RecordError's own reason; for
    anything the decoder did not expect, what it was (no record may stop the loop)."""
    if isinstance(exc, records.RecordError):
        return str(exc)
    return f"cannot be decoded: {type(exc).__name__}: {exc}"


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

    def decode_all(self, raws, now_ns):
        """Every record decoded (``decode_counters_all``), then judged plausible (``counters_all``), a run at a time."""
        blocks: list = decode_counters_all(raws)
        plausible.counters_all(blocks, now_ns)
        reasons = {}
        for i, block in enumerate(blocks):
            if type(block) is not CounterRecord:
                reasons[i] = rejection(block)
                blocks[i] = None
        return blocks, reasons

    def key(self, record):
        return record.flow, record.period

    def add(self, record, token, now):
        outcome = self.pairing.add(record, token, now)
        return () if outcome is None else (outcome,)

    def take(self, blocks, tokens, now, closed, published):
        return self.pairing.take(blocks, tokens, now, closed, published)

    def expire(self, now):
        return self.pairing.expire(now)

    def drop(self, tokens):
        self.pairing.drop(tokens)

    def pending_tokens(self):
        return self.pairing.pending_tokens()

    def lines(self, result):
        """The ``loss`` point, then one ``segment_loss`` point per segment (see ``store``)."""
        return loss_lines(result)

    def lines_all(self, results):
        return loss_lines_all(results)


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

    def decode_all(self, raws, now_ns):
        """:meth:`decode` of each of ``raws``: decoded a run at a time (``decode_stamp_all``), each sample then
        judged plausible."""
        out: list = []
        reasons: dict[int, str] = {}
        append, judge = out.append, plausible.stamp
        for i, sample in enumerate(decode_stamp_all(raws)):
            if type(sample) is not StampSample:  # the RecordError: the reason
                append(None)
                reasons[i] = rejection(cast(Exception, sample))
                continue
            try:
                append(judge(sample, now_ns))
            except Exception as exc:  # noqa: BLE001  # no record may stop the loop (see rejection)
                append(None)
                reasons[i] = rejection(exc)
        return out, reasons

    def key(self, sample):
        return sample.session, period_clock(sample.period_s).period_at(sample.t1)

    def take(self, samples, tokens, now, closed, published):
        """:meth:`Stage.take`, a run at a time (:meth:`DelayWindows.take`); the samples it does not take at once
        go through :meth:`add`."""
        return self.windows.take(samples, tokens, now, closed, published, self.add)

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

    def lines_all(self, results):
        return delay_lines_all(results)
