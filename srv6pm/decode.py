"""Typed decoding of every topic's records, with exactly the result of ``records``; the one way to read them.

:func:`decode_counters`, :func:`decode_stamp` (the processor's inputs),
:func:`decode_loss`, :func:`decode_delay`, :func:`decode_alarm` and
:func:`decode_event` (the results, alarms and events their readers consume:
the collector, the lab, the processor's ledger, alarm state and liveness
store), or :func:`decode` by topic, return what the reference decoder of the
same name in :mod:`srv6pm.records` returns, and raise
:class:`~srv6pm.records.RecordError` with the same reason for the same input
(the reason a dead letter carries); only faster. ``records`` stays the reference: it parses
with the standard library and validates against the published JSON Schema
with jsonschema, which costs about 90 µs a record.

How: a msgspec typed decoder (``_CounterWire``, ``_StampWire``, ``_LossWire``, ...) parses and
checks the bytes into a dict in one pass, in C; for counter blocks (two per
flow-period) that dict, once the rules beyond the schema hold, becomes the
record's attributes as it is (:func:`fast_counters`). Its types say what the schema says, but
only in the *canonical* form that srv6pm's exporters write (an integer is a
JSON integer, ``"v"`` is the integer 1), so everything it accepts the schema
accepts too, with the same values. Whatever it does not accept goes to the
reference decoder, which then accepts it after all (a schema-valid record in
another form, such as ``"period": 5.0``) or gives the reason that goes on the
dead-letter topic. The rules beyond the schema (colour and period parity,
position and role, finite ``period_s``, the STAMP timestamp rules) are the
reference's own functions on both paths. What a typed dict cannot say of a
schema (the alarms schema's rules per kind, a ``date-time`` format) is checked
after it, in :func:`typed`, and refused there to the reference as well.
Values keep their JSON type on both paths (a result's JSON number is an int or a
float as written; ``period_s`` of counters and samples is made a float on both).
``tests/test_decode.py`` generates
valid and invalid records and checks both claims against jsonschema: fast
acceptance implies schema acceptance with the same record, and the decoder
as a whole accepts, rejects and explains exactly as the reference does.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from itertools import repeat
from operator import contains, eq, getitem, is_, mod
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec

from srv6pm import records
from srv6pm.records import Alarm, CounterRecord, DelayResult, Event, LossResult, RecordError, StampSample

__all__ = ["decode", "decode_alarm", "decode_counters", "decode_counters_all", "decode_delay", "decode_event",
           "decode_loss", "decode_stamp", "decode_stamp_all", "fast", "fast_counters", "fast_counters_all", "fast_stamp", "fast_stamp_all", "typed"]

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_Positive = Annotated[float, msgspec.Meta(gt=0)]
_Stamp = Annotated[int, msgspec.Meta(ge=1)]
_U32 = Annotated[int, msgspec.Meta(ge=0, le=4294967295)]
_Dscp = Annotated[int, msgspec.Meta(ge=0, le=63)]


class _CounterWire(TypedDict):
    """``srv6pm/schemas/srv6pm.counters.schema.json`` in canonical form (other members are ignored)."""

    v: Literal[1]
    node: _Name
    flow: _Name
    role: Literal["ingress", "egress", "transit"]
    period: _Count
    period_s: _Positive
    color: Literal[0, 1]
    packets: _Count
    bytes: _Count
    read_ns: NotRequired[int]  # optional, never null
    flowmon_id: NotRequired[Annotated[int, msgspec.Meta(ge=1, le=1048575)]]
    position: NotRequired[Annotated[int, msgspec.Meta(ge=0, le=255)]]


class _StampWire(TypedDict):
    """``srv6pm/schemas/srv6pm.stamp.schema.json`` in canonical form (other members are ignored)."""

    v: Literal[1]
    session: _Name
    seq: Annotated[int, msgspec.Meta(ge=0, le=4294967295)]
    period_s: _Positive
    t1: _Stamp
    t2: _Stamp | None
    t3: _Stamp | None
    t4: _Stamp | None
    lost: bool
    sender: NotRequired[str]  # optional, never null
    reflector: NotRequired[str]
    timestamps: NotRequired[dict[str, str]]
    ttl: NotRequired[int | None]
    reflector_seq: NotRequired[int | None]
    sender_tx: NotRequired[_U32]  # optional, never null (as are the rest)
    reflector_rx: NotRequired[_U32]
    reflector_tx: NotRequired[_U32]
    dscp: NotRequired[_Dscp]
    dscp_at_reflector: NotRequired[_Dscp]
    dscp_remarked: NotRequired[bool]
    reply_dscp: NotRequired[_Dscp]
    reply_dscp_remarked: NotRequired[bool]
    impossible_timestamps: NotRequired[Literal[True]]


# The result topics. A JSON number keeps its form (int or float), as json.loads gives it.
_Number = int | float
_NonNegative = Annotated[int, msgspec.Meta(ge=0)] | Annotated[float, msgspec.Meta(ge=0)]
_PositiveNumber = Annotated[int, msgspec.Meta(gt=0)] | Annotated[float, msgspec.Meta(gt=0)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_Direction = Literal["forward", "backward", "round_trip"]

_SegmentWire = TypedDict("_SegmentWire", {  # "from" is a keyword
    "from": str | None, "to": str | None, "tx_packets": _Count | None, "rx_packets": _Count | None,
    "lost_packets": int | None, "complete": bool,
})


class _LossWire(TypedDict):
    """``srv6pm/schemas/srv6pm.loss.schema.json`` (other members are ignored)."""

    v: Literal[1]
    flow: _NonEmpty
    period: _Count
    period_start: str  # date-time: checked after
    period_s: _PositiveNumber
    ingress: NotRequired[str | None]
    egress: NotRequired[str | None]
    tx_packets: _Count | None
    rx_packets: _Count | None
    tx_bytes: NotRequired[_Count | None]
    rx_bytes: NotRequired[_Count | None]
    lost_packets: int | None
    loss_ratio: _Number | None
    complete: bool
    missing: NotRequired[Literal["ingress", "egress", "both"] | None]
    flowmon_id: NotRequired[Annotated[int, msgspec.Meta(ge=1, le=1048575)]]
    segments: NotRequired[list[_SegmentWire]]


class _DelayWire(TypedDict):
    """``srv6pm/schemas/srv6pm.delay.schema.json`` (other members are ignored)."""

    v: Literal[1]
    session: _NonEmpty
    period: _Count
    period_start: str  # date-time: checked after
    period_s: _PositiveNumber
    direction: _Direction
    sender: NotRequired[str | None]
    reflector: NotRequired[str | None]
    samples: _Count
    lost: _Count
    min_us: _Number | None
    mean_us: _Number | None
    max_us: _Number | None
    p50_us: _Number | None
    p99_us: _Number | None
    jitter_us: _Number | None
    lost_forward: NotRequired[_Count]
    lost_backward: NotRequired[_Count]
    impossible_timestamps: NotRequired[_Count]


class _AlarmWire(TypedDict):
    """``srv6pm/schemas/srv6pm.alarms.schema.json`` but its ``allOf`` (checked after; other members are ignored)."""

    v: Literal[1]
    kind: Literal["loss_ratio", "delay_p99_us", "liveness"]
    subject: _NonEmpty
    direction: _Direction | None
    period: _Count
    period_start: str  # date-time: checked after
    period_s: _PositiveNumber
    value: _Number
    threshold: _NonNegative
    raised: bool
    time_ns: NotRequired[_Count]
    last_reply_ns: NotRequired[_Count | None]
    sender: NotRequired[_NonEmpty]
    reflector: NotRequired[_NonEmpty]


class _EventWire(TypedDict):
    """``srv6pm/schemas/srv6pm.events.schema.json`` (other members are ignored)."""

    v: Literal[1]
    time: str  # date-time: checked after
    kind: Literal["node_up", "node_down", "node_restarted", "applied", "removed", "apply_failed",
                  "config_loaded", "config_rejected", "converged", "path_down", "path_up"]
    node: _NonEmpty | None
    object: _NonEmpty | None
    detail: str | None
    boot_id: str | None
    generation: _Count


def _is_int(value: object, least: int) -> bool:
    """A JSON integer (as the typed decoder gives it: an int, not a float) of at least ``least``."""
    return type(value) is int and value >= least


def _alarm_rules(obj: dict) -> bool:
    """The alarms schema's ``allOf``: what each kind requires of ``direction``, ``value``, ``threshold``."""
    kind = obj["kind"]
    if kind == "delay_p99_us":
        return obj["direction"] is not None
    if obj["direction"] is not None:
        return False
    if kind == "liveness":  # (a float value or threshold of an integer's value is left to the reference)
        return _is_int(obj["value"], 1) and _is_int(obj["threshold"], 1) \
            and all(name in obj for name in records.LIVENESS_FIELDS)
    return True


