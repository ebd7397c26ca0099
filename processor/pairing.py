"""Pairing of ingress and egress blocks into per-period loss results.

A flow's ingress exporter and egress exporter each publish one block per
period (``srv6pm.counters``). :class:`Pairing` holds the first side of a
``(flow, period)`` until the other side arrives, then yields the exact loss
``tx - rx``; if the other side does not arrive within ``wait_s`` seconds of the
first, it yields the period as *incomplete* (never as loss).

Every input record is identified by an opaque *token*; each
:class:`~srv6pm.processor.outcome.Outcome` lists the tokens it consumed, so
the caller can tell when a record's work is finished (stored and published)
and only then let the consumer offset move past it. An outcome without
results is a transit block or an exact duplicate; a conflicting duplicate is
rejected (dead-lettered).

Pairing is pure: it never reads the clock; callers pass ``now`` (seconds,
monotonic) in. It is not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from srv6pm.clock import PeriodClock
from srv6pm.records import CounterRecord, LossResult

from .outcome import Outcome, Token

__all__ = ["Pairing", "loss_result"]


@dataclass
class _Pending:
    first_seen: float
    sides: dict[str, tuple[CounterRecord, Token]] = field(default_factory=dict)


class Pairing:
    """Pairs ``ingress``/``egress`` blocks per ``(flow, period)``."""

    def __init__(self, wait_s: float):
        if wait_s <= 0:
            raise ValueError("wait_s must be positive")
        self.wait_s = wait_s
        self._pending: dict[tuple[str, int], _Pending] = {}
        # Last node seen on each side of each flow, so that an incomplete
        # period is still tagged with the node of its missing side.
        self._nodes: dict[str, dict[str, str]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def pending_tokens(self) -> list[Token]:
        return [tok for p in self._pending.values() for _, tok in p.sides.values()]

    def add(self, record: CounterRecord, token: Token, now: float) -> Outcome | None:
        """Take one block. Returns an Outcome when ``token``'s fate is decided now."""
        if record.role == "transit":
            # Transit blocks locate loss along the path; per-flow end-to-end
            # loss needs only the two ends.
            return Outcome([token])
        self._nodes.setdefault(record.flow, {})[record.role] = record.node
        key = (record.flow, record.period)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = _Pending(now, {record.role: (record, token)})
            return None
        held = pending.sides.get(record.role)
        if held is not None:
            if held[0] == record:
                return Outcome([token])  # the same block again (an exporter retry): nothing to do
            return Outcome([token], rejected={token: (
                f"conflicting duplicate {record.role} block for flow {record.flow!r} period {record.period}: "
                f"{record.packets} packets from {record.node!r}, already have {held[0].packets} from {held[0].node!r}")})
        other = next(iter(pending.sides.values()))[0]
        if other.period_s != record.period_s:
            return Outcome([token], rejected={token: (
                f"period_s {record.period_s:g} differs from the {other.role} block's {other.period_s:g} "
                f"for flow {record.flow!r} period {record.period}")})
        pending.sides[record.role] = (record, token)
        del self._pending[key]
        ingress, tok_in = pending.sides["ingress"]
        egress, tok_eg = pending.sides["egress"]
        return Outcome([tok_in, tok_eg], [loss_result(ingress, egress)])

    def expire(self, now: float) -> list[Outcome]:
        """Incomplete results for every ``(flow, period)`` that waited ``wait_s`` or more."""
        out = []
        for key in [k for k, p in self._pending.items() if now - p.first_seen >= self.wait_s]:
            pending = self._pending.pop(key)
            (record, token), = pending.sides.values()
            out.append(Outcome([token], [self._incomplete(record)]))
        return out

    def drop(self, tokens: set[Token]) -> None:
        """Forget pending blocks whose tokens are in ``tokens`` (their partition was revoked)."""
        for key in [k for k, p in self._pending.items() if any(t in tokens for _, t in p.sides.values())]:
            del self._pending[key]

    def _incomplete(self, record: CounterRecord) -> LossResult:
        clock = PeriodClock(record.period_s)
        known = self._nodes.get(record.flow, {})
        have_ingress = record.role == "ingress"
        return LossResult(
            flow=record.flow, period=record.period, period_start=clock.start_rfc3339(record.period),
            period_s=record.period_s,
            ingress=record.node if have_ingress else known.get("ingress"),
            egress=known.get("egress") if have_ingress else record.node,
            tx_packets=record.packets if have_ingress else None,
            rx_packets=None if have_ingress else record.packets,
            tx_bytes=record.bytes if have_ingress else None,
            rx_bytes=None if have_ingress else record.bytes,
            lost_packets=None, loss_ratio=None, complete=False,
            missing="egress" if have_ingress else "ingress",
        )


def loss_result(ingress: CounterRecord, egress: CounterRecord) -> LossResult:
    """The complete loss result of one period from its two blocks."""
    lost = ingress.packets - egress.packets
    if ingress.packets:
        ratio = lost / ingress.packets
    else:
        ratio = 0.0 if lost == 0 else None  # packets out of nothing: no meaningful ratio
    clock = PeriodClock(ingress.period_s)
    return LossResult(
        flow=ingress.flow, period=ingress.period, period_start=clock.start_rfc3339(ingress.period),
        period_s=ingress.period_s, ingress=ingress.node, egress=egress.node,
        tx_packets=ingress.packets, rx_packets=egress.packets,
        tx_bytes=ingress.bytes, rx_bytes=egress.bytes,
        lost_packets=lost, loss_ratio=ratio, complete=True,
    )
