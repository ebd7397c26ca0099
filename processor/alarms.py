"""Threshold alarms: results in, ``srv6pm.alarms`` records out when a state changes.

Two rules, each off when its threshold is None:

- ``loss_ratio``: per flow, the ``loss_ratio`` of each *complete* loss period
  (an incomplete period is never evaluated: it is neither loss nor no loss);
- ``delay_p99_us``: per STAMP session and direction, the ``p99_us`` of each
  delay period that has samples.

A subject is raised while the value of its newest evaluated period is above
the threshold. An alarm record is made only on a change: ``raised: true``
when a period goes above, ``raised: false`` when a later one is back at or
under it. Periods are evaluated in order per (kind, subject, direction); a
result older than the newest one evaluated changes nothing, so a late result
cannot flap the state.

Nothing lost, nothing doubled: alarms are published with the results they
come from, before the offsets move. After a restart the state of each
partition is read back from the tail of ``srv6pm.alarms`` (alarms go to the
partition number of their input records, like results; see ``ledger``), and
results that are re-read are evaluated again: a transition that was already
published finds the state it left and makes nothing; one lost in a crash is
made again.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from operator import le
from typing import NamedTuple

from kafka import KafkaConsumer

from srv6pm import records
from srv6pm.records import Alarm

from .ledger import read_tail

__all__ = ["AlarmRules", "Alarms"]


@dataclass(frozen=True)
class AlarmRules:
    """The thresholds; None turns a rule off. A value strictly above its threshold raises."""

    loss_ratio: float | None = 0.01
    delay_p99_us: float | None = None

    def __post_init__(self):
        for name in ("loss_ratio", "delay_p99_us"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # also refuses NaN
                raise ValueError(f"alarm threshold {name} must be a number >= 0, not {value!r}")


class _State(NamedTuple):  # a tuple: one is made per result evaluated
    period: int
    raised: bool


def _measures(result: dict, rules: AlarmRules) -> tuple[str, str | None, float, float] | None:
    """(kind, direction, value, threshold) that ``result`` is evaluated on, or None."""
    if "flow" in result:
        if rules.loss_ratio is None or not result.get("complete") or result.get("loss_ratio") is None:
            return None
        return "loss_ratio", None, float(result["loss_ratio"]), rules.loss_ratio
    if "session" in result:
        if rules.delay_p99_us is None or result.get("p99_us") is None:
            return None
        return "delay_p99_us", result["direction"], float(result["p99_us"]), rules.delay_p99_us
    return None


class Alarms:
    """The alarm state of the partitions one processor owns, for the results of one input topic.

    ``kinds`` are the alarm kinds this instance keeps when it reads the state
    back (the loss stage's or the delay stage's): a partition of the alarms
    topic holds both, and the two input topics' partitions may belong to
    different processors.
    """

    def __init__(self, rules: AlarmRules, kinds: tuple[str, ...], tail_records: int = 50_000):
        self.rules = rules
        self.kinds = kinds
        self.tail_records = tail_records
        self._state: dict[tuple[int, str, str, str | None], _State] = {}

    @property
    def enabled(self) -> bool:
        """Whether a rule of these kinds is on (each kind is named after its threshold)."""
        return any(getattr(self.rules, kind) is not None for kind in self.kinds)

    def evaluate(self, partition: int, result: dict) -> Alarm | None:
        """The alarm that ``result`` (a published result record) makes, if it changes a state."""
        alarms = self.evaluate_all(partition, [result])
        return alarms[0] if alarms else None

    def evaluate_all(self, partition: int, results: list[dict]) -> list[Alarm]:
        """The alarms that ``results`` (published result records of ``partition``) make, evaluated in period
        order (a stable sort: results of one period in the order given), each as :meth:`evaluate` would."""
        periods = [r["period"] for r in results]
        if not all(map(le, periods, islice(periods, 1, None))):
            results = [results[i] for i in sorted(range(len(results)), key=periods.__getitem__)]
        rules, state, out, new_state = self.rules, self._state, [], tuple.__new__  # (_State's own is Python)
        loss_threshold = rules.loss_ratio
        for result in results:
            if "flow" in result:  # a loss result (as _measures says, inline: one per flow-period)
                if loss_threshold is None or not result.get("complete"):
                    continue
                ratio = result.get("loss_ratio")
                if ratio is None:
                    continue
                kind, direction, value, threshold = "loss_ratio", None, float(ratio), loss_threshold
                subject = result["flow"] or result.get("session")
            else:
                measured = _measures(result, rules)
                if measured is None:
                    continue
                kind, direction, value, threshold = measured
                subject = result.get("flow") or result.get("session")
            assert subject is not None, "a published result names its flow (loss) or its session (delay)"
            key = (partition, kind, subject, direction)
            last = state.get(key)
            period = result["period"]
            if last is not None and period <= last.period:
                continue
            raised = value > threshold
            state[key] = new_state(_State, (period, raised))
            if raised == (last.raised if last is not None else False):
                continue
            out.append(Alarm(kind=kind, subject=subject, direction=direction, period=period,
                             period_start=result["period_start"], period_s=result["period_s"], value=value,
                             threshold=threshold, raised=raised))
        return out

    def load(self, consumer: KafkaConsumer, partitions: list[int], timeout_s: float = 30.0) -> int:
        """Read the state of ``partitions`` back from the tail of ``srv6pm.alarms``; the alarms read."""
        self.forget(partitions)
        loaded = 0
        alarm: Alarm
        for partition, alarm in read_tail(consumer, records.ALARMS, partitions, self.tail_records, timeout_s):
            if alarm.kind not in self.kinds:
                continue
            key = (partition, alarm.kind, alarm.subject, alarm.direction)
            state = _State(alarm.period, alarm.raised)
            last = self._state.get(key)
            if last is None or state.period >= last.period:
                self._state[key] = state
            loaded += 1
        return loaded

    def forget(self, partitions) -> None:
        gone = set(partitions)
        self._state = {k: v for k, v in self._state.items() if k[0] not in gone}

    def raised(self) -> list[tuple[str, str, str | None]]:
        """(kind, subject, direction) of every alarm raised now, sorted."""
        return sorted({k[1:] for k, v in self._state.items() if v.raised}, key=lambda k: (k[0], k[1], k[2] or ""))
