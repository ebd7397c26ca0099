"""Per-period delay statistics from STAMP samples.

A STAMP test packet belongs to the period that contains its send time t1.
:class:`DelayWindows` collects the samples of each ``(session, period)`` and
closes the window when it can no longer change:

* by event time: once the session has a sample sent ``lateness_s`` or more
  after the end of the period (samples of a session arrive in the order the
  sender decided them; a lost packet is decided one sender timeout after it
  was sent, so ``lateness_s`` must exceed that timeout plus the sender's
  publishing delay);
* by wall time: when nothing arrived for the window during ``idle_s`` seconds
  (the session stopped).

A closed window yields three :class:`~srv6pm.records.DelayResult` records,
``forward`` (t2−t1), ``backward`` (t4−t3) and ``round_trip`` ((t4−t1)−(t3−t2)).
Replies flagged ``impossible_timestamps`` are counted (``impossible_timestamps``)
and left out of ``forward`` and ``backward`` (``round_trip`` keeps them when
t3 >= t2). ``lost_forward`` / ``lost_backward`` come from the replies'
Direct Measurement counters (:mod:`.direct_loss`): with the session's last
reply before the window (kept from the windows closed before) and its first
reply after it (from the windows still open).
Like ``pairing``, this module is pure: ``now`` (monotonic seconds) comes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import islice
from operator import sub

from srv6pm.clock import period_clock
from srv6pm.records import DelayResult, StampSample

from .direct_loss import direction_loss
from .outcome import Outcome, Token

__all__ = ["DIRECTIONS", "DelayWindows", "statistics"]

DIRECTIONS = ("forward", "backward", "round_trip")


@dataclass
class _Window:
    last_seen: float
    end_ns: int  # the end of its period (by the period_s of its samples, which all share it)
    period_s: float  # of its samples: its first one's
    samples: dict[int, StampSample] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)


class DelayWindows:
    """Windows of STAMP samples per (session, period)."""

    def __init__(self, lateness_s: float, idle_s: float):
        if lateness_s < 0 or idle_s <= 0:
            raise ValueError("lateness_s must be >= 0 and idle_s > 0")
        self.lateness_ns = round(lateness_s * 1e9)
        self.idle_s = idle_s
        self._windows: dict[tuple[str, int], _Window] = {}
        self._watermark: dict[str, int] = {}  # per session: latest t1 seen
        self._last_reply: dict[str, StampSample] = {}  # per session: the last reply of the windows closed
        self._open: dict[str, set[int]] = {}  # per session: the periods of its windows (a sample looks only at these)
        self._first_end: dict[str, int] = {}  # per session: the earliest end_ns of its windows (none closes before)

    def __len__(self) -> int:
        return len(self._windows)

    def pending_tokens(self) -> list[Token]:
        return [t for w in self._windows.values() for t in w.tokens]

    def add(self, sample: StampSample, token: Token, now: float) -> list[Outcome]:
        """Take one sample; returns the outcomes of the windows this closes (and of a rejected sample)."""
        clock = period_clock(sample.period_s)
        key = (sample.session, clock.period_at(sample.t1))
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now, clock.start_ns(key[1] + 1), sample.period_s)
            self._open.setdefault(sample.session, set()).add(key[1])
            first_end = self._first_end.get(sample.session)
            if first_end is None or window.end_ns < first_end:
                self._first_end[sample.session] = window.end_ns
        held = window.samples.get(sample.seq)
        if held is not None:
            if held == sample:
                return [Outcome([token])]  # the same sample again
            return [Outcome([token], rejected={token: (
                f"conflicting duplicate of seq {sample.seq} in session {sample.session!r}")})]
        if window.samples and window.period_s != sample.period_s:
            return [Outcome([token], rejected={token: (
                f"period_s {sample.period_s:g} differs from the other samples of session {sample.session!r}")})]
        window.samples[sample.seq] = sample
        window.tokens.append(token)
        window.last_seen = now
        mark = max(self._watermark.get(sample.session, 0), sample.t1)
        self._watermark[sample.session] = mark
        session = sample.session
        windows, closes_at = self._windows, mark - self.lateness_ns  # closable: mark >= end + lateness
        if self._first_end[session] > closes_at:  # none of its windows (the usual sample)
            return []
        closable = [p for p in self._open[session] if windows[(session, p)].end_ns <= closes_at]
        if not closable:
            return []
        return [self._close((session, p)) for p in sorted(closable)]

    def joins(self, key: tuple[str, int], sample: StampSample, token: Token, now: float) -> bool:
        """:meth:`add` of the usual sample, whose window is ``key``: it joins that window, open already, is new to
        it, has its period length, and closes none of its session's windows. False (and nothing changed) for any
        other sample, which :meth:`add` then takes."""
        window = self._windows.get(key)
        if window is None:
            return False
        held = window.samples
        seq = sample.seq
        if seq in held or window.period_s != sample.period_s:
            return False
        session = sample.session
        mark = self._watermark.get(session, 0)
        t1 = sample.t1
        if t1 > mark:
            mark = t1
        if self._first_end[session] <= mark - self.lateness_ns:  # it closes a window: add() does
            return False
        held[seq] = sample
        window.tokens.append(token)
        window.last_seen = now
        self._watermark[session] = mark
        return True

    def expire(self, now: float) -> list[Outcome]:
        """Close every window that received nothing for ``idle_s``, in key order (only those are sorted: a
        step's scan of the open windows stays linear)."""
        idle_s = self.idle_s
        return [self._close(k) for k in sorted([k for k, w in self._windows.items() if now - w.last_seen >= idle_s])]

    def drop(self, tokens: set[Token]) -> None:
        """Forget windows holding any of ``tokens`` (their partition was revoked), and the last replies
        of their sessions (another processor may see the next ones: a later reply here would not be the
        next one)."""
        for key in [k for k, w in self._windows.items() if any(t in tokens for t in w.tokens)]:
            del self._windows[key]
            self._last_reply.pop(key[0], None)
            self._forget(key)

    def _forget(self, key: tuple[str, int]) -> None:
        """``key``'s window is gone: take it out of its session's periods."""
        session = key[0]
        periods = self._open[session]
        periods.discard(key[1])
        if not periods:
            del self._open[session]
            del self._first_end[session]
        else:
            self._first_end[session] = min(self._windows[(session, p)].end_ns for p in periods)

    def _close(self, key: tuple[str, int]) -> Outcome:
        window = self._windows.pop(key)
        self._forget(key)
        samples = [window.samples[s] for s in sorted(window.samples)]
        session = key[0]
        before = self._last_reply.get(session)
        later = [(session, p) for p in sorted(self._open.get(session, ())) if p > key[1]]  # its windows only
        after = next((min((s for s in self._windows[k].samples.values() if not s.lost), key=lambda s: s.seq)
                      for k in later if any(not s.lost for s in self._windows[k].samples.values())), None)
        replies = [s for s in samples if not s.lost]
        if replies and (before is None or replies[-1].t1 > before.t1):
            self._last_reply[session] = replies[-1]
        return Outcome(window.tokens, results(session, key[1], samples, before, after))


def results(session: str, period: int, samples: list[StampSample], before: StampSample | None = None,
            after: StampSample | None = None) -> list[DelayResult]:
    """The three direction results of one window (``samples`` in sequence order; ``before``/``after``:
    the session's replies around the window, see :func:`.direct_loss.direction_loss`)."""
    first = samples[0]
    clock = period_clock(first.period_s)
    received = [s for s in samples if not s.lost]
    lost = len(samples) - len(received)
    plausible = [s for s in received if not s.impossible_timestamps]
    forward: list[int] = []
    backward: list[int] = []
    round_trip: list[int] = []
    for s in plausible:
        assert s.t2 is not None and s.t3 is not None and s.t4 is not None, \
            "a returned reply without impossible_timestamps has t2, t3 and t4 (records.stamp_from)"
        forward.append(s.t2 - s.t1)
        backward.append(s.t4 - s.t3)
    for s in received:
        assert s.t4 is not None, "a returned reply has t4 (records.stamp_from)"
        if s.t2 is not None and s.t3 is not None and s.t3 >= s.t2:
            round_trip.append((s.t4 - s.t1) - (s.t3 - s.t2))
    series = {"forward": forward, "backward": backward, "round_trip": round_trip}
    split = direction_loss(samples, before, after)
    lost_forward, lost_backward = split if split is not None else (None, None)
    out = []
    start = clock.start_rfc3339(period)
    impossible = len(received) - len(plausible)
    for direction in DIRECTIONS:
        # The result as DelayResult(...) makes it (its fields in order), without the frozen class's __init__.
        values = {"session": session, "period": period, "period_start": start, "period_s": first.period_s,
                  "direction": direction, "sender": first.sender, "reflector": first.reflector,
                  "samples": len(received), "lost": lost, **statistics(series[direction]),
                  "lost_forward": lost_forward, "lost_backward": lost_backward, "impossible_timestamps": impossible}
        result = _new(DelayResult)
        _set(result, "__dict__", values)
        out.append(result)
    return out


_new = object.__new__
_set = object.__setattr__
_STATISTICS = ("min_us", "mean_us", "max_us", "p50_us", "p99_us", "jitter_us")


def statistics(delays_ns: list[int]) -> dict:
    """min/mean/max/p50/p99/jitter in µs of delays given in ns (in sequence order); None when empty.

    Percentiles by nearest rank; jitter the mean absolute difference of consecutive delays.
    """
    if not delays_ns:
        return dict.fromkeys(_STATISTICS)
    ordered = sorted(delays_ns)
    n = len(ordered)
    jitter = sum(map(abs, map(sub, islice(delays_ns, 1, None), delays_ns))) / (n - 1) if n > 1 else None
    return {"min_us": round(ordered[0] / 1000, 3), "mean_us": round(sum(ordered) / n / 1000, 3),
            "max_us": round(ordered[-1] / 1000, 3),
            "p50_us": round(ordered[max(1, math.ceil(50 / 100 * n)) - 1] / 1000, 3),
            "p99_us": round(ordered[max(1, math.ceil(99 / 100 * n)) - 1] / 1000, 3),
            "jitter_us": None if jitter is None else round(jitter / 1000, 3)}
