"""The InfluxDB measurements: ``loss`` and ``delay``.

``loss``: one point per (flow, period).

Schema (DESIGN.md): tags ``flow``, ``ingress``, ``egress``; integer fields
``tx_packets``, ``rx_packets``, ``lost_packets`` and float ``loss_ratio``;
timestamp = period start. Added here: ``tx_bytes``/``rx_bytes`` (integers),
``complete`` (boolean) so that dashboards can show incomplete periods as such.
Fields that are unknown (the missing side of an incomplete period) are left
out, never written as zero. Writing the same result twice produces the same
point (same series, same timestamp, same fields): writes are idempotent.
"""

from __future__ import annotations

from influxdb_client import Point, WritePrecision

from srv6pm.clock import PeriodClock
from srv6pm.records import DelayResult, LossResult

__all__ = ["delay_point", "loss_point"]


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
