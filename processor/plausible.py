"""Plausibility: what a decoded input record must also be to be true, beyond its schema.

A record can satisfy its JSON Schema and still not be true: a period index
and a ``period_s`` that put the period in 2112, a count of 2**80 packets, a
STAMP reply received in the year 37000. Such a record would become a result
(a loss record with ``period_start`` in 2112, a delay of 1.18e18 µs), so the
processor's stages run every decoded record through :func:`counters` or
:func:`stamp` before using it, and a record that breaks a rule goes to
``srv6pm.deadletter`` with a reason that starts with ``implausible:`` (the
rules below; README "Dead letters" lists them).

``srv6pm.counters`` (``now_ns``: the processor's clock when it reads the record):

* ``packets`` and ``bytes`` fit in 64 bits (the data planes' counters are
  64-bit), and ``bytes`` is at least ``packets`` (a packet has a byte);
* the period has started by now: ``period * period_s`` is not later than
  ``now + CLOCK_SKEW_S`` (a block is read after its period);
* with ``read_ns``: it lies in period ``period + 1``, where an exporter reads a
  block (at the guard time, the middle of period + 1), and not later than
  ``now + CLOCK_SKEW_S``. The read time and the period index come from the
  same clock, so this ties ``period`` to ``period_s`` exactly.

Counters are monotonic per generation at the source: a node exporter
publishes a block only as the growth of a counter of one generation that
did not go backwards (``srv6pm.exporter.blocks``); the records carry that
growth, which the rules above bound.

``srv6pm.stamp``:

* ``t1`` (sent) and, for a returned packet, ``t4`` (reply received) are not
  later than ``now + CLOCK_SKEW_S``, and every timestamp fits in 64 bits;
* a reply came back within ``MAX_ROUND_TRIP_S`` of its sending (``t4 - t1``),
  the reflector kept it at most that long (``t3 - t2``), and the reflector's
  clock is within ``MAX_CLOCK_OFFSET_S`` of the sender's (``t2 - t1`` and
  ``t4 - t3``), so neither one-way delay can be absurd.

Old records pass: a processor may re-read days of retained records after an
outage.
"""

from __future__ import annotations

from datetime import datetime, timezone

from srv6pm.clock import NS_PER_S, period_clock
from srv6pm.quote import quote
from srv6pm.records import CounterRecord, RecordError, StampSample

__all__ = ["CLOCK_SKEW_S", "MAX_CLOCK_OFFSET_S", "MAX_ROUND_TRIP_S", "Implausible", "counters", "counters_all",
           "stamp"]

MAX_64 = 2**64 - 1
CLOCK_SKEW_S = 60  # how far ahead of the processor's clock an exporter's may be
MAX_ROUND_TRIP_S = 120  # a sender gives a reply up after its timeout (at most 60 s)
MAX_CLOCK_OFFSET_S = 3600  # between a sender's and a reflector's clocks (e.g. TAI and UTC differ by 37 s)

PREFIX = "implausible: "


class Implausible(RecordError):
    """A record that satisfies its schema but cannot be true; ``str()`` is the dead-letter reason."""

    def __init__(self, message: str):
        super().__init__(PREFIX + message)


