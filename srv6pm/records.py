"""The records that travel on srv6pm's Kafka topics, and their validation.

Every topic carries UTF-8 JSON objects, one per message, with ``"v": 1``; the
JSON Schemas in ``srv6pm/schemas/`` are the published contract (other tools
consume these topics). This module mirrors them in dataclasses, encodes
records, and decodes them with *complete* validation: a decoder either returns
a record that satisfies the schema and the semantic rules the schema cannot
express, or raises :class:`RecordError` whose message is the reason that goes
on the dead-letter topic.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import math
from dataclasses import KW_ONLY, asdict, dataclass, fields
from functools import cache
from importlib import resources
from itertools import chain, repeat
from collections.abc import Mapping
from operator import itemgetter
from typing import Any, cast

import jsonschema
import msgspec

from srv6pm.errors import InputError
from srv6pm.quote import quote, shorten

__all__ = [
    "COUNTERS", "LOSS", "DEADLETTER", "STAMP", "DELAY", "ALARMS", "EVENTS",
    "Alarm", "CounterEncoder", "CounterRecord", "DelayResult", "Event", "LossResult", "RecordError", "Segment",
    "StampSample", "alarm_from", "build", "conforms", "counter_from", "dead_letter", "dead_letter_key", "decode_alarm",
    "decode_counters", "decode_delay", "decode_event", "decode_loss", "decode_stamp", "delay_from", "encode",
    "encode_fast", "encode_fast_all", "event_from", "loss_from", "schema", "stamp_from", "validate",
]

VERSION = 1

COUNTERS = "srv6pm.counters"
STAMP = "srv6pm.stamp"
LOSS = "srv6pm.loss"
DELAY = "srv6pm.delay"
ALARMS = "srv6pm.alarms"
DEADLETTER = "srv6pm.deadletter"
EVENTS = "srv6pm.events"

MAX_RECORD_BYTES = 64 * 1024


class RecordError(InputError, ValueError):
    """A record cannot be used; ``str()`` is the reason, one line."""


@cache
def schema(topic: str) -> dict:
    """The JSON Schema of ``topic`` as shipped in ``srv6pm/schemas/``."""
    name = f"{topic}.schema.json"
    try:
        text = resources.files("srv6pm").joinpath("schemas", name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no schema for topic {topic!r}") from None
    return json.loads(text)


@cache
def _validator(topic: str) -> jsonschema.protocols.Validator:
    doc = schema(topic)
    cls = jsonschema.validators.validator_for(doc)
    cls.check_schema(doc)
    return cls(doc, format_checker=cls.FORMAT_CHECKER)


def validate(topic: str, obj: Any) -> None:
    """Raise :class:`RecordError` unless ``obj`` satisfies the schema of ``topic``."""
    error = jsonschema.exceptions.best_match(_validator(topic).iter_errors(obj))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(record)"
        raise RecordError(f"schema: {where}: {shorten(error.message)}")


def conforms(topic: str, value: object, format: str) -> bool:
    """Whether ``value`` has ``format`` (``"date-time"``, ...) as :func:`validate` checks it for ``topic``.

    (jsonschema checks a format only when the package that checks it is installed; so does this.)
    """
    return _validator(topic).format_checker.conforms(value, format)


def encode(obj: dict) -> bytes:
    """Compact UTF-8 JSON for a Kafka value."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


_encoder = msgspec.json.Encoder()


def encode_fast(obj: dict) -> bytes:
    """:func:`encode` in C, for the processor's results: the same JSON values, compact UTF-8.

    Like :func:`encode` it refuses NaN and infinities (ValueError), wherever they are. (msgspec writes
    them as ``null``: so when the text has no more ``null`` than ``obj`` has None members, none was
    there, and only otherwise is every value looked at.)
    """
    text = _encoder.encode(obj)
    if text.count(b"null") != list(obj.values()).count(None):
        _check_finite(obj)
    return text