def _date_time(topic: str, member: str):
    """The check, after the typed decoder, of the schema's ``"format": "date-time"`` of ``member``."""
    return lambda obj: records.conforms(topic, obj[member], "date-time")


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    records.COUNTERS: msgspec.json.Decoder(_CounterWire), records.STAMP: msgspec.json.Decoder(_StampWire),
    records.LOSS: msgspec.json.Decoder(_LossWire), records.DELAY: msgspec.json.Decoder(_DelayWire),
    records.ALARMS: msgspec.json.Decoder(_AlarmWire), records.EVENTS: msgspec.json.Decoder(_EventWire),
}
_AFTER: dict[str, tuple] = {  # what the typed dict cannot say, per topic: each must hold
    records.LOSS: (_date_time(records.LOSS, "period_start"),),
    records.DELAY: (_date_time(records.DELAY, "period_start"),),
    records.ALARMS: (_alarm_rules, _date_time(records.ALARMS, "period_start")),
    records.EVENTS: (_date_time(records.EVENTS, "time"),),
}
# A longer record may hold a number of more digits than json.loads converts (4300), which the reference
# refuses and msgspec would skip in a member it ignores: it is left to the reference.
_MAX = min(records.MAX_RECORD_BYTES, 4300)
# Nesting: json.loads and msgspec stop at about the same depth (the interpreter's recursion limit, 1000,
# less the caller's stack), json a few levels before msgspec. A value that could be that deep (that many
# brackets, in strings or not) is left to the reference: the typed decoder must not take what json.loads
# refuses. (A loss record of a 255-hop path has 257.)
_BRACKETS = 500


