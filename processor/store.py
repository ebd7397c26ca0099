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
"""

from __future__ import annotations

from influxdb_client import Point, WritePrecision

from srv6pm.clock import PeriodClock
from srv6pm.influx_schema import SEGMENT_LOSS
from srv6pm.records import DelayResult, LossResult

__all__ = ["delay_point", "loss_point", "segment_points"]


def loss_point(result: LossResult) -> Point:
    point = Point("loss").tag("flow", result.flow)
    if result.ingress:
        point.tag("ingress", result.ingress)
    if result.egress:
        point.tag("egress", result.egress)
    for name in ("tx_packets", "rx_packets", "lost_packets", "tx_bytes", "rx_bytes"):
        value = getattr(result, name)
        if value is not None:
            point.field(name, int(value))
    if result.loss_ratio is not None:
        point.field("loss_ratio", float(result.loss_ratio))
    point.field("complete", bool(result.complete))
    point.time(PeriodClock(result.period_s).start_ns(result.period), WritePrecision.NS)
    return point


def segment_points(result: LossResult) -> list[Point]:
    """``segment_loss``: one point per segment of ``result`` whose two nodes are known (none without segments).

    Tags flow, from, to; the counts that are known; ``lost_packets`` only when
    the segment is complete; ``complete``; timestamp = period start.
    """
    names = SEGMENT_LOSS
    at = PeriodClock(result.period_s).start_ns(result.period)
    points = []
    for segment in result.segments or ():
        if segment.from_node is None or segment.to_node is None:
            continue
        point = (Point(names.measurement).tag(names.flow, result.flow)
                 .tag(names.from_node, segment.from_node).tag(names.to_node, segment.to_node))
        for name, value in ((names.tx_packets, segment.tx_packets), (names.rx_packets, segment.rx_packets)):
            if value is not None:
                point.field(name, int(value))
        if segment.complete and segment.lost_packets is not None:
            point.field(names.lost_packets, int(segment.lost_packets))
        point.field(names.complete, bool(segment.complete))
        points.append(point.time(at, WritePrecision.NS))
    return points


def delay_point(result: DelayResult) -> Point:
    """``delay``: one point per (session, period, direction).

    Tags ``session``, ``direction`` (and ``sender``, ``reflector`` when known);
    integer fields ``samples`` and ``lost``, float fields ``min_us``,
    ``mean_us``, ``max_us``, ``p50_us``, ``p99_us``, ``jitter_us`` (left out
    when there was no sample); timestamp = period start. Idempotent like loss.
    """
    point = Point("delay").tag("session", result.session).tag("direction", result.direction)
    if result.sender:
        point.tag("sender", result.sender)
    if result.reflector:
        point.tag("reflector", result.reflector)
    point.field("samples", int(result.samples)).field("lost", int(result.lost))
    for name in ("min_us", "mean_us", "max_us", "p50_us", "p99_us", "jitter_us"):
        value = getattr(result, name)
        if value is not None:
            point.field(name, float(value))
    point.time(PeriodClock(result.period_s).start_ns(result.period), WritePrecision.NS)
    return point