def encode_fast_all(objs: list[dict]) -> list[bytes]:
    """:func:`encode_fast` of each of ``objs``, encoded together (one call, one count of ``null``).

    Compact JSON has no raw newline (a string's is escaped), so the lines of msgspec's ``encode_lines`` are
    the values. Each object's text has at least as many ``null`` as it has None members, so the totals are
    equal only when each one's are; otherwise every object is looked at, as :func:`encode_fast` would.
    """
    text = _encoder.encode_lines(objs)
    if text.count(b"null") != list(chain.from_iterable(map(dict.values, objs))).count(None):
        for obj in objs:
            _check_finite(obj)
    values = text.split(b"\n")
    values.pop()  # after the last newline
    return values


@cache
def _field_names(cls) -> tuple[str, ...]:
    """The fields of the dataclass ``cls``, in order (what ``asdict`` walks)."""
    return tuple(f.name for f in fields(cls))


def _check_finite(container: dict | list | tuple) -> None:
    for value in container.values() if type(container) is dict else container:
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
        elif kind is dict or kind is list or kind is tuple:
            _check_finite(value)


def _decode_json(raw: bytes | None) -> Any:
    if raw is None:
        raise RecordError("empty value (tombstone)")
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(f"value of {len(raw)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise RecordError("not usable JSON: nested too deeply") from None
    except ValueError:  # not JSONDecodeError (a subclass, above): int() of more digits than it converts
        raise RecordError("not usable JSON: a number of more than 4300 digits") from None


def _reject_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


@dataclass(frozen=True)
class CounterRecord:
    """One block of one flow at one counting point (topic ``srv6pm.counters``).

    ``flowmon_id`` (RFC 9343 FlowMonID, 1..1048575) and ``position`` (0 at the
    ingress, 1..E-1 at transit nodes in path order, E at the egress) come with
    the ebpf data plane; records of the nftables data plane carry neither.
    Both are left out of the JSON when None.
    """

    node: str
    flow: str
    role: str  # "ingress" | "egress" | "transit"
    period: int
    period_s: float
    color: int
    packets: int
    bytes: int
    read_ns: int | None = None
    _: KW_ONLY
    flowmon_id: int | None = None
    position: int | None = None

    def to_dict(self) -> dict:
        out = {"v": VERSION, "node": self.node, "flow": self.flow, "role": self.role, "period": self.period,
               "period_s": self.period_s, "color": self.color, "packets": self.packets, "bytes": self.bytes}
        for name in _COUNTER_OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def to_json(self) -> builtins.bytes:  # plain `bytes` here is the field of that name
        return encode(self.to_dict())


_COUNTER_OPTIONAL = ("read_ns", "flowmon_id", "position")


class CounterEncoder:
    """The ``srv6pm.counters`` values of one node, fast: the bytes :meth:`CounterRecord.to_json` gives.

    The exporter publishes one record per flow and role every period (100,000
    flows: 100,000 records), so each (flow, role) has a template: the part of
    its value that does not change from period to period (node, flow, role,
    FlowMonID, position) encoded once, and its record key; only the numbers
    are formatted each time. A template is made when a flow is first encoded,
    and :meth:`rotate` once a period forgets those not used since the previous
    call; or it is made once when the flow is installed (:meth:`prepare`) and
    kept until :meth:`forget`, which a guard then only looks up.

    :meth:`encode_keyed` of blocks whose flows all have kept templates keeps,
    per role, one format string of all their records (each template's parts
    and the numbers' places, the records separated by a newline, which JSON
    encoded by msgspec never holds raw) and their keys, while the same flows
    come in the same order (as a guard's do, period after period): the
    records are then made by one ``%`` of that string with the numbers, one
    ``encode`` and one ``split`` (C-level passes over one string, where a loop
    per flow reads each flow's template, scattered over the heap: about 0.09 s
    against 0.15 s at 100,000 flows). The bytes are those of :meth:`encode`.
    """

    def __init__(self, node: str, period_s: float):
        self.node = node
        self.period_s = json.dumps(float(period_s), allow_nan=False)
        # (flow, role) -> ((flowmon_id, position), head, tail, key): this period's templates and the previous one's
        self._parts: dict[tuple, tuple] = {}
        self._previous: dict[tuple, tuple] = {}
        self._kept: dict[str, dict[str, tuple]] = {}  # role -> flow -> the template :meth:`prepare` made
        self._formats: dict[str, tuple[list[str], str, list[bytes]]] = {}  # role -> (flows, format, keys)

    def rotate(self) -> None:
        self._previous, self._parts = self._parts, {}

    def prepare(self, flow: str, role: str, flowmon_id: int | None = None, position: int | None = None) -> None:
        """Make (flow, role)'s template now, with these identifiers, and keep it until :meth:`forget`."""
        self._kept.setdefault(role, {})[flow] = self._make(flow, role, (flowmon_id, position))
        self._formats.pop(role, None)

    def forget(self, flow: str, role: str) -> None:
        """Drop (flow, role)'s template (the flow stopped, or its identifiers change)."""
        self._kept.get(role, {}).pop(flow, None)
        self._formats.pop(role, None)
        for cached in (self._parts, self._previous):
            cached.pop((flow, role), None)

    def encode(self, flow: str, role: str, period: int, color: int, packets: int, nbytes: int,
               read_ns: int | None = None, flowmon_id: int | None = None, position: int | None = None) -> bytes:
        parts = self._template(flow, role, (flowmon_id, position))
        read = "" if read_ns is None else f',"read_ns":{int(read_ns)}'
        return (f'{parts[1]},"period":{int(period)},"period_s":{self.period_s},"color":{int(color)},'
                f'"packets":{int(packets)},"bytes":{int(nbytes)}{read}{parts[2]}').encode()

    def encode_blocks(self, role: str, period: int, color: int, blocks, read_ns: int | None = None,
                      ids: dict | None = None) -> list[bytes]:
        """:meth:`encode` of each ``(flow, packets, bytes)`` of ``blocks`` (int counts), all of ``role``,
        ``period`` and ``color``, the fields they share formatted once (a guard's 100,000 records);
        ``ids`` maps ``(flow, role)`` to ``(flowmon_id, position)`` where a flow has them."""
        return self.encode_keyed(role, period, color, blocks, read_ns, ids)[1]

    def encode_keyed(self, role: str, period: int, color: int, blocks, read_ns: int | None = None,
                     ids: dict | None = None) -> tuple[list[bytes], list[bytes]]:
        """(keys, values): :meth:`encode_blocks`'s values and each one's record key (its flow, UTF-8)."""
        mid = f',"period":{int(period)},"period_s":{self.period_s},"color":{int(color)},"packets":'
        read = "" if read_ns is None else f',"read_ns":{int(read_ns)}'
        if not blocks:
            return [], []
        flows = list(map(_FLOW, blocks))
        formatted = self._formats.get(role)
        if formatted is None or formatted[0] != flows:
            formatted = self._format(role, flows)
        if formatted is not None:
            # blocks' counts are ints (their sums, differences): %d formats them as f-strings do
            args = tuple(chain.from_iterable(zip(repeat(mid), map(_PACKETS, blocks), map(_BYTES, blocks),
                                                 repeat(read))))
            made = (formatted[1] % args).encode().split(b"\n")
            if len(made) == len(blocks):
                return list(formatted[2]), made
        kept = self._kept.get(role, {}).get
        template, get_ids, none = self._template, (ids or {}).get, (None, None)
        keys: list[bytes] = []
        values: list[bytes] = []
        key_append, value_append = keys.append, values.append
        for flow, packets, nbytes in blocks:
            parts = kept(flow) or template(flow, role, get_ids((flow, role), none))
            value_append(f'{parts[1]}{mid}{packets},"bytes":{nbytes}{read}{parts[2]}'.encode())
            key_append(parts[3])
        return keys, values

    def _format(self, role: str, flows: list[str]) -> tuple[list[str], str, list[bytes]] | None:
        """The format string of the records of ``flows`` (in this order) and their keys, kept for ``role``; None
        if a flow has no kept template (:meth:`prepare`)."""
        kept = self._kept.get(role, {})
        found = list(map(kept.get, flows))
        if None in found:
            self._formats.pop(role, None)
            return None
        templates = cast(list[tuple], found)
        record = '%s%d,"bytes":%d%s'  # mid (period .. "packets":), packets, bytes, read_ns or nothing
        text = "\n".join([t[1].replace("%", "%%") + record + t[2].replace("%", "%%") for t in templates])
        formatted = self._formats[role] = (flows, text, [t[3] for t in templates])
        return formatted

    def _template(self, flow: str, role: str, flow_ids: tuple) -> tuple:
        """The template of (flow, role) with ``flow_ids`` = (flowmon_id, position), kept for this period."""
        at = (flow, role)
        parts = self._parts.get(at) or self._previous.get(at)
        if parts is None or parts[0] != flow_ids:
            parts = self._make(flow, role, flow_ids)
        self._parts[at] = parts
        return parts

    def _make(self, flow: str, role: str, flow_ids: tuple) -> tuple:
        head = encode({"v": VERSION, "node": self.node, "flow": flow, "role": role}).decode()[:-1]
        tail = "".join(f',"{name}":{value}' for name, value in zip(("flowmon_id", "position"), flow_ids, strict=True)
                       if value is not None) + "}"
        return flow_ids, head, tail, flow.encode()


_FLOW, _PACKETS, _BYTES = itemgetter(0), itemgetter(1), itemgetter(2)  # of a block (flow, packets, bytes)


def decode_counters(raw: bytes | None) -> CounterRecord:
    """Decode and validate one ``srv6pm.counters`` value.

    Beyond the schema: the colour must be the period's parity, and a
    ``position`` must fit the role (0 for ``ingress``, at least 1 for
    ``transit`` and ``egress``).
    """
    obj = _decode_json(raw)
    validate(COUNTERS, obj)
    return counter_from(obj)


def build(cls, values: dict):
    """The frozen record ``cls(**values)``, ``values`` naming every field: what the dataclass's own
    ``__init__`` makes (these records have no ``__post_init__``), with one dict update instead of one
    ``object.__setattr__`` per field. For the processor, which makes three records per flow-period."""
    record = object.__new__(cls)
    record.__dict__.update(values)
    return record


def _finite_seconds(value: int | float) -> float:
    """``period_s`` as a float; RecordError when it is not finite (NaN, infinity, or a whole number beyond a
    float's range, which is no more finite a period)."""
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise RecordError("period_s is not finite")
    return seconds


def counter_from(obj: Mapping[str, Any]) -> CounterRecord:
    """The record of a ``srv6pm.counters`` object that satisfies the schema, after the rules beyond it.

    Absent optional members may be given as None. Raises :class:`RecordError`.
    """
    if obj["color"] != obj["period"] % 2:
        raise RecordError(f"color {obj['color']} does not match period {quote(obj['period'])} "
                          f"(period mod 2 = {obj['period'] % 2})")
    period_s = _finite_seconds(obj["period_s"])
    position = obj.get("position")
    if position is not None and (position == 0) != (obj["role"] == "ingress"):
        need = "0" if obj["role"] == "ingress" else "at least 1 (position 0 is the ingress)"
        raise RecordError(f"position {position} does not fit role {obj['role']}: it must be {need}")
    return build(CounterRecord, {  # the schema's integers as ints (JSON's 3.0 is one): one value, one key
        "node": obj["node"], "flow": obj["flow"], "role": obj["role"], "period": _whole(obj["period"]),
        "period_s": period_s, "color": _whole(obj["color"]), "packets": _whole(obj["packets"]),
        "bytes": _whole(obj["bytes"]), "read_ns": _whole(obj.get("read_ns")),
        "flowmon_id": _whole(obj.get("flowmon_id")), "position": _whole(position),
    })


def _whole(value: int | float | None) -> int | None:
    """A member the schema says is an integer, as an int (a float it accepted is a whole one)."""
    return value if value is None or type(value) is int else int(value)


@dataclass(frozen=True)
class Segment:
    """The loss between two consecutive counting points p and p+1 of a flow (one item of ``segments``).

    ``from_node``/``to_node`` are the nodes at p and p+1 (``"from"``/``"to"``
    in JSON; None when that point's node is not known). ``tx_packets`` is the
    count at p, ``rx_packets`` at p+1. ``complete`` means both arrived, and
    then ``lost_packets = tx_packets - rx_packets``; otherwise
    ``lost_packets`` is None (an incomplete segment is never loss) and a
    count that did not arrive is None.
    """

    from_node: str | None
    to_node: str | None
    tx_packets: int | None
    rx_packets: int | None
    lost_packets: int | None
    complete: bool

    def to_dict(self) -> dict:
        return {"from": self.from_node, "to": self.to_node, "tx_packets": self.tx_packets,
                "rx_packets": self.rx_packets, "lost_packets": self.lost_packets, "complete": self.complete}

    @classmethod
    def from_dict(cls, doc: dict) -> "Segment":
        return cls(from_node=doc.get("from"), to_node=doc.get("to"), tx_packets=doc.get("tx_packets"),
                   rx_packets=doc.get("rx_packets"), lost_packets=doc.get("lost_packets"),
                   complete=bool(doc.get("complete")))


@dataclass(frozen=True)
class LossResult:
    """The loss of one flow in one period (topic ``srv6pm.loss``).

    ``flowmon_id`` and ``segments`` come only from counters that carry them
    (the ebpf data plane) and are left out of the JSON when None; see the
    topic's schema for ``missing`` and the segments' rules.
    """

    flow: str
    period: int
    period_start: str
    period_s: float
    ingress: str | None
    egress: str | None
    tx_packets: int | None
    rx_packets: int | None
    tx_bytes: int | None
    rx_bytes: int | None
    lost_packets: int | None
    loss_ratio: float | None
    complete: bool
    missing: str | None = None  # "ingress" | "egress" | "both" (incomplete periods only)
    flowmon_id: int | None = None
    segments: tuple[Segment, ...] | None = None

    @property
    def subject(self) -> str:
        return self.flow

    def to_dict(self) -> dict:
        d = self.__dict__  # the fields in order, as __init__ sets them; pairing's results leave out the
        # trailing defaults they do not set (flowmon_id when None, segments), which the class then gives
        out = {"v": VERSION, **d}
        if len(out) == _LOSS_MEMBERS and "segments" not in d and "flowmon_id" not in d:  # as pairing makes it
            return out
        if next(iter(d)) == "flow" and all(name in d for name in _LOSS_REQUIRED):
            flowmon_id, segments = out.pop("flowmon_id", None), out.pop("segments", None)
            if flowmon_id is not None:
                out["flowmon_id"] = flowmon_id
            if segments is not None:
                out["segments"] = [s.to_dict() for s in segments]
            return out
        out = {"v": VERSION, "flow": self.flow, "period": self.period, "period_start": self.period_start,
               "period_s": self.period_s, "ingress": self.ingress, "egress": self.egress,
               "tx_packets": self.tx_packets, "rx_packets": self.rx_packets, "tx_bytes": self.tx_bytes,
               "rx_bytes": self.rx_bytes, "lost_packets": self.lost_packets, "loss_ratio": self.loss_ratio,
               "complete": self.complete, "missing": self.missing}
        if self.flowmon_id is not None:
            out["flowmon_id"] = self.flowmon_id
        if self.segments is not None:
            out["segments"] = [s.to_dict() for s in self.segments]
        return out

    def to_json(self) -> bytes:
        return encode(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict) -> "LossResult":
        values = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        if values.get("segments") is not None:
            values["segments"] = tuple(Segment.from_dict(s) for s in values["segments"])
        return cls(**values)


_LOSS_REQUIRED = tuple(f.name for f in fields(LossResult))[:-2]  # all but flowmon_id and segments
_LOSS_MEMBERS = 1 + len(_LOSS_REQUIRED)  # "v" and those: a record without flowmon_id and segments


def decode_loss(raw: bytes | None) -> LossResult:
    """Decode and validate one ``srv6pm.loss`` value (the schema is the whole rule)."""
    obj = _decode_json(raw)
    validate(LOSS, obj)
    return loss_from(obj)


def loss_from(obj: Mapping[str, Any]) -> LossResult:
    """The result of a ``srv6pm.loss`` object that satisfies the schema; values as they are in ``obj``.

    Absent optional members are None. ``to_dict()`` of the result is ``obj`` for every record the
    processor writes (``missing`` is then always present, with ``flowmon_id`` and ``segments`` only when set).
    """
    segments = obj.get("segments")
    return LossResult(
        flow=obj["flow"], period=obj["period"], period_start=obj["period_start"], period_s=obj["period_s"],
        ingress=obj.get("ingress"), egress=obj.get("egress"), tx_packets=obj["tx_packets"],
        rx_packets=obj["rx_packets"], tx_bytes=obj.get("tx_bytes"), rx_bytes=obj.get("rx_bytes"),
        lost_packets=obj["lost_packets"], loss_ratio=obj["loss_ratio"], complete=obj["complete"],
        missing=obj.get("missing"), flowmon_id=obj.get("flowmon_id"),
        segments=None if segments is None else tuple(
            Segment(from_node=s["from"], to_node=s["to"], tx_packets=s["tx_packets"], rx_packets=s["rx_packets"],
                    lost_packets=s["lost_packets"], complete=s["complete"]) for s in segments),
    )




@dataclass(frozen=True)
class StampSample:
    """One STAMP test packet seen by its Session-Sender (topic ``srv6pm.stamp``)."""

    session: str
    seq: int
    period_s: float
    t1: int
    t2: int | None
    t3: int | None
    t4: int | None
    lost: bool
    sender: str | None = None
    reflector: str | None = None
    timestamps: dict | None = None
    ttl: int | None = None
    reflector_seq: int | None = None
    sender_tx: int | None = None          # Direct Measurement counters (RFC 8972 §4.5), when filled in
    reflector_rx: int | None = None
    reflector_tx: int | None = None
    dscp: int | None = None               # Class of Service (RFC 8972 §4.4), when asked for
    dscp_at_reflector: int | None = None
    dscp_remarked: bool | None = None
    reply_dscp: int | None = None
    reply_dscp_remarked: bool | None = None
    impossible_timestamps: bool | None = None  # t2/t3 cannot be right: no one-way delay

    @property
    def counted(self) -> bool:
        """Whether the reply carried the reflector's Direct Measurement counters."""
        return self.reflector_rx is not None

    def to_dict(self) -> dict:
        return {"v": VERSION, **{k: v for k, v in asdict(self).items()
                                 if v is not None or k in ("t2", "t3", "t4")}}

    def to_json(self) -> bytes:
        return encode(self.to_dict())


def decode_stamp(raw: bytes | None) -> StampSample:
    """Decode and validate one ``srv6pm.stamp`` value."""
    obj = _decode_json(raw)
    validate(STAMP, obj)
    return stamp_from(obj)


def stamp_from(obj: Mapping[str, Any]) -> StampSample:
    """The sample of a ``srv6pm.stamp`` object that satisfies the schema, after the rules beyond it.

    Absent optional members may be given as None. Raises :class:`RecordError`.
    """
    t1, t2, t3, t4 = obj["t1"], obj["t2"], obj["t3"], obj["t4"]
    impossible = bool(obj.get("impossible_timestamps"))
    counters = [obj.get(name) for name in _DIRECT_COUNTERS]
    if obj["lost"]:
        if not (t2 is None and t3 is None and t4 is None):
            raise RecordError("a lost packet must have null t2, t3 and t4")
        if impossible or any(c is not None for c in counters):
            raise RecordError("a lost packet has no reply: no counters, no impossible_timestamps")
    else:
        if t4 is None or (not impossible and (t2 is None or t3 is None)):
            raise RecordError("a returned packet needs t1, t2, t3 and t4 (t2, t3 may be null only with "
                              "impossible_timestamps)")
        if t4 < t1:
            raise RecordError(f"t4 ({quote(t4)}) is before t1 ({quote(t1)}) on the sender's clock")
        if not impossible and t3 < t2:
            raise RecordError(f"t3 ({quote(t3)}) is before t2 ({quote(t2)}) on the reflector's clock "
                              "(a sender flags that as impossible_timestamps)")
        if any(c is None for c in counters) and any(c is not None for c in counters):
            raise RecordError(f"{', '.join(_DIRECT_COUNTERS)} come together or not at all")
    period_s = _finite_seconds(obj["period_s"])
    return StampSample(
        session=obj["session"], seq=obj["seq"], period_s=period_s, t1=t1, t2=t2, t3=t3, t4=t4,
        lost=obj["lost"], sender=obj.get("sender"), reflector=obj.get("reflector"),
        timestamps=obj.get("timestamps"), ttl=obj.get("ttl"), reflector_seq=obj.get("reflector_seq"),
        **{name: obj.get(name) for name in _STAMP_EXTRAS},
    )


_DIRECT_COUNTERS = ("sender_tx", "reflector_rx", "reflector_tx")
_STAMP_EXTRAS = (*_DIRECT_COUNTERS, "dscp", "dscp_at_reflector", "dscp_remarked", "reply_dscp",
                 "reply_dscp_remarked", "impossible_timestamps")


@dataclass(frozen=True)
class DelayResult:
    """Delay statistics of one session, period and direction (topic ``srv6pm.delay``)."""

    session: str
    period: int
    period_start: str
    period_s: float
    direction: str
    sender: str | None
    reflector: str | None
    samples: int
    lost: int
    min_us: float | None
    mean_us: float | None
    max_us: float | None
    p50_us: float | None
    p99_us: float | None
    jitter_us: float | None
    lost_forward: int | None = None    # of ``lost``: test packets that did not reach the reflector
    lost_backward: int | None = None   # of ``lost``: replies sent that did not come back
    impossible_timestamps: int = 0     # replies left out of forward/backward (impossible t2/t3)

    @property
    def subject(self) -> str:
        return self.session

    def to_dict(self) -> dict:
        """The record; ``lost_forward``/``lost_backward`` are left out when not known (never 0 for unknown)."""
        d = self.__dict__  # (not asdict: every field is a scalar, and asdict costs 20 µs a result)
        out = {"v": VERSION, **{name: d[name] for name in _field_names(DelayResult)}}
        for name in ("lost_forward", "lost_backward"):
            if out[name] is None:
                del out[name]
        return out

    def to_json(self) -> bytes:
        return encode(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict) -> "DelayResult":
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


def decode_delay(raw: bytes | None) -> DelayResult:
    """Decode and validate one ``srv6pm.delay`` value (the schema is the whole rule)."""
    obj = _decode_json(raw)
    validate(DELAY, obj)
    return delay_from(obj)


def delay_from(obj: Mapping[str, Any]) -> DelayResult:
    """The result of a ``srv6pm.delay`` object that satisfies the schema; values as they are in ``obj``.

    Absent optional members are None (``impossible_timestamps``: 0, as the processor counts them).
    """
    return DelayResult(
        session=obj["session"], period=obj["period"], period_start=obj["period_start"], period_s=obj["period_s"],
        direction=obj["direction"], sender=obj.get("sender"), reflector=obj.get("reflector"),
        samples=obj["samples"], lost=obj["lost"], min_us=obj["min_us"], mean_us=obj["mean_us"],
        max_us=obj["max_us"], p50_us=obj["p50_us"], p99_us=obj["p99_us"], jitter_us=obj["jitter_us"],
        lost_forward=obj.get("lost_forward"), lost_backward=obj.get("lost_backward"),
        impossible_timestamps=obj.get("impossible_timestamps", 0),
    )


ALARM_KINDS = ("loss_ratio", "delay_p99_us", "liveness")
LIVENESS_FIELDS = ("time_ns", "last_reply_ns", "sender", "reflector")  # members of liveness alarms only


@dataclass(frozen=True)
class Alarm:
    """A threshold alarm raised or cleared (topic ``srv6pm.alarms``; see its schema for the rules).

    Kind ``liveness`` (published by the STAMP session's exporter, see
    :mod:`srv6pm.exporter.liveness`) also has :data:`LIVENESS_FIELDS`; the
    other kinds never carry them.
    """

    kind: str  # one of ALARM_KINDS
    subject: str  # the flow or the session
    direction: str | None  # the delay direction; None for loss
    period: int
    period_start: str
    period_s: float
    value: float
    threshold: float
    raised: bool
    _: KW_ONLY
    time_ns: int | None = None  # liveness: when the sender declared the change (Unix ns)
    last_reply_ns: int | None = None  # liveness: arrival of the last reply before it (None: none yet)
    sender: str | None = None  # liveness: the sender's node
    reflector: str | None = None  # liveness: the reflector's node or address

    @property
    def key(self) -> str:
        return self.subject

    def to_dict(self) -> dict:
        d = self.__dict__  # every field is a scalar
        doc = {"v": VERSION, **{name: d[name] for name in _field_names(Alarm)}}
        if self.kind != "liveness":
            for name in LIVENESS_FIELDS:
                del doc[name]
        return doc

    def to_json(self) -> bytes:
        return encode(self.to_dict())


def decode_alarm(raw: bytes | None) -> Alarm:
    """Decode and validate one ``srv6pm.alarms`` value (the schema is the whole rule)."""
    obj = _decode_json(raw)
    validate(ALARMS, obj)
    return alarm_from(obj)


def alarm_from(obj: Mapping[str, Any]) -> Alarm:
    """The alarm of a ``srv6pm.alarms`` object that satisfies the schema; values as they are in ``obj``.

    The :data:`LIVENESS_FIELDS` are None when absent (always, but for kind ``liveness``).
    """
    return Alarm(kind=obj["kind"], subject=obj["subject"], direction=obj["direction"], period=obj["period"],
                 period_start=obj["period_start"], period_s=obj["period_s"], value=obj["value"],
                 threshold=obj["threshold"], raised=obj["raised"], time_ns=obj.get("time_ns"),
                 last_reply_ns=obj.get("last_reply_ns"), sender=obj.get("sender"), reflector=obj.get("reflector"))


EVENT_KINDS = ("node_up", "node_down", "node_restarted", "applied", "removed", "apply_failed",
               "config_loaded", "config_rejected", "converged", "path_down", "path_up")


@dataclass(frozen=True)
class Event:
    """Something the collector did or saw (topic ``srv6pm.events``), or a node exporter's path_down / path_up.

    ``node`` is None for events about the collector's configuration as a whole
    (config_loaded, config_rejected, converged); :attr:`key` is then
    ``"collector"``. Every field is always present in the record, null when
    it does not apply.
    """

    kind: str
    time: str  # RFC 3339 UTC
    generation: int  # the collector's configuration generation (1 = first load; 0 from an exporter)
    node: str | None = None
    object: str | None = None  # "policy f1", "local_sid fcff:1::1", "flow f1 ingress", ...
    detail: str | None = None
    boot_id: str | None = None

    @property
    def key(self) -> str:
        return self.node or "collector"

    def to_dict(self) -> dict:
        d = self.__dict__  # every field is a scalar
        return {"v": VERSION, **{name: d[name] for name in _field_names(Event)}}

    def to_json(self) -> bytes:
        return encode(self.to_dict())


def decode_event(raw: bytes | None) -> Event:
    """Decode and validate one ``srv6pm.events`` value."""
    obj = _decode_json(raw)
    validate(EVENTS, obj)
    return event_from(obj)


def event_from(obj: Mapping[str, Any]) -> Event:
    """The event of a ``srv6pm.events`` object that satisfies the schema (every member is required)."""
    return Event(kind=obj["kind"], time=obj["time"], generation=obj["generation"], node=obj["node"],
                 object=obj["object"], detail=obj["detail"], boot_id=obj["boot_id"])


DEADLETTER_RAW_BYTES = 64 * 1024  # of the rejected value, kept in a dead letter (base64 makes it 4/3 larger)
DEADLETTER_KEY_BYTES = 1024  # of the rejected record's key, kept as the dead letter's key
DEADLETTER_REASON_CHARS = 1000


def dead_letter(topic: str, partition: int, offset: int, reason: str, raw: bytes | None, consumer: str) -> dict:
    """The ``srv6pm.deadletter`` record for a rejected input record; always small enough to publish.

    ``raw`` is the value as received: the letter keeps its first
    ``DEADLETTER_RAW_BYTES`` bytes (base64, ``raw``), its length
    (``raw_bytes``), whether it was cut (``raw_truncated``) and the SHA-256 of
    the whole value (``raw_sha256``), so a letter is at most about 90 KB however
    large the record was. The reason is cut to ``DEADLETTER_REASON_CHARS``.
    """
    raw = raw or b""
    kept = raw[:DEADLETTER_RAW_BYTES]
    return {
        "v": VERSION, "topic": topic, "partition": partition, "offset": offset,
        "reason": shorten(reason, DEADLETTER_REASON_CHARS), "raw": base64.b64encode(kept).decode("ascii"),
        "raw_bytes": len(raw), "raw_truncated": len(kept) < len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "consumer": consumer,
    }


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The key of a dead letter: the rejected record's key, cut to ``DEADLETTER_KEY_BYTES``."""
    return None if key is None else key[:DEADLETTER_KEY_BYTES]