def _wire(decode_wire, raw: bytes | None) -> dict | None:
    """What the msgspec decoder ``decode_wire`` makes of ``raw``; None where it, or json.loads, would refuse it."""
    if raw is None or len(raw) > _MAX:
        return None
    try:
        if not raw.isascii():  # msgspec does not check the UTF-8 of the members it skips
            raw.decode("utf-8")
        if raw.count(b"[") + raw.count(b"{") > _BRACKETS:
            return None
        return decode_wire(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def typed(topic: str, raw: bytes | None) -> dict | None:
    """The members of ``raw`` if the typed decoder of ``topic`` accepts it (the schema's part), else None.

    Unknown members are left out of the dict.
    """
    obj = _wire(_DECODERS[topic].decode, raw)
    if obj is None:
        return None
    for holds in _AFTER.get(topic, ()):
        if not holds(obj):
            return None
    return obj


_counter_wire = _DECODERS[records.COUNTERS].decode
_new = object.__new__
_set = object.__setattr__
def _isfinite(value: int | float) -> bool:
    """math.isfinite, False (not OverflowError) for a whole number beyond a float's range."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def fast_counters(raw: bytes | None) -> CounterRecord | None:
    """The record, if the typed decoder accepts ``raw``; None if only the reference can tell.

    :func:`typed` and :func:`srv6pm.records.counter_from` in one function (see :func:`fast_counters_all`).
    """
    return fast_counters_all((raw,))[0]


def fast_counters_all(raws) -> list[CounterRecord | None]:
    """:func:`fast_counters` of each of ``raws``, in one loop (a fetched run of records, not a call per record).

    The rules beyond the schema are checked here in the same order as :func:`srv6pm.records.counter_from`,
    and anything they refuse is left to the reference (None), which gives the reason. The typed dict
    becomes the record's attributes as it is (the record is what ``counter_from`` builds). What
    :func:`_wire` checks first is checked here too: for a whole run at once where that tells (all of it
    ASCII; so few brackets in all that none of the records accepted can have more than ``_BRACKETS``:
    each of those has at least one), else record by record.
    """
    out: list[CounterRecord | None] = []
    append = out.append
    wire, most, brackets, isfinite = _counter_wire, _MAX, _BRACKETS, _isfinite
    new, set_, cls = _new, _set, CounterRecord
    whole, ascii_run, total = _array(raws)
    if whole is not None:
        run = _counters_run(raws, whole)
        if run is not None:
            return run
    for raw in raws:
        if raw is None or len(raw) > most:
            append(None)
            continue
        try:
            if not ascii_run and not raw.isascii():  # msgspec does not check the UTF-8 of the members it skips
                raw.decode("utf-8")
            if total < 0 and raw.count(b"[") + raw.count(b"{") > brackets:
                append(None)
                continue
            obj = wire(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            append(None)
            continue
        position = obj.get("position")
        if obj["color"] != obj["period"] % 2 or not isfinite(obj["period_s"]) \
                or (position is not None and (position == 0) != (obj["role"] == "ingress")):
            append(None)  # the reference gives the reason
            continue
        del obj["v"]
        if len(obj) != 11:  # the three optional members, None when absent
            obj.setdefault("read_ns", None)
            obj.setdefault("flowmon_id", None)
            obj.setdefault("position", None)
        record = new(cls)
        set_(record, "__dict__", obj)
        append(record)
    if total >= 0:
        accepted = len(out) - sum(map(is_, out, repeat(None)))
        if total - (accepted - 1) > brackets:  # one accepted record may have that many: each is counted
            for i, raw in enumerate(raws):
                if out[i] is not None and raw.count(b"[") + raw.count(b"{") > brackets:
                    out[i] = None
    return out


_counter_run = msgspec.json.Decoder(list[_CounterWire]).decode
_raw_run = msgspec.json.Decoder(list[msgspec.Raw]).decode
_stamp_run = msgspec.json.Decoder(list[_StampWire]).decode
_Raw = msgspec.Raw
_OPTIONAL = ("read_ns", "flowmon_id", "position")


def _array(raws) -> tuple[bytes | None, bool, int]:
    """(the run as one JSON array if it may be decoded whole, whether it is all ASCII, how many brackets its
    records have: -1 when each record's must be counted).

    Decoded whole (:func:`_elements`), a run needs what :func:`_wire` checks of each record to hold of all
    of them: ASCII throughout, none too large, and so few brackets in all that no record accepted can have
    more than ``_BRACKETS`` (each accepted one has at least one).
    """
    if len(raws) < 2 or any(map(is_, raws, repeat(None))):
        return None, False, -1
    whole = b"[" + b",".join(raws) + b"]"
    ascii_run = whole.isascii()
    total = whole.count(b"[") + whole.count(b"{") - 1  # the array's own bracket is not a record's
    if ascii_run and total - (len(raws) - 1) <= _BRACKETS and max(map(len, raws)) <= _MAX:
        return whole, ascii_run, total
    return None, ascii_run, total


def _elements(decode_run, raws, text: bytes) -> list | None:
    """What the typed decoder ``decode_run`` (of a list) makes of ``text`` (:func:`_array` of ``raws``), or None
    when it refuses any of it.

    That the array's elements are the records, each exactly (not a record's text split over two elements,
    or two joined), is checked on the same array, decoded as raw elements, against the records' bytes: then
    each element decodes as its record alone would.
    """
    try:
        elements = _raw_run(text)
        if len(elements) != len(raws) or not all(map(eq, elements, map(_Raw, raws))):
            return None
        return decode_run(text)
    except (msgspec.DecodeError, RecursionError):
        return None


def _counters_run(raws, text: bytes) -> list[CounterRecord | None] | None:
    """:func:`fast_counters_all` of a whole run (ASCII, each record within the size and bracket limits) in one
    decoder call, or None when the typed decoder refuses any of it (then it is decoded record by record).

    The run is decoded as one JSON array of its records (:func:`_elements`). The rules beyond the schema are
    checked on the whole run; a record one of them refuses is left to the reference (None), as in the loop.
    """
    objs = _elements(_counter_run, raws, text)
    if objs is None:
        return None
    n = len(objs)
    periods = list(map(getitem, objs, repeat("period")))
    good = list(map(eq, map(getitem, objs, repeat("color")), map(mod, periods, repeat(2))))
    every = all(good) and all(map(_isfinite, map(getitem, objs, repeat("period_s")))) \
        and not any(map(contains, objs, repeat("position")))  # every record passes the rules beyond the schema
    if not every:
        for i, obj in enumerate(objs):
            position = obj.get("position")
            if good[i] and (not _isfinite(obj["period_s"])
                            or (position is not None and (position == 0) != (obj["role"] == "ingress"))):
                good[i] = False
    _consume(map(dict.pop, objs, repeat("v")))
    for name in _OPTIONAL:  # None when absent (as the loop's setdefault)
        _consume(map(dict.setdefault, objs, repeat(name), repeat(None)))
    out: list[CounterRecord | None] = list(map(_new, repeat(CounterRecord, n)))
    _consume(map(_set, out, repeat("__dict__"), objs))
    if not every:
        for i, ok in enumerate(good):
            if not ok:
                out[i] = None  # the reference gives the reason
    return out


def _consume(iterator) -> None:
    """Run ``iterator`` (a map of calls made for what they do) to its end, in C."""
    _drain.extend(iterator)


_drain: deque = deque(maxlen=0)


def decode_counters_all(raws) -> list[CounterRecord | RecordError]:
    """:func:`decode_counters` of each of ``raws``: its record, or the RecordError it raises (the reason)."""
    return _referred(fast_counters_all(raws), raws, records.decode_counters)


def decode_stamp_all(raws) -> list[StampSample | RecordError]:
    """:func:`decode_stamp` of each of ``raws``: its sample, or the RecordError it raises (the reason)."""
    return _referred(fast_stamp_all(raws), raws, records.decode_stamp)


def _referred(out: list, raws, reference) -> list:
    """``out`` (a typed decoder's records of ``raws``, None where it leaves one to the reference) with each None
    replaced by what ``reference`` makes of its raw record: the record, or the RecordError it raises."""
    if any(map(is_, out, repeat(None))):
        for i, record in enumerate(out):
            if record is None:
                try:
                    out[i] = reference(raws[i])
                except RecordError as exc:
                    out[i] = exc
    return out


_STAMP_FIELDS = tuple(f.name for f in dataclasses.fields(StampSample))
_STAMP_ABSENT = dict.fromkeys(_STAMP_FIELDS)  # every attribute None, in field order: copied per sample (faster)


def fast_stamp(raw: bytes | None) -> StampSample | None:
    """The sample, if the typed decoder accepts ``raw``; None if only the reference can tell.

    A reply as senders make it (returned, plausible timestamps in order, the direct counters all
    or none) becomes the sample at once, its attributes the typed dict's members (absent ones
    None), as :func:`srv6pm.records.stamp_from` builds it; any other goes through ``stamp_from``.
    """
    obj = typed(records.STAMP, raw)
    return None if obj is None else _stamp_of(obj)


def fast_stamp_all(raws) -> list[StampSample | None]:
    """:func:`fast_stamp` of each of ``raws`` (a fetched run): decoded whole in one call where the typed decoder
    accepts all of it (see :func:`_array`), else record by record."""
    whole = _array(raws)[0]
    objs = None if whole is None else _elements(_stamp_run, raws, whole)
    if objs is None:
        return list(map(fast_stamp, raws))
    return list(map(_stamp_of, objs))


def _stamp_of(obj: dict) -> StampSample | None:
    """:func:`fast_stamp` of the typed dict ``obj``."""
    t1, t2, t3, t4 = obj["t1"], obj["t2"], obj["t3"], obj["t4"]
    if not obj["lost"] and "impossible_timestamps" not in obj and t2 is not None and t3 is not None \
            and t4 is not None and t4 >= t1 and t3 >= t2 and _isfinite(obj["period_s"]):
        present = ("sender_tx" in obj) + ("reflector_rx" in obj) + ("reflector_tx" in obj)  # the direct counters
        if present == 0 or present == 3:
            values = _STAMP_ABSENT.copy()
            values.update(obj)
            del values["v"]
            values["period_s"] = float(obj["period_s"])
            sample = _new(StampSample)
            _set(sample, "__dict__", values)
            return sample
    try:
        return records.stamp_from(obj)
    except RecordError:
        return None  # the reference gives the reason


def decode_counters(raw: bytes | None) -> CounterRecord:
    """:func:`srv6pm.records.decode_counters`, fast for canonical records."""
    record = fast_counters(raw)
    return record if record is not None else records.decode_counters(raw)


def decode_stamp(raw: bytes | None) -> StampSample:
    """:func:`srv6pm.records.decode_stamp`, fast for canonical records."""
    sample = fast_stamp(raw)
    return sample if sample is not None else records.decode_stamp(raw)


# -- results, alarms, events ------------------------------------------------------------------------------

_FROM = {records.LOSS: records.loss_from, records.DELAY: records.delay_from, records.ALARMS: records.alarm_from,
         records.EVENTS: records.event_from, records.STAMP: records.stamp_from, records.COUNTERS: records.counter_from}
_REFERENCE = {records.LOSS: records.decode_loss, records.DELAY: records.decode_delay,
              records.ALARMS: records.decode_alarm, records.EVENTS: records.decode_event,
              records.STAMP: records.decode_stamp, records.COUNTERS: records.decode_counters}


def fast(topic: str, raw: bytes | None) -> Any:
    """The record of ``topic`` in ``raw``, if the typed decoder accepts it; None if only the reference can tell."""
    obj = typed(topic, raw)
    if obj is None:
        return None
    try:
        return _FROM[topic](obj)
    except RecordError:
        return None  # a rule beyond the schema (counters, stamp): the reference gives the reason


def decode(topic: str, raw: bytes | None) -> Any:
    """The record of ``topic`` (one of the topics of :mod:`srv6pm.records` but the dead letters) in ``raw``.

    :func:`decode_counters`, :func:`decode_stamp`, :func:`decode_loss`, :func:`decode_delay`,
    :func:`decode_alarm` or :func:`decode_event`, by topic; KeyError for another topic.
    Raises :class:`~srv6pm.records.RecordError` with the reason.
    """
    if topic == records.COUNTERS:
        return decode_counters(raw)  # its own fast path
    record = fast(topic, raw)
    return record if record is not None else _REFERENCE[topic](raw)


def decode_loss(raw: bytes | None) -> LossResult:
    """:func:`srv6pm.records.decode_loss`, fast for the records the processor writes."""
    return decode(records.LOSS, raw)


def decode_delay(raw: bytes | None) -> DelayResult:
    """:func:`srv6pm.records.decode_delay`, fast for the records the processor writes."""
    return decode(records.DELAY, raw)


def decode_alarm(raw: bytes | None) -> Alarm:
    """:func:`srv6pm.records.decode_alarm`, fast for the alarms the processor and the exporters write."""
    return decode(records.ALARMS, raw)


def decode_event(raw: bytes | None) -> Event:
    """:func:`srv6pm.records.decode_event`, fast for the events the collector and the exporters write."""
    return decode(records.EVENTS, raw)
