"""Pairing of a flow's counting points into per-period loss results.

A flow's ingress exporter and egress exporter each publish one block per
period (``srv6pm.counters``). :class:`Pairing` holds the blocks of a
``(flow, period)`` until the period can be decided, then yields the exact
loss ``tx - rx``; if it cannot be decided within ``wait_s`` seconds of its
first block, it yields the period as it stands (an end that did not arrive
makes it *incomplete*, never loss).

Counters without positions (nftables data plane): a period is decided when its
ingress and egress blocks are both there; transit blocks are ignored.

Counters with positions (ebpf data plane: ingress 0, transit 1..E-1, egress
E): a period is decided when the ingress, the egress and every transit
position 1..E-1 are there. Its result carries ``segments``, one per pair of
consecutive positions (see :func:`segments`). When the wait runs out, the
end-to-end figures are complete if both ends are there, and a segment that
touches a point that did not arrive is incomplete (never loss). Only transit
blocks (no end at all): the period is incomplete with ``missing="both"``.

Every input record is identified by an opaque *token*; each
:class:`~srv6pm.processor.outcome.Outcome` lists the tokens it consumed (every
block the result was made of, transit blocks included), so the caller can tell
when a record's work is finished (stored and published) and only then let the
consumer offset move past it. An outcome without results is a transit block
without a position or an exact duplicate; a conflicting block is rejected
(dead-lettered): a second, different block for the same counting point, a
period length or FlowMonID that differs from the period's other blocks, or a
transit position at or past the egress's.

Pairing is pure: it never reads the clock; callers pass ``now`` (seconds,
monotonic) in. It is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from srv6pm.clock import period_clock
from srv6pm.records import CounterRecord, LossResult, Segment

from .outcome import Outcome, Token

__all__ = ["Pairing", "loss_result", "segments"]

_new = object.__new__
_set = object.__setattr__  # a record's attributes in one dict: what the frozen dataclass's __init__ makes

Held = tuple[CounterRecord, Token]
_First = tuple[CounterRecord, Token, float]
"""A period's lone end block without a position, with the time it came (the usual first block: kept as a
plain tuple, since a flow-period is made and paired tens of thousands of times a second)."""


class _Pending:
    """The blocks of one (flow, period) so far."""

    __slots__ = ("first_seen", "ends", "transits")

    def __init__(self, first_seen: float):
        self.first_seen = first_seen
        self.ends: dict[str, Held] = {}  # "ingress" / "egress"
        self.transits: dict[int, Held] = {}  # position -> block

    @classmethod
    def of(cls, first: "_First") -> "_Pending":
        """The pending period of a lone end block."""
        record, token, first_seen = first
        pending = cls(first_seen)
        pending.ends[record.role] = (record, token)
        return pending

    def held(self) -> list[Held]:
        """Every block: ingress, egress, then transits in path order."""
        ends = self.ends
        out = []
        if "ingress" in ends:
            out.append(ends["ingress"])
        if "egress" in ends:
            out.append(ends["egress"])
        if self.transits:
            out += [self.transits[p] for p in sorted(self.transits)]
        return out

    def slot(self, record: CounterRecord) -> Held | None:
        if record.role == "transit":
            assert record.position is not None, "Pairing.add answers a transit block without a position itself"
            return self.transits.get(record.position)
        return self.ends.get(record.role)

    def put(self, record: CounterRecord, token: Token) -> None:
        if record.role == "transit":
            assert record.position is not None, "Pairing.add answers a transit block without a position itself"
            self.transits[record.position] = (record, token)
        else:
            self.ends[record.role] = (record, token)

    def decided(self) -> bool:
        """Both ends are there, and every transit position before the egress's (when it has one)."""
        if "ingress" not in self.ends or "egress" not in self.ends:
            return False
        last = self.ends["egress"][0].position
        return last is None or all(p in self.transits for p in range(1, last))


