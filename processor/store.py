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

from influxdb_client import Point, WritePrecision

from srv6pm.clock import period_clock
from srv6pm.influx_schema import SEGMENT_LOSS
from srv6pm.records import DelayResult, LossResult

from .lines import field_text, line, tag_text

__all__ = ["delay_lines", "delay_point", "loss_lines", "loss_point", "segment_points"]

Parts = tuple[str, dict, dict, int]  # measurement, tags, fields, time in ns

_LOSS_COUNTS = ("tx_packets", "rx_packets", "lost_packets", "tx_bytes", "rx_bytes")
_DELAY_FIGURES = ("min_us", "mean_us", "max_us", "p50_us", "p99_us", "jitter_us")


_period_ns: dict = {}  # period_s -> period in ns: one clock lookup per period length, not per point


def _start_ns(doc: dict) -> int:
    period_s = doc["period_s"]
    ns = _period_ns.get(period_s)
    if ns is None:
        if len(_period_ns) >= 64:
            _period_ns.clear()
        ns = _period_ns[period_s] = period_clock(period_s).period_ns
    return doc["period"] * ns


def _loss(doc: dict) -> Parts:
    tags = {"flow": doc["flow"], "ingress": doc.get("ingress") or None, "egress": doc.get("egress") or None}
    fields = {name: int(doc[name]) for name in _LOSS_COUNTS if doc.get(name) is not None}
    if doc.get("loss_ratio") is not None:
        fields["loss_ratio"] = float(doc["loss_ratio"])
    fields["complete"] = bool(doc["complete"])
    return "loss", tags, fields, _start_ns(doc)


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
    when there was no sample); timestamp = period start. Idempotent like loss.
    """
    tags = {"session": doc["session"], "direction": doc["direction"], "sender": doc.get("sender") or None,
            "reflector": doc.get("reflector") or None}
    fields = {"samples": int(doc["samples"]), "lost": int(doc["lost"])}
    fields.update({name: float(doc[name]) for name in _DELAY_FIGURES if doc.get(name) is not None})
    return "delay", tags, fields, _start_ns(doc)


_LINE_COUNTS = ("lost_packets", "rx_bytes", "rx_packets", "tx_bytes", "tx_packets")  # in line order
_heads: dict[tuple, str] = {}  # (egress, flow, ingress) -> "loss,egress=..,flow=..,ingress=..": a series per flow


def _loss_head(doc: dict) -> str:
    key = (doc.get("egress"), doc["flow"], doc.get("ingress"))
    head = _heads.get(key)
    if head is None:
        head = "loss"
        for name, value in zip(("egress", "flow", "ingress"), key):
            text = tag_text(value) if value else ""
            if text:
                head += f",{name}={text}"
        if len(_heads) >= 100_000:
            _heads.clear()
        _heads[key] = head
    return head


def loss_lines(doc: dict) -> list[str]:
    """The ``loss`` line of a published loss record, then its ``segment_loss`` lines.

    The ``loss`` line is :func:`line` of :func:`_loss`, written out for speed (one per result):
    tags egress, flow, ingress and the fields in key order, as ``line`` sorts them.
    """
    get = doc.get
    ratio = get("loss_ratio")
    tx_packets, rx_packets, lost = get("tx_packets"), get("rx_packets"), get("lost_packets")
    tx_bytes, rx_bytes = get("tx_bytes"), get("rx_bytes")
    if doc["complete"] and type(ratio) is float and ratio - ratio == 0.0 and type(tx_packets) is int \
            and type(rx_packets) is int and type(lost) is int and type(tx_bytes) is int and type(rx_bytes) is int:
        # a complete period, as pairing makes it (a finite ratio, integer counts)
        ratio_text = repr(ratio)
        if ratio_text.endswith(".0"):
            ratio_text = ratio_text[:-2]
        fields = (f"complete=true,loss_ratio={ratio_text},lost_packets={lost}i,rx_bytes={rx_bytes}i,"
                  f"rx_packets={rx_packets}i,tx_bytes={tx_bytes}i,tx_packets={tx_packets}i")
    else:
        ratio_text = None if ratio is None else field_text(float(ratio))
        parts = ["complete=true" if doc["complete"] else "complete=false"]
        if ratio_text is not None:
            parts.append(f"loss_ratio={ratio_text}")
        for name, value in zip(_LINE_COUNTS, (lost, rx_bytes, rx_packets, tx_bytes, tx_packets)):
            if value is not None:
                parts.append(f"{name}={int(value)}i")
        fields = ",".join(parts)
    out = [f"{_loss_head(doc)} {fields} {_start_ns(doc)}"]
    if get("segments"):
        out += [line(*parts) for parts in _segments(doc)]
    return out


def delay_lines(doc: dict) -> list[str]:
    """The ``delay`` line of a published delay record."""
    return [line(*_delay(doc))]


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
