"""The InfluxDB measurements: ``loss``, ``segment_loss`` and ``delay``.

``loss``: one point per (flow, period).

Schema (DESIGN.md): tags ``flow``, ``ingress``, ``egress``; integer fields
``tx_packets``, ``rx_packets``, ``lost_packets`` and float ``loss_ratio``;
timestamp = period start. Added here: ``tx_bytes``/``rx_bytes`` (integers),
``complete`` (boolean) so that dashboards can show incomplete periods as such.
Fields that are unknown (the missing side of an incomplete period) are left
out, never written as zero. Writing the same result twice produces the same
point (same series, same timestamp, same fields): writes are idempotent.

``segment_loss``: one point per segment of a loss result that has segments
(an incomplete segment as ``complete = false`` without ``lost_packets``, as an
incomplete ``loss`` period); names and rules in :mod:`srv6pm.influx_schema`.

Each measurement is made once, from the published record (a dict), as
(measurement, tags, fields, time): :func:`loss_lines` and :func:`delay_lines`
turn that into line protocol for the processor's writes (``lines``), and
:func:`loss_point`, :func:`segment_points`, :func:`delay_point` into
influxdb-client Points, the same points.
"""

from __future__ import annotations

from math import copysign
from operator import itemgetter

from influxdb_client import Point, WritePrecision

from srv6pm.clock import period_clock
from srv6pm.influx_schema import DELAY, LOSS, SEGMENT_LOSS
from srv6pm.records import DelayResult, LossResult

from .lines import field_text, line, line_head, tag_text

__all__ = ["delay_lines", "delay_lines_all", "delay_point", "loss_lines", "loss_lines_all", "loss_point", "segment_points"]

Parts = tuple[str, dict, dict, int]  # measurement, tags, fields, time in ns

# InfluxDB fields named as the record fields they come from (srv6pm.influx_schema)
_LOSS_COUNTS = (LOSS.tx_packets, LOSS.rx_packets, LOSS.lost_packets, LOSS.tx_bytes, LOSS.rx_bytes)
_DELAY_FIGURES = (DELAY.min_us, DELAY.mean_us, DELAY.max_us, DELAY.p50_us, DELAY.p99_us, DELAY.jitter_us)


_period_ns: dict = {}  # period_s -> period in ns: one clock lookup per period length, not per point


def _ns_of(period_s: float) -> int:
    """The length of a period of ``period_s`` seconds, in ns (as its clock has it)."""
    ns = _period_ns.get(period_s)
    if ns is None:
        if len(_period_ns) >= 64:
            _period_ns.clear()
        ns = _period_ns[period_s] = period_clock(period_s).period_ns
    return ns


def _start_ns(doc: dict) -> int:
    return doc["period"] * _ns_of(doc["period_s"])


def _loss(doc: dict) -> Parts:
    tags = {LOSS.flow: doc["flow"], LOSS.ingress: doc.get("ingress") or None, LOSS.egress: doc.get("egress") or None}
    fields: dict[str, int | float | bool] = {name: int(doc[name]) for name in _LOSS_COUNTS if doc.get(name) is not None}
    if doc.get("loss_ratio") is not None:
        fields[LOSS.loss_ratio] = float(doc["loss_ratio"])
    fields[LOSS.complete] = bool(doc["complete"])
    return LOSS.measurement, tags, fields, _start_ns(doc)


def _segments(doc: dict) -> list[Parts]:
    """``segment_loss``: one point per segment whose two nodes are known (none without segments).

    Tags flow, from, to; the counts that are known; ``lost_packets`` only when
    the segment is complete; ``complete``; timestamp = period start.
    """
    names = SEGMENT_LOSS
    segments = doc.get("segments") or ()
    if not segments:
        return []
    at = _start_ns(doc)
    out = []
    for segment in segments:
        if segment.get("from") is None or segment.get("to") is None:
            continue
        fields = {}
        for name in ("tx_packets", "rx_packets"):
            if segment.get(name) is not None:
                fields[getattr(names, name)] = int(segment[name])
        if segment.get("complete") and segment.get("lost_packets") is not None:
            fields[names.lost_packets] = int(segment["lost_packets"])
        fields[names.complete] = bool(segment.get("complete"))
        tags = {names.flow: doc["flow"], names.from_node: segment["from"], names.to_node: segment["to"]}
        out.append((names.measurement, tags, fields, at))
    return out