class Pairing:
    """Pairs the blocks of each ``(flow, period)`` (see the module docstring for the rules)."""

    def __init__(self, wait_s: float):
        if wait_s <= 0:
            raise ValueError("wait_s must be positive")
        self.wait_s = wait_s
        self._pending: dict[tuple[str, int], _Pending | _First] = {}
        # Pending periods are added with the ``now`` of their first block, and a later call's ``now`` is never
        # earlier (the stages' clock): the dict is then in first-seen order, and :meth:`expire` stops at the
        # first period still within its wait. A call whose ``now`` goes back turns that off for good.
        self._last_now = float("-inf")
        self._ordered = True
        # Last node seen on each side of each flow, so that an incomplete
        # period is still tagged with the node of its missing side.
        self._nodes: dict[str, dict[str, str]] = {}
        # Last node seen at each position of each flow, and the flow's last
        # egress position: they name the points of segments whose blocks did not arrive.
        self._layout: dict[str, dict[int, str]] = {}
        self._egress_at: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def pending_tokens(self) -> list[Token]:
        return [tok for p in self._pending.values() for _, tok in _as_pending(p).held()]

    def _clock(self, now: float) -> None:
        """Note a call's ``now`` (see ``_ordered``)."""
        if now < self._last_now:
            self._ordered = False
        self._last_now = now

    def add(self, record: CounterRecord, token: Token, now: float) -> Outcome | None:
        """Take one block. Returns an Outcome when ``token``'s fate is decided now."""
        self._clock(now)
        role = record.role
        if role == "transit":
            if record.position is None:
                # Without a position a transit block cannot be placed on the path;
                # end-to-end loss needs only the two ends.
                return Outcome([token])
        else:
            nodes = self._nodes.get(record.flow)
            if nodes is None:
                nodes = self._nodes[record.flow] = {}
            nodes[role] = record.node
        key = (record.flow, record.period)
        pending = self._pending.get(key)
        if pending is None:
            if role != "transit" and record.position is None:
                self._pending[key] = (record, token, now)  # the usual first block: see _First
                return None
            pending = self._pending[key] = _Pending(now)
        else:
            if isinstance(pending, tuple):  # not a _Pending: a _First
                other, other_token, _ = pending
                if other.role != role and role != "transit" and record.position is None:
                    # The other end, and no positions (nftables counters): the usual pair.
                    reason = _mismatch(other, other.flowmon_id, record)
                    if reason is not None:
                        return Outcome([token], rejected={token: reason})
                    del self._pending[key]
                    if role == "egress":
                        return Outcome([other_token, token], [loss_result(other, record)])
                    return Outcome([token, other_token], [loss_result(record, other)])
                pending = self._pending[key] = _Pending.of(pending)
            reason = _conflict(pending, record)
            if reason == "":
                return Outcome([token])  # the same block again (an exporter retry): nothing to do
            if reason is not None:
                return Outcome([token], rejected={token: reason})
        pending.put(record, token)
        if record.position is not None:
            self._remember(record)
        if not pending.decided():
            return None
        del self._pending[key]
        held = pending.held()
        return Outcome([tok for _, tok in held], [self._result(pending, held)])

    def take(self, blocks: list[CounterRecord], tokens: list, now: float, closed: set,
             published: Mapping) -> tuple[list[Outcome], list, int]:
        """:meth:`add` of each of ``blocks`` (a run of one partition, in order), as
        :meth:`srv6pm.processor.stages.Stage.take` says (``closed``, ``published``: what is made already).

        ``tokens`` are the processor's, ``(topic, partition, offset)``. The usual blocks (ends without
        positions: the first of a period kept, the second paired with it) are taken here inline; every other
        block goes through :meth:`add`. The run's results whose first token is of this run's partition, and
        every token finished as it is, make one outcome (the outcomes of :meth:`add` come as they are).
        """
        self._clock(now)
        pending, nodes_of = self._pending, self._nodes
        run_tokens: list = []
        run_results: list[LossResult] = []
        outcomes: list[Outcome] = []
        restored: list = []
        replayed = 0
        add, closed_add, keep, made = self.add, closed.add, run_tokens.append, run_results.append
        published_get = published.get if published else None
        for record, token in zip(blocks, tokens, strict=True):
            d = record.__dict__
            flow = d["flow"]
            key = (flow, d["period"])
            if key in closed:  # made in this batch or being written: a late or repeated block
                replayed += 1
                keep(token)
                continue
            if published_get is not None:
                held = published_get(key)
                if held is not None:  # re-read after a restart, or late after its period was closed
                    replayed += 1
                    restored.append(held)
                    keep(token)
                    continue
            role = d["role"]
            if role != "transit" and d["position"] is None:
                first = pending.get(key)
                if first is None:  # the period's first block: kept as a _First
                    nodes = nodes_of.get(flow)
                    if nodes is None:
                        nodes = nodes_of[flow] = {}
                    nodes[role] = d["node"]
                    pending[key] = (record, token, now)
                    continue
                if type(first) is tuple:
                    other = first[0]
                    o = other.__dict__
                    ours, theirs = d["flowmon_id"], o["flowmon_id"]
                    if o["role"] != role and o["period_s"] == d["period_s"] \
                            and (ours is None or theirs is None or ours == theirs):
                        # the other end, and no positions (nftables counters): the usual pair (see add)
                        nodes_of[flow][role] = d["node"]
                        del pending[key]
                        other_token: tuple = first[1]  # type: ignore[assignment]  # the processor's (see above)
                        closed_add(key)
                        if role == "egress":
                            result = loss_result(other, record)
                            if other_token[1] != token[1]:  # its first token is another partition's (one topic)
                                outcomes.append(Outcome([other_token, token], [result]))
                                continue
                        else:
                            result = loss_result(record, other)
                        keep(token)
                        keep(other_token)
                        made(result)
                        continue
            outcome = add(record, token, now)
            if outcome is not None:
                for r in outcome.results:
                    closed_add((r.subject, r.period))
                outcomes.append(outcome)
        if run_tokens:
            outcomes.append(Outcome(run_tokens, run_results))
        return outcomes, restored, replayed

    def expire(self, now: float) -> list[Outcome]:
        """The results of every ``(flow, period)`` that waited ``wait_s`` or more, as they stand, oldest first.

        Linear in the periods that expire, not in all those pending, while the dict is in first-seen order
        (``_ordered``); otherwise every pending period is looked at.
        """
        out = []
        wait_s = self.wait_s
        ordered = self._ordered
        expired = []
        for k, p in self._pending.items():
            if now - (p[2] if isinstance(p, tuple) else p.first_seen) >= wait_s:
                expired.append(k)
            elif ordered:
                break
        for key in expired:
            pending = _as_pending(self._pending.pop(key))
            held = pending.held()
            out.append(Outcome([tok for _, tok in held], [self._result(pending, held)]))
        return out

    def drop(self, tokens: set[Token]) -> None:
        """Forget pending blocks whose tokens are in ``tokens`` (their partition was revoked)."""
        for key in [k for k, p in self._pending.items() if any(t in tokens for _, t in _as_pending(p).held())]:
            del self._pending[key]

    def _remember(self, record: CounterRecord) -> None:
        """Note the node at the position of ``record`` (which has one)."""
        position = record.position
        assert position is not None, "called only for a record with a position"
        self._layout.setdefault(record.flow, {})[position] = record.node
        if record.role == "egress":
            self._egress_at[record.flow] = position

    def _result(self, pending: _Pending, held: list[Held]) -> LossResult:
        ingress = pending.ends.get("ingress", (None,))[0]
        egress = pending.ends.get("egress", (None,))[0]
        if ingress is not None and egress is not None:
            result = loss_result(ingress, egress)
            if not pending.transits and ingress.position is None and egress.position is None:
                return result  # no segments; its FlowMonID is the ends' (loss_result)
        blocks = [record for record, _ in held]
        if ingress is None or egress is None:
            result = self._incomplete(blocks[0], ingress, egress)
        flowmon_id = _flowmon_id(blocks)
        if flowmon_id != result.flowmon_id:
            result = replace(result, flowmon_id=flowmon_id)
        if not any(b.position is not None for b in blocks):
            return result
        flow = blocks[0].flow
        points = {p: record for p, (record, _) in pending.transits.items()}
        if ingress is not None:
            points[0] = ingress
        if egress is not None:
            last = egress.position  # None: an egress without a position is no point of the segments
            if last is not None:
                points[last] = egress
        else:
            last = self._egress_at.get(flow)
            if last is not None and last <= max(points, default=0):
                last = None  # remembered from another path: the egress is further on, at an unknown position
        known = dict(self._layout.get(flow, {}))
        ends = self._nodes.get(flow, {})
        if "ingress" in ends:
            known.setdefault(0, ends["ingress"])
        if last is not None and "egress" in ends:
            known.setdefault(last, ends["egress"])
        return replace(result, segments=tuple(segments(points, last, known)))

    def _incomplete(self, first: CounterRecord, ingress: CounterRecord | None,
                    egress: CounterRecord | None) -> LossResult:
        """The end-to-end figures of a period that lacks an end (or both); ``first`` is any of its blocks."""
        clock = period_clock(first.period_s)
        known = self._nodes.get(first.flow, {})
        return LossResult(
            flow=first.flow, period=first.period, period_start=clock.start_rfc3339(first.period),
            period_s=first.period_s,
            ingress=ingress.node if ingress else known.get("ingress"),
            egress=egress.node if egress else known.get("egress"),
            tx_packets=ingress.packets if ingress else None,
            rx_packets=egress.packets if egress else None,
            tx_bytes=ingress.bytes if ingress else None,
            rx_bytes=egress.bytes if egress else None,
            lost_packets=None, loss_ratio=None, complete=False,
            missing="egress" if ingress else "ingress" if egress else "both",
        )


