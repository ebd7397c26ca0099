"""Names in InfluxDB that the processor writes and the dashboards read, kept in one place.

Both ``srv6pm.processor.store`` (the points) and ``srv6pm.dashboards`` (the
InfluxQL queries) take these names from here, so they cannot drift apart.

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

__all__ = ["SEGMENT_LOSS", "SegmentLossNames"]


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
