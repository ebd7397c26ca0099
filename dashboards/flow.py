"""Flow detail (variable ``flow``): one flow's packets, losses and loss ratio per period.

A complete period has all of tx, rx, lost and the ratio. An incomplete one
(one side's block never arrived) has ``complete = false``, no ``lost_packets``
and only the side that is known; the panels show it as a separate series and
as "incomplete" in the period table, never as 0 loss or as loss.

Where the flow's counters carry positions (ebpf data plane), the lost packets
of each segment (from → to) per period come from ``segment_loss``, complete
segments only (names from ``srv6pm.influx_schema``).
"""

from __future__ import annotations

from grafanalib.core import Stat, Table, TimeSeries

from srv6pm.influx_schema import LOSS as L
from srv6pm.influx_schema import SEGMENT_LOSS as SEG

from .common import DATASOURCE, dashboard, layout, query_variable, targets

UID = "srv6pm-flow"

FLOW = f'"{L.flow}" = \'$flow\''
LOST = (f'SELECT sum("{L.lost_packets}") AS "lost" FROM "{L.measurement}" WHERE {FLOW} AND "{L.complete}" = true '
        'AND $timeFilter')
RATIO = (f'SELECT sum("{L.lost_packets}") / sum("{L.tx_packets}") AS "loss_ratio" FROM "{L.measurement}" '
         f'WHERE {FLOW} AND "{L.complete}" = true AND $timeFilter')
INCOMPLETE = (f'SELECT count("{L.complete}") AS "incomplete" FROM "{L.measurement}" WHERE {FLOW} '
              f'AND "{L.complete}" = false AND $timeFilter')
PACKETS = (f'SELECT "{L.tx_packets}" AS "tx", "{L.rx_packets}" AS "rx" FROM "{L.measurement}" WHERE {FLOW} '
           f'AND "{L.complete}" = true AND $timeFilter')
LOST_PER_PERIOD = (f'SELECT "{L.lost_packets}" AS "lost" FROM "{L.measurement}" WHERE {FLOW} '
                   f'AND "{L.complete}" = true AND $timeFilter')
RATIO_PER_PERIOD = (f'SELECT "{L.loss_ratio}" FROM "{L.measurement}" WHERE {FLOW} AND "{L.complete}" = true '
                    'AND $timeFilter')
INCOMPLETE_PER_PERIOD = (f'SELECT "{L.tx_packets}" AS "tx (egress missing)", "{L.rx_packets}" AS "rx (ingress missing)" '
                         f'FROM "{L.measurement}" WHERE {FLOW} AND "{L.complete}" = false AND $timeFilter')
SEGMENT_LOST_PER_PERIOD = (f'SELECT "{SEG.lost_packets}" AS "lost" FROM "{SEG.measurement}" '
                          f'WHERE "{SEG.flow}" = \'$flow\' AND "{SEG.complete}" = true AND $timeFilter '
                          f'GROUP BY "{SEG.from_node}", "{SEG.to_node}"')
SEGMENT_ALIAS = f"$tag_{SEG.from_node} → $tag_{SEG.to_node}"
PERIODS = (f'SELECT "{L.tx_packets}", "{L.rx_packets}", "{L.lost_packets}", "{L.loss_ratio}", "{L.complete}", '
           f'"{L.ingress}", "{L.egress}" FROM "{L.measurement}" WHERE {FLOW} AND $timeFilter ORDER BY time DESC')

_PERCENT = [{"matcher": {"id": "byName", "options": "loss_ratio"}, "properties": [{"id": "unit", "value": "percentunit"}]}]
_COMPLETE = [{"type": "value", "options": {"true": {"text": "complete", "color": "green", "index": 0},
                                           "false": {"text": "INCOMPLETE", "color": "orange", "index": 1}}}]


def build():
    panels = layout(
        (5, [
            (Stat(title="Lost packets", dataSource=DATASOURCE, targets=targets(LOST), reduceCalc="sum",
                  noValue="0", graphMode="none",
                  thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]), 8),
            (Stat(title="Loss ratio", dataSource=DATASOURCE, targets=targets(RATIO), reduceCalc="lastNotNull",
                  format="percentunit", decimals=3, graphMode="none"), 8),
            (Stat(title="Incomplete periods", dataSource=DATASOURCE, targets=targets(INCOMPLETE), reduceCalc="sum",
                  noValue="0", graphMode="none",
                  thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]), 8),
        ]),
        (8, [
            (TimeSeries(title="Packets per period: sent (tx) and received (rx)", dataSource=DATASOURCE,
                        targets=targets(PACKETS), showPoints="always", unit="none"), 12),
            (TimeSeries(title="Lost packets per period", dataSource=DATASOURCE, targets=targets(LOST_PER_PERIOD),
                        drawStyle="bars", fillOpacity=80, unit="none"), 12),
        ]),
        (8, [
            (TimeSeries(title="Loss ratio per period", dataSource=DATASOURCE, targets=targets(RATIO_PER_PERIOD),
                        unit="percentunit", showPoints="always"), 12),
            (TimeSeries(title="Incomplete periods (the side that is known)", dataSource=DATASOURCE,
                        targets=targets(INCOMPLETE_PER_PERIOD), drawStyle="points", pointSize=8, unit="none",
                        description="One point per period that could not be measured: its ingress (tx) or egress "
                                    "(rx) block did not arrive in time, so its loss is unknown."), 12),
        ]),
        (8, [
            (TimeSeries(title="Lost packets per segment (from → to) per period", dataSource=DATASOURCE,
                        targets=targets((SEGMENT_LOST_PER_PERIOD, SEGMENT_ALIAS)), drawStyle="bars",
                        fillOpacity=80, unit="none",
                        description="Where along the path the flow lost packets: one series per pair of consecutive "
                                    "counting points, for flows whose counters carry positions (ebpf data plane). "
                                    "Only complete segments: one whose two counts did not both arrive is left "
                                    "out, never shown as loss."), 24),
        ]),
        (10, [
            (Table(title="Periods", dataSource=DATASOURCE, targets=targets(PERIODS, table=True),
                   overrides=_PERCENT + [{"matcher": {"id": "byName", "options": "complete"},
                                          "properties": [{"id": "mappings", "value": _COMPLETE},
                                                         {"id": "custom.displayMode", "value": "color-text"}]}]),
             24),
        ]),
    )
    return dashboard(UID, "srv6pm: flow detail", "Per-period loss of one flow, incomplete periods shown as such.",
                     panels, [query_variable("flow", "flow", f'SHOW TAG VALUES FROM "{L.measurement}" WITH KEY = "{L.flow}"')],
                     time_from="now-30m")