def _as_pending(pending: _Pending | _First) -> _Pending:
    return _Pending.of(pending) if isinstance(pending, tuple) else pending


def _conflict(pending: _Pending, record: CounterRecord) -> str | None:
    """Why ``record`` cannot join ``pending``: None if it can, "" if it is an exact duplicate."""
    held = pending.slot(record)
    if held is not None:
        if held[0] == record:
            return ""
        point = record.role if record.role != "transit" else f"transit position {record.position}"
        return (f"conflicting duplicate {point} block {_where(record)}: "
                f"{record.packets} packets from {record.node!r}, already have {held[0].packets} from {held[0].node!r}")
    ends = pending.ends
    other = (ends.get("ingress") or ends.get("egress") or pending.held()[0])[0]  # the first held block
    reason = _mismatch(other, _flowmon_id(r for r, _ in pending.held()) if record.flowmon_id is not None else None,
                       record)
    if reason is not None:
        return reason
    if not pending.transits and record.role != "transit":
        return None
    egress = ends.get("egress", (None,))[0]
    if record.role == "transit" and egress is not None and egress.position is not None \
            and record.position is not None and record.position >= egress.position:
        return (f"transit position {record.position} of {record.node!r} is not before the egress position "
                f"{egress.position} {_where(record)}")
    if record.role == "egress" and record.position is not None and pending.transits \
            and max(pending.transits) >= record.position:
        return (f"egress position {record.position} of {record.node!r} is not after transit position "
                f"{max(pending.transits)} {_where(record)}")
    return None