def _delay(doc: dict) -> Parts:
    """``delay``: one point per (session, period, direction).

    Tags ``session``, ``direction`` (and ``sender``, ``reflector`` when known);
    integer fields ``samples`` and ``lost``, float fields ``min_us``,
    ``mean_us``, ``max_us``, ``p50_us``, ``p99_us``, ``jitter_us`` (left out
    when there was no sample), integer ``lost_forward``, ``lost_backward`` (left
    out when not known) and ``impossible_timestamps`` (names: :data:`srv6pm.influx_schema.DELAY`);
    timestamp = period start. Idempotent like loss.
    """
    tags = {DELAY.session: doc["session"], DELAY.direction: doc["direction"], DELAY.sender: doc.get("sender") or None,
            DELAY.reflector: doc.get("reflector") or None}
    fields: dict[str, int | float] = {DELAY.samples: int(doc["samples"]), DELAY.lost: int(doc["lost"])}
    fields.update({name: float(doc[name]) for name in _DELAY_FIGURES if doc.get(name) is not None})
    for name in (DELAY.lost_forward, DELAY.lost_backward, DELAY.impossible_timestamps):
        if doc.get(name) is not None:  # unknown direction: left out, never 0
            fields[name] = int(doc[name])
    return DELAY.measurement, tags, fields, _start_ns(doc)


_LINE_COUNTS = (LOSS.lost_packets, LOSS.rx_bytes, LOSS.rx_packets, LOSS.tx_bytes, LOSS.tx_packets)  # in line order
_LINE_TAGS = (LOSS.egress, LOSS.flow, LOSS.ingress)  # in line order
_COMPLETE_FIELDS = (f"{LOSS.complete}=true,{LOSS.loss_ratio}={{}},{LOSS.lost_packets}={{}}i,{LOSS.rx_bytes}={{}}i,"
                    f"{LOSS.rx_packets}={{}}i,{LOSS.tx_bytes}={{}}i,{LOSS.tx_packets}={{}}i").format
_heads: dict[tuple, str] = {}  # (egress, flow, ingress) -> "loss,egress=..,flow=..,ingress=..": a series per flow


def _loss_head(doc: dict) -> str:
    key = (doc.get("egress"), doc["flow"], doc.get("ingress"))
    head = _heads.get(key)
    if head is None:
        head = LOSS.measurement
        for name, value in zip(_LINE_TAGS, key, strict=True):
            text = tag_text(value) if value else ""
            if text:
                head += f",{name}={text}"
        if len(_heads) >= 100_000:
            _heads.clear()
        _heads[key] = head
    return head


def loss_lines(doc: dict) -> list[str]:
    """The ``loss`` line of a published loss record, then its ``segment_loss`` lines (see :func:`loss_lines_all`)."""
    return loss_lines_all([doc])


if _COMPLETE_FIELDS(*["{}"] * 6) != ("complete=true,loss_ratio={},lost_packets={}i,rx_bytes={}i,rx_packets={}i,"
                                     "tx_bytes={}i,tx_packets={}i"):
    raise ImportError("srv6pm.influx_schema renamed a loss field: loss_lines_all writes the names itself")
_ratios: dict[float, str] = {}  # loss ratio -> its text in a line: most flows lose nothing, or the same share


def _ratio_text(ratio: float) -> str:
    text = repr(ratio)
    if text.endswith(".0"):
        text = text[:-2]
    if len(_ratios) >= 4096:
        _ratios.clear()
    _ratios[ratio] = text
    return text


_complete_members = itemgetter("complete", LOSS.loss_ratio, LOSS.lost_packets, LOSS.rx_bytes, LOSS.rx_packets,
                               LOSS.tx_bytes, LOSS.tx_packets, "period", "period_s")


def loss_lines_all(docs: list[dict]) -> list[str]:
    """The lines of each of ``docs`` (published loss records), in order: its ``loss`` line, then its
    ``segment_loss`` lines.

    The ``loss`` line is :func:`line` of :func:`_loss`, written out for speed (one per result): tags egress,
    flow, ingress and the fields in key order, as ``line`` sorts them. A complete period as pairing makes it
    (every count an integer, a finite ratio, no segments) is formatted from one template; any other by parts.
    """
    out: list[str] = []
    append, members, heads, head_of, ns_of, ratios = out.append, _complete_members, _heads, _loss_head, _ns_of, _ratios
    last_period_s: object = None
    period_ns = 0
    for doc in docs:
        try:
            complete, ratio, lost, rx_bytes, rx_packets, tx_bytes, tx_packets, period, period_s = members(doc)
        except KeyError:  # a member the schema lets out (tx_bytes, ...): by parts
            out += _loss_lines(doc)
            continue
        if complete is True and type(ratio) is float and ratio - ratio == 0.0 and type(tx_packets) is int \
                and type(rx_packets) is int and type(lost) is int and type(tx_bytes) is int \
                and type(rx_bytes) is int and "segments" not in doc:
            if ratio:
                ratio_text = ratios.get(ratio) or _ratio_text(ratio)
            else:  # 0.0 and -0.0 are one key, not one text
                ratio_text = "0" if copysign(1.0, ratio) > 0 else "-0"
            head = heads.get((doc.get("egress"), doc["flow"], doc.get("ingress"))) or head_of(doc)
            if period_s != last_period_s:
                last_period_s, period_ns = period_s, ns_of(period_s)
            # _COMPLETE_FIELDS, as an f-string (the names checked below)
            append(f"{head} complete=true,loss_ratio={ratio_text},lost_packets={lost}i,rx_bytes={rx_bytes}i,"
                   f"rx_packets={rx_packets}i,tx_bytes={tx_bytes}i,tx_packets={tx_packets}i {period * period_ns}")
        else:
            out += _loss_lines(doc)
    return out


