"""Fast decoding of the processor's input records, with exactly the result of ``records``.

:func:`decode_counters` and :func:`decode_stamp` return what
:func:`srv6pm.records.decode_counters` and :func:`srv6pm.records.decode_stamp`
return, and raise :class:`~srv6pm.records.RecordError` with the same reason
for the same input; only faster. ``records`` stays the reference: it parses
with the standard library and validates against the published JSON Schema
with jsonschema, which costs about 90 µs a record.

How: a msgspec typed decoder (``_CounterWire``, ``_StampWire``) parses and
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
reference's own functions on both paths. ``tests/test_decode.py`` generates
valid and invalid records and checks both claims against jsonschema: fast
acceptance implies schema acceptance with the same record, and the decoder
as a whole accepts, rejects and explains exactly as the reference does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec

from srv6pm import records
from srv6pm.records import CounterRecord, RecordError, StampSample

__all__ = ["decode_counters", "decode_stamp", "fast_counters", "fast_stamp", "typed"]

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


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {records.COUNTERS: msgspec.json.Decoder(_CounterWire), records.STAMP: msgspec.json.Decoder(_StampWire)}
_MAX = records.MAX_RECORD_BYTES


def typed(topic: str, raw: bytes | None) -> dict | None:
    """The members of ``raw`` if the typed decoder of ``topic`` accepts it (the schema's part), else None.

    Unknown members are left out of the dict.
    """
    if raw is None or len(raw) > _MAX:
        return None
    try:
        if not raw.isascii():  # msgspec does not check the UTF-8 of the members it skips
            raw.decode("utf-8")
        return _DECODERS[topic].decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


_counter_wire = _DECODERS[records.COUNTERS].decode
_new = object.__new__
_set = object.__setattr__
_isfinite = math.isfinite


def fast_counters(raw: bytes | None) -> CounterRecord | None:
    """The record, if the typed decoder accepts ``raw``; None if only the reference can tell.

    :func:`typed` and :func:`srv6pm.records.counter_from` in one function (about a third of the
    time, once per input record): the rules beyond the schema are checked here in the same order,
    and anything they refuse is left to the reference, which gives the reason. The typed dict
    becomes the record's attributes as it is (the record is what ``counter_from`` builds).
    """
    if raw is None or len(raw) > _MAX:
        return None
    try:
        if not raw.isascii():  # msgspec does not check the UTF-8 of the members it skips
            raw.decode("utf-8")
        obj = _counter_wire(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    position = obj.get("position")
    if obj["color"] != obj["period"] % 2 or not _isfinite(obj["period_s"]) \
            or (position is not None and (position == 0) != (obj["role"] == "ingress")):
        return None  # the reference gives the reason
    del obj["v"]
    if len(obj) != 11:  # the three optional members, None when absent
        obj.setdefault("read_ns", None)
        obj.setdefault("flowmon_id", None)
        obj.setdefault("position", None)
    record = _new(CounterRecord)
    _set(record, "__dict__", obj)
    return record


_STAMP_FIELDS = tuple(f.name for f in dataclasses.fields(StampSample))


def fast_stamp(raw: bytes | None) -> StampSample | None:
    """The sample, if the typed decoder accepts ``raw``; None if only the reference can tell.

    A reply as senders make it (returned, plausible timestamps in order, the direct counters all
    or none) becomes the sample at once, its attributes the typed dict's members (absent ones
    None), as :func:`srv6pm.records.stamp_from` builds it; any other goes through ``stamp_from``.
    """
    obj = typed(records.STAMP, raw)
    if obj is None:
        return None
    t1, t2, t3, t4 = obj["t1"], obj["t2"], obj["t3"], obj["t4"]
    if not obj["lost"] and "impossible_timestamps" not in obj and t2 is not None and t3 is not None \
            and t4 is not None and t4 >= t1 and t3 >= t2 and _isfinite(obj["period_s"]):
        present = ("sender_tx" in obj) + ("reflector_rx" in obj) + ("reflector_tx" in obj)  # the direct counters
        if present == 0 or present == 3:
            values = dict.fromkeys(_STAMP_FIELDS)
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