def _mismatch(other: CounterRecord, theirs: int | None, record: CounterRecord) -> str | None:
    """Why ``record`` does not belong with the period's first held block ``other`` (whose blocks' FlowMonID
    is ``theirs``): another period length or FlowMonID; None if it does."""
    if other.period_s != record.period_s:
        return f"period_s {record.period_s:g} differs from the {other.role} block's {other.period_s:g} {_where(record)}"
    if record.flowmon_id is not None and theirs is not None and record.flowmon_id != theirs:
        return (f"flowmon_id {record.flowmon_id} differs from the period's other blocks' {theirs} "
                f"{_where(record)}")
    return None


def _where(record: CounterRecord) -> str:
    return f"for flow {record.flow!r} period {record.period}"


def _flowmon_id(blocks) -> int | None:
    return next((b.flowmon_id for b in blocks if b.flowmon_id is not None), None)


def segments(points: Mapping[int, CounterRecord], last: int | None, nodes: Mapping[int, str]) -> list[Segment]:
    """The segments p → p+1 for p in 0..last-1 (0..highest point when ``last`` is None).

    ``points`` are the blocks that arrived, by position (the ingress at 0, the
    egress at ``last``); ``nodes`` names positions whose block did not arrive
    (from earlier periods). A segment is complete when both its blocks
    arrived: ``lost_packets = tx - rx``. Otherwise it is incomplete, with
    ``lost_packets`` None and only the count that is known.
    """
    end = last if last is not None else max(points, default=0)
    out = []
    for p in range(end):
        a, b = points.get(p), points.get(p + 1)
        out.append(Segment(
            from_node=a.node if a else nodes.get(p), to_node=b.node if b else nodes.get(p + 1),
            tx_packets=a.packets if a else None, rx_packets=b.packets if b else None,
            lost_packets=a.packets - b.packets if a and b else None, complete=bool(a and b),
        ))
    return out


_starts: dict[tuple[float, int], str] = {}  # (period_s, period) -> RFC 3339 start: every flow of a period shares it


def _start(period_s: float, period: int) -> str:
    text = _starts.get((period_s, period))
    if text is None:
        if len(_starts) >= 4096:
            _starts.clear()
        text = _starts[(period_s, period)] = period_clock(period_s).start_rfc3339(period)
    return text


def loss_result(ingress: CounterRecord, egress: CounterRecord) -> LossResult:
    """The complete loss result of one period from its two end blocks (without segments)."""
    tx = ingress.packets
    lost = tx - egress.packets
    ratio: float | None
    if tx:
        ratio = lost / tx
    else:
        ratio = 0.0 if lost == 0 else None  # packets out of nothing: no meaningful ratio
    flowmon_id = ingress.flowmon_id
    if flowmon_id is None:
        flowmon_id = egress.flowmon_id
    result = _new(LossResult)
    values = {
        "flow": ingress.flow, "period": ingress.period, "period_start": _start(ingress.period_s, ingress.period),
        "period_s": ingress.period_s, "ingress": ingress.node, "egress": egress.node,
        "tx_packets": tx, "rx_packets": egress.packets,
        "tx_bytes": ingress.bytes, "rx_bytes": egress.bytes,
        "lost_packets": lost, "loss_ratio": ratio, "complete": True, "missing": None,
    }  # segments None, and flowmon_id when None: the class's defaults (see LossResult.to_dict)
    if flowmon_id is not None:
        values["flowmon_id"] = flowmon_id
    _set(result, "__dict__", values)
    return result