def _when(t_ns: int) -> str:
    """RFC 3339 text of ``t_ns`` (seconds), or where it lies when no calendar date fits."""
    try:
        return datetime.fromtimestamp(t_ns // NS_PER_S, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "beyond the year 9999"


_bounds: dict[tuple[float, int], tuple[int, int, int]] = {}  # (period_s, period) -> starts of period, +1, +2
_SKEW_NS = CLOCK_SKEW_S * NS_PER_S


def counters(record: CounterRecord, now_ns: int) -> CounterRecord:
    """``record`` if it is plausible at ``now_ns`` (Unix ns), else :class:`Implausible` with the reason."""
    blocks: list = [record]
    counters_all(blocks, now_ns)
    if blocks[0] is not record:
        raise blocks[0]
    return record


def counters_all(blocks: list, now_ns: int) -> None:
    """:func:`counters` of each :class:`CounterRecord` of ``blocks`` (other items are left as they are), in
    place: an implausible record is replaced by its :class:`Implausible`.

    Every block of a period shares its bounds: they are computed once per (period_s, period) and looked up
    once per run of blocks of one period; a record that passes every rule is kept at once, one that may
    not is judged by :func:`_counters`.
    """
    latest = now_ns + _SKEW_NS
    last: tuple | None = None  # (period_s, period) of the bounds in hand
    bounds: tuple[int, int, int] | None = None
    cls = CounterRecord
    for i, record in enumerate(blocks):
        if type(record) is not cls:
            continue
        packets, size = record.packets, record.bytes
        if packets <= size <= MAX_64:
            period, period_s = record.period, record.period_s
            if last is None or period != last[1] or period_s != last[0]:
                last = (period_s, period)
                bounds = _bounds_of(period_s, period)
            read = record.read_ns
            if bounds is not None and bounds[0] <= latest \
                    and (read is None or (read <= latest and bounds[1] <= read < bounds[2])):
                continue
        try:
            _counters(record, now_ns)
        except Implausible as exc:
            blocks[i] = exc


def _bounds_of(period_s: float, period: int) -> tuple[int, int, int] | None:
    """The starts of ``period``, the next and the one after (None: no clock for ``period_s``)."""
    key = (period_s, period)
    bounds = _bounds.get(key)
    if bounds is None:
        try:
            clock = period_clock(period_s)
            bounds = (clock.start_ns(period), clock.start_ns(period + 1), clock.start_ns(period + 2))
        except ValueError:
            return None
        if len(_bounds) >= 4096:
            _bounds.clear()
        _bounds[key] = bounds
    return bounds


def _counters(record: CounterRecord, now_ns: int) -> CounterRecord:
    """:func:`counters`, rule by rule, in the order the reasons are given."""
    for name in ("packets", "bytes"):
        value = getattr(record, name)
        if value > MAX_64:
            raise Implausible(f"{name} {quote(value)} does not fit in 64 bits")
    if record.bytes < record.packets:
        raise Implausible(f"bytes {record.bytes} is less than packets {record.packets}")
    try:
        clock = period_clock(record.period_s)
    except ValueError as exc:
        raise Implausible(f"period_s {quote(record.period_s)}: {exc}") from None
    latest = now_ns + CLOCK_SKEW_S * NS_PER_S
    start = clock.start_ns(record.period)
    if start > latest:
        raise Implausible(f"period {quote(record.period)} of {record.period_s:g} s starts at {_when(start)}, "
                          f"after the time now ({_when(now_ns)})")
    read = record.read_ns
    if read is not None:
        if read > latest:
            raise Implausible(f"read_ns {quote(read)} ({_when(read)}) is after the time now ({_when(now_ns)})")
        if not clock.start_ns(record.period + 1) <= read < clock.start_ns(record.period + 2):
            raise Implausible(f"read_ns {quote(read)} ({_when(read)}) is not in the period after period "
                              f"{record.period} of {record.period_s:g} s, when its block is read "
                              f"(period {record.period} starts at {_when(start)})")
    return record


_ROUND_TRIP_NS = MAX_ROUND_TRIP_S * NS_PER_S
_OFFSET_NS = MAX_CLOCK_OFFSET_S * NS_PER_S


def stamp(sample: StampSample, now_ns: int) -> StampSample:
    """``sample`` if it is plausible at ``now_ns`` (Unix ns), else :class:`Implausible` with the reason.

    A returned reply that passes every rule returns at once; any other sample is judged by :func:`_stamp`.
    """
    if not sample.lost and sample.period_s in _clocked:
        t1, t2, t3, t4 = sample.t1, sample.t2, sample.t3, sample.t4
        if t2 is not None and t3 is not None and t4 is not None and t4 <= now_ns + _SKEW_NS \
                and t1 <= t4 and t2 <= MAX_64 and t3 <= MAX_64 and t3 - t2 <= _ROUND_TRIP_NS \
                and t4 - t1 <= _ROUND_TRIP_NS and abs(t2 - t1) <= _OFFSET_NS and abs(t4 - t3) <= _OFFSET_NS:
            return sample
    return _stamp(sample, now_ns)


_clocked: set[float] = set()  # the period lengths that have a clock (period_clock): nearly always one or two


def _stamp(sample: StampSample, now_ns: int) -> StampSample:
    """:func:`stamp`, rule by rule, in the order the reasons are given."""
    if sample.period_s not in _clocked:
        try:
            period_clock(sample.period_s)
        except ValueError as exc:  # its windows could not be kept: no period of that length
            raise Implausible(f"period_s {quote(sample.period_s)}: {exc}") from None
        if len(_clocked) >= 4096:
            _clocked.clear()
        _clocked.add(sample.period_s)
    latest = now_ns + CLOCK_SKEW_S * NS_PER_S
    names = ("t1",) if sample.lost else ("t1", "t2", "t3", "t4")
    for name in names:
        value = getattr(sample, name)
        if value > MAX_64:
            raise Implausible(f"{name} {quote(value)} does not fit in 64 bits")
    for name in ("t1",) if sample.lost else ("t1", "t4"):
        value = getattr(sample, name)
        if value > latest:
            raise Implausible(f"{name} {quote(value)} ({_when(value)}) is after the time now ({_when(now_ns)})")
    if sample.lost:
        return sample
    t1, t2, t3, t4 = sample.t1, sample.t2, sample.t3, sample.t4
    assert t2 is not None and t3 is not None and t4 is not None  # a sample not lost has all four (stamp_from)
    if t3 - t2 > MAX_ROUND_TRIP_S * NS_PER_S:
        raise Implausible(f"t3 - t2 = {(t3 - t2) / NS_PER_S:.6g} s: a reflector answers within {MAX_ROUND_TRIP_S} s")
    if t4 - t1 > MAX_ROUND_TRIP_S * NS_PER_S:
        raise Implausible(f"t4 - t1 = {(t4 - t1) / NS_PER_S:.6g} s: a reply comes back within {MAX_ROUND_TRIP_S} s")
    for label, delta in (("t2 - t1", t2 - t1), ("t4 - t3", t4 - t3)):
        if abs(delta) > MAX_CLOCK_OFFSET_S * NS_PER_S:
            raise Implausible(f"{label} = {delta / NS_PER_S:.6g} s: the clocks of sender and reflector differ by "
                              f"more than {MAX_CLOCK_OFFSET_S} s")
    return sample
