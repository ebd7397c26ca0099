"""Names in InfluxDB that the processor writes and the dashboards read, kept in one place.

Both the processor (``srv6pm.processor.store``: the result points,
``srv6pm.processor.health``: its health points) and ``srv6pm.dashboards``
(the InfluxQL queries) take the measurement, tag and field names from here, so
they cannot drift apart. The measurements:

``loss`` (:data:`LOSS`): one point per (flow, period); rules in
``srv6pm.processor.store``. Its counts and ratio are named as the fields of
the ``srv6pm.loss`` record they come from.

``delay`` (:data:`DELAY`): one point per (STAMP session, period, direction);
its figures are named as the fields of the ``srv6pm.delay`` record.

``pipeline`` (:data:`PIPELINE`) and ``exporter`` (:data:`EXPORTER`): the
processors' health points; rules in ``srv6pm.processor.health``.

``liveness`` (:data:`LIVENESS`): one point per change of a watched STAMP
path; see :class:`LivenessNames`.

``segment_loss``: one point per segment of a flow's path per period, when the
flow's counters carry positions (ebpf data plane). Tags ``flow``, ``from``,
``to`` (the nodes of the two counting points); integer fields ``tx_packets``
(counted at ``from``), ``rx_packets`` (counted at ``to``), ``lost_packets``
(``tx_packets - rx_packets``); boolean ``complete``; timestamp = the period
start. As in ``loss``, a segment whose two counts did not both arrive is
written with ``complete = false`` and only the count that is known:
``lost_packets`` is left out, never written as 0, so sums of
``lost_packets`` count only complete segments, and queries select
``"complete" = true`` for figures. A segment with a node that is not known is
not written (nothing to tag it with). The same result written again gives
the same series and timestamp: writes are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DELAY", "EXPORTER", "LIVENESS", "LOSS", "PIPELINE", "SEGMENT_LOSS", "DelayNames", "ExporterNames",
           "LivenessNames", "LossNames", "PipelineNames", "SegmentLossNames"]


@dataclass(frozen=True)
class SegmentLossNames:
    """The measurement, tag and field names of ``segment_loss``."""

    measurement: str = "segment_loss"
    flow: str = "flow"
    from_node: str = "from"
    to_node: str = "to"
    tx_packets: str = "tx_packets"
    rx_packets: str = "rx_packets"
    lost_packets: str = "lost_packets"
    complete: str = "complete"


SEGMENT_LOSS = SegmentLossNames()


@dataclass(frozen=True)
class LossNames:
    """The measurement, tag and field names of ``loss``."""

    measurement: str = "loss"
    flow: str = "flow"
    ingress: str = "ingress"
    egress: str = "egress"
    tx_packets: str = "tx_packets"
    rx_packets: str = "rx_packets"
    lost_packets: str = "lost_packets"
    tx_bytes: str = "tx_bytes"
    rx_bytes: str = "rx_bytes"
    loss_ratio: str = "loss_ratio"
    complete: str = "complete"


@dataclass(frozen=True)
class DelayNames:
    """The measurement, tag and field names of ``delay``."""

    measurement: str = "delay"
    session: str = "session"
    direction: str = "direction"
    sender: str = "sender"
    reflector: str = "reflector"
    samples: str = "samples"
    lost: str = "lost"
    min_us: str = "min_us"
    mean_us: str = "mean_us"
    max_us: str = "max_us"
    p50_us: str = "p50_us"
    p99_us: str = "p99_us"
    jitter_us: str = "jitter_us"
    lost_forward: str = "lost_forward"    # RFC 8972 Direct Measurement: left out, never 0, when not known
    lost_backward: str = "lost_backward"
    impossible_timestamps: str = "impossible_timestamps"


@dataclass(frozen=True)
class PipelineNames:
    """The measurement, tag and field names of ``pipeline`` (a processor's health per input topic)."""

    measurement: str = "pipeline"
    component: str = "component"
    instance: str = "instance"
    topic: str = "topic"
    records_in: str = "records_in"
    records_out: str = "records_out"
    deadletters: str = "deadletters"
    errors: str = "errors"
    interval_s: str = "interval_s"
    held_s: str = "held_s"
    lag: str = "lag"


@dataclass(frozen=True)
class ExporterNames:
    """The measurement, tag and field names of ``exporter`` (an exporter's liveness, as a processor saw it)."""

    measurement: str = "exporter"
    node: str = "node"
    instance: str = "instance"
    records: str = "records"
    last_record_age_s: str = "last_record_age_s"


LOSS = LossNames()
DELAY = DelayNames()
PIPELINE = PipelineNames()
EXPORTER = ExporterNames()


@dataclass(frozen=True)
class LivenessNames:
    """The measurement, tag and field names of ``liveness``.

    One point per change of a watched STAMP path (a ``liveness`` alarm on
    ``srv6pm.alarms``), written by the processor's liveness store
    (``srv6pm.processor.liveness``): tags ``session``, ``sender``,
    ``reflector``; integer fields ``up`` (1: the path came up again, 0: it went
    down), ``count`` and ``threshold`` (the alarm's value and threshold),
    ``last_reply_ns`` (left out when the session never had a reply);
    timestamp = the alarm's ``time_ns``. The same alarm written again is the
    same point.
    """

    measurement: str = "liveness"
    session: str = "session"
    sender: str = "sender"
    reflector: str = "reflector"
    up: str = "up"
    count: str = "count"
    threshold: str = "threshold"
    last_reply_ns: str = "last_reply_ns"


LIVENESS = LivenessNames()