def _loss_lines(doc: dict) -> list[str]:
    """:func:`loss_lines_all` of one record, by parts."""
    get = doc.get
    ratio = get(LOSS.loss_ratio)
    lost, rx_bytes, rx_packets = get(LOSS.lost_packets), get(LOSS.rx_bytes), get(LOSS.rx_packets)
    tx_bytes, tx_packets = get(LOSS.tx_bytes), get(LOSS.tx_packets)
    parts = [f"{LOSS.complete}=true" if doc["complete"] else f"{LOSS.complete}=false"]
    text = None if ratio is None else field_text(float(ratio))  # None: not finite, left out
    if text is not None:
        parts.append(f"{LOSS.loss_ratio}={text}")
    for name, value in zip(_LINE_COUNTS, (lost, rx_bytes, rx_packets, tx_bytes, tx_packets), strict=True):
        if value is not None:
            parts.append(f"{name}={int(value)}i")
    out = [f"{_loss_head(doc)} {','.join(parts)} {_start_ns(doc)}"]
    if get("segments"):
        out += [line(*parts) for parts in _segments(doc)]
    return out


def delay_lines(doc: dict) -> list[str]:
    """The ``delay`` line of a published delay record."""
    return [line(*_delay(doc))]


_DELAY_NAMES = (DELAY.measurement, DELAY.session, DELAY.direction, DELAY.sender, DELAY.reflector, DELAY.samples,
                DELAY.lost, *_DELAY_FIGURES, DELAY.lost_forward, DELAY.lost_backward, DELAY.impossible_timestamps)
if _DELAY_NAMES != ("delay", "session", "direction", "sender", "reflector", "samples", "lost", "min_us", "mean_us",
                    "max_us", "p50_us", "p99_us", "jitter_us", "lost_forward", "lost_backward",
                    "impossible_timestamps"):
    raise ImportError("srv6pm.influx_schema renamed a delay field: delay_lines_all writes the names itself")
_delay_members = itemgetter("session", "direction", "samples", "lost", "impossible_timestamps", "min_us", "mean_us",
                            "max_us", "p50_us", "p99_us", "jitter_us", "period", "period_s")
_delay_heads: dict[tuple, str] = {}  # (session, direction, sender, reflector) -> the line's head


def _finite_text(value: float) -> str:
    """:func:`field_text` of a finite float."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def delay_lines_all(docs: list[dict]) -> list[str]:
    """:func:`delay_lines` of each of ``docs`` (published delay records), in order.

    A result with every figure (finite floats), integer counts and no Direct Measurement split, as windows of
    replies make it, is written out from one template (the fields in key order, as :func:`line` sorts them);
    any other by :func:`delay_lines`.
    """
    out: list[str] = []
    append, heads, members, text = out.append, _delay_heads, _delay_members, _finite_text
    for doc in docs:
        try:
            session, direction, samples, lost, impossible, low, mean, high, p50, p99, jitter, period, period_s = \
                members(doc)
        except KeyError:
            out += delay_lines(doc)
            continue
        get = doc.get
        if type(samples) is int and type(lost) is int and type(impossible) is int and type(low) is float \
                and type(mean) is float and type(high) is float and type(p50) is float and type(p99) is float \
                and type(jitter) is float and low + mean + high + p50 + p99 + jitter - (low + mean + high + p50
                                                                                     + p99 + jitter) == 0.0 \
                and get("lost_forward") is None and get("lost_backward") is None \
                and type(session) is str and type(direction) is str:
            sender, reflector = get("sender") or None, get("reflector") or None
            key = (session, direction, sender, reflector)
            head = heads.get(key)
            if head is None:
                if len(heads) >= 100_000:
                    heads.clear()
                head = heads[key] = line_head(DELAY.measurement, {DELAY.session: session, DELAY.direction: direction,
                                                                  DELAY.sender: sender, DELAY.reflector: reflector})
            append(f"{head} impossible_timestamps={impossible}i,jitter_us={text(jitter)},lost={lost}i,"
                   f"max_us={text(high)},mean_us={text(mean)},min_us={text(low)},p50_us={text(p50)},"
                   f"p99_us={text(p99)},samples={samples}i {period * _ns_of(period_s)}")
        else:
            out += delay_lines(doc)
    return out


def _point(measurement: str, tags: dict, fields: dict, time_ns: int) -> Point:
    point = Point(measurement)
    for key, value in tags.items():
        if value is not None:
            point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    return point.time(time_ns, WritePrecision.NS)


def loss_point(result: LossResult) -> Point:
    return _point(*_loss(result.to_dict()))


def segment_points(result: LossResult) -> list[Point]:
    """``segment_loss`` points of ``result`` (see :func:`_segments`)."""
    return [_point(*parts) for parts in _segments(result.to_dict())]


def delay_point(result: DelayResult) -> Point:
    return _point(*_delay(result.to_dict()))
