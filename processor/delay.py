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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from operator import sub

from srv6pm.clock import period_clock
from srv6pm.records import DelayResult, StampSample

from .direct_loss import direction_loss
from .outcome import Outcome, Token, gather

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

    def take(self, samples: list[StampSample], tokens: list, now: float, closed: set, published: Mapping,
             add: Callable[[StampSample, Token, float], list[Outcome]]) -> tuple[list[Outcome], list, int]:
        """What a stage's ``take`` makes of a run of one partition (``samples`` in order, with the processor's
        ``tokens``, ``(topic, partition, offset)``), as :meth:`srv6pm.processor.stages.Stage.take` says
        (``closed``, ``published``: the results made already): returns (outcomes, ledger entries, replayed).

        The usual sample (it joins a window already open, is new to it, has its period length, has no
        ``impossible_timestamps`` and closes none of its session's windows) is taken here inline, exactly as
        :meth:`add` takes it; every other sample goes to ``add`` (the stage's, which counts what it must).
        """
        outcomes: list[Outcome] = []
        restored: list = []
        replayed = 0
        run_tokens: list = []  # of the run's outcome: what is finished as it is, and the outcomes merged into it
        run_results: list = []
        keep, append = run_tokens.append, outcomes.append
        windows_get, watermark, first_end = self._windows.get, self._watermark, self._first_end
        lateness_ns = self.lateness_ns
        published_get = published.get if published else None
        last_period_s: object = None
        period_ns = 0
        for sample, token in zip(samples, tokens, strict=True):
            d = sample.__dict__
            session, t1, period_s = d["session"], d["t1"], d["period_s"]
            if period_s != last_period_s:
                last_period_s, period_ns = period_s, period_clock(period_s).period_ns
            key = (session, t1 // period_ns)  # period_clock(period_s).period_at(t1)
            if key in closed:  # made in this batch or being written: a late or repeated sample
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
            window = windows_get(key)
            if window is not None and not d["impossible_timestamps"]:
                samples_of = window.samples
                seq = d["seq"]
                if seq not in samples_of and window.period_s == period_s:
                    mark = watermark.get(session, 0)
                    if t1 > mark:
                        mark = t1
                    if first_end[session] > mark - lateness_ns:  # it closes none of the session's windows
                        samples_of[seq] = sample
                        window.tokens.append(token)
                        window.last_seen = now
                        watermark[session] = mark
                        continue
            gather(add(sample, token, now), token, closed, append, run_tokens, run_results)
        if run_tokens:
            append(Outcome(run_tokens, run_results))
        return outcomes, restored, replayed

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
    forward: list[int] = []
    backward: list[int] = []
    round_trip: list[int] = []
    received = impossible = 0
    for s in samples:  # in sequence order, as each series is
        if s.lost:
            continue
        received += 1
        t1, t2, t3, t4 = s.t1, s.t2, s.t3, s.t4
        if s.impossible_timestamps:  # left out of forward and backward; round_trip keeps it when t3 >= t2
            impossible += 1
            assert t4 is not None, "a returned reply has t4 (records.stamp_from)"
            if t2 is not None and t3 is not None and t3 >= t2:
                round_trip.append((t4 - t1) - (t3 - t2))
            continue
        assert t2 is not None and t3 is not None and t4 is not None, \
            "a returned reply without impossible_timestamps has t2, t3 and t4 (records.stamp_from)"
        forward.append(t2 - t1)
        backward.append(t4 - t3)
        if t3 >= t2:
            round_trip.append((t4 - t1) - (t3 - t2))
    split = direction_loss(samples, before, after)
    lost_forward, lost_backward = split if split is not None else (None, None)
    # Each result as DelayResult(...) makes it (its fields in order), without the frozen class's __init__.
    common = {"session": session, "period": period, "period_start": period_clock(first.period_s).start_rfc3339(period),
              "period_s": first.period_s, "direction": None, "sender": first.sender, "reflector": first.reflector,
              "samples": received, "lost": len(samples) - received}
    tail = {"lost_forward": lost_forward, "lost_backward": lost_backward, "impossible_timestamps": impossible}
    out = []
    for direction, series in zip(DIRECTIONS, (forward, backward, round_trip), strict=True):
        values = common.copy()
        values["direction"] = direction
        values.update(statistics(series))
        values.update(tail)
        result = _new(DelayResult)
        _set(result, "__dict__", values)
        out.append(result)
    return out


_new = object.__new__
_set = object.__setattr__
_STATISTICS = ("min_us", "mean_us", "max_us", "p50_us", "p99_us", "jitter_us")


_ranks: dict[int, tuple[int, int]] = {}  # n -> the indices of p50 and p99 in n ordered delays


def _rank(n: int) -> tuple[int, int]:
    if len(_ranks) >= 4096:
        _ranks.clear()
    ranks = _ranks[n] = (max(1, math.ceil(50 / 100 * n)) - 1, max(1, math.ceil(99 / 100 * n)) - 1)
    return ranks


def statistics(delays_ns: list[int]) -> dict:
    """min/mean/max/p50/p99/jitter in µs of delays given in ns (in sequence order); None when empty.

    Percentiles by nearest rank; jitter the mean absolute difference of consecutive delays.
    """
    n = len(delays_ns)
    if not n:
        return dict.fromkeys(_STATISTICS)
    ordered = sorted(delays_ns)
    p50, p99 = _ranks.get(n) or _rank(n)
    # A delay is a whole number of ns: its µs, the float nearest to ns/1000, is already what round(., 3) gives.
    return {"min_us": ordered[0] / 1000, "mean_us": round(sum(ordered) / n / 1000, 3),
            "max_us": ordered[-1] / 1000, "p50_us": ordered[p50] / 1000, "p99_us": ordered[p99] / 1000,
            "jitter_us": round(sum(map(abs, map(sub, islice(delays_ns, 1, None), delays_ns))) / (n - 1) / 1000, 3)
            if n > 1 else None}
