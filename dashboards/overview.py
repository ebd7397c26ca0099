"""Network overview: which flows lose packets, how long the paths take, what is alarming.

Loss figures come only from *complete* periods (``complete = true``): an
incomplete period has no ``lost_packets`` and counts separately, as incomplete,
never as loss or as no loss. "Now" means the last complete period of each flow
inside the chosen time range, so the panels also read right for a past range.

Path liveness comes from ``liveness`` (one point per change of a STAMP path
that its session watches: ``up`` 0 when it went down, 1 when it came up
again); the state timeline carries each session's last state forward through
the range (a session with no change in the range shows nothing: it did not
change).
"""

from __future__ import annotations

from grafanalib.core import Stat, StateTimeline, Table, TableSortByField, TimeSeries

from srv6pm.influx_schema import LIVENESS

from srv6pm.influx_schema import DELAY as D
from srv6pm.influx_schema import LOSS as L

from .common import DATASOURCE, dashboard, layout, targets, textbox_variable

UID = "srv6pm-overview"

FLOWS_WITH_LOSS_NOW = (
    f'SELECT count("lost") AS "flows" FROM (SELECT last("{L.lost_packets}") AS "lost" FROM "{L.measurement}" '
    f'WHERE "{L.complete}" = true AND $timeFilter GROUP BY "{L.flow}") WHERE "lost" > 0')
LOST_IN_RANGE = (f'SELECT sum("{L.lost_packets}") AS "lost" FROM "{L.measurement}" WHERE "{L.complete}" = true '
                 'AND $timeFilter')
INCOMPLETE_IN_RANGE = (f'SELECT count("{L.complete}") AS "incomplete" FROM "{L.measurement}" '
                       f'WHERE "{L.complete}" = false AND $timeFilter')
FLOWS_RANKED = (
    f'SELECT sum("{L.lost_packets}") AS "lost", sum("{L.tx_packets}") AS "sent", '
    f'sum("{L.lost_packets}") / sum("{L.tx_packets}") AS "loss_ratio", count("{L.lost_packets}") AS "periods" '
    f'FROM "{L.measurement}" WHERE "{L.complete}" = true AND $timeFilter GROUP BY "{L.flow}"')
INCOMPLETE_BY_FLOW = (
    f'SELECT count("{L.complete}") AS "incomplete" FROM "{L.measurement}" WHERE "{L.complete}" = false '
    f'AND $timeFilter GROUP BY "{L.flow}"')
LOSS_OVER_TIME = (
    f'SELECT sum("{L.lost_packets}") AS "lost" FROM "{L.measurement}" WHERE "{L.complete}" = true AND $timeFilter '
    f'GROUP BY time($__interval), "{L.flow}" fill(none)')
DELAY_PER_SESSION = (
    f'SELECT mean("{D.mean_us}") AS "mean", max("{D.p99_us}") AS "p99" FROM "{D.measurement}" '
    f'WHERE "{D.direction}" = \'round_trip\' AND $timeFilter GROUP BY time($__interval), "{D.session}" fill(none)')
LOSS_ALARMS = (
    f'SELECT "{L.loss_ratio}", "{L.lost_packets}", "{L.tx_packets}" FROM "{L.measurement}" '
    f'WHERE "{L.complete}" = true AND "{L.loss_ratio}" > $loss_threshold AND $timeFilter GROUP BY "{L.flow}" '
    'ORDER BY time DESC')
DELAY_ALARMS = (
    f'SELECT "{D.p99_us}", "{D.samples}", "{D.lost}" FROM "{D.measurement}" '
    f'WHERE "{D.p99_us}" > $p99_threshold_us AND $timeFilter GROUP BY "{D.session}", "{D.direction}" '
    'ORDER BY time DESC')

PATH_LIVENESS = (
    f'SELECT last("{LIVENESS.up}") AS "up" FROM "{LIVENESS.measurement}" WHERE $timeFilter '
    f'GROUP BY time($__interval), "{LIVENESS.session}" fill(previous)')

_GREEN_RED = [{"color": "green", "value": None}, {"color": "red", "value": 1}]


def build():
    panels = layout(
        (5, [
            (Stat(title="Flows with loss now", dataSource=DATASOURCE, targets=targets(FLOWS_WITH_LOSS_NOW),
                  description="Flows whose last complete period in the time range lost packets.",
                  reduceCalc="lastNotNull", noValue="0", graphMode="none", colorMode="background",
                  thresholds=_GREEN_RED), 8),
            (Stat(title="Lost packets", dataSource=DATASOURCE, targets=targets(LOST_IN_RANGE),
                  description="Packets lost in the time range, over all flows (complete periods).",
                  reduceCalc="sum", noValue="0", graphMode="none", thresholds=_GREEN_RED), 8),
            (Stat(title="Incomplete periods", dataSource=DATASOURCE, targets=targets(INCOMPLETE_IN_RANGE),
                  description="Periods a flow could not be measured in (one side's block missing): neither loss "
                              "nor no loss.", reduceCalc="sum", noValue="0", graphMode="none",
                  thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]), 8),
        ]),
        (9, [
            (Table(title="Flows ranked by lost packets", dataSource=DATASOURCE, targets=targets(FLOWS_RANKED, table=True),
                   description="Complete periods only. loss_ratio = lost / sent over the time range.",
                   sortBy=[TableSortByField(displayName="lost", desc=True)],
                   overrides=[{"matcher": {"id": "byName", "options": "loss_ratio"},
                               "properties": [{"id": "unit", "value": "percentunit"}]}]), 16),
            (Table(title="Incomplete periods by flow", dataSource=DATASOURCE,
                   targets=targets(INCOMPLETE_BY_FLOW, table=True),
                   sortBy=[TableSortByField(displayName="incomplete", desc=True)]), 8),
        ]),
        (8, [
            (TimeSeries(title="Lost packets by flow", dataSource=DATASOURCE,
                        targets=targets((LOSS_OVER_TIME, f"$tag_{L.flow}")), drawStyle="bars", fillOpacity=80,
                        unit="none"), 12),
            (TimeSeries(title="Round-trip delay per STAMP session", dataSource=DATASOURCE,
                        targets=targets((DELAY_PER_SESSION, f"$tag_{D.session} $col")), unit="µs",
                        description="Mean and worst p99 of the round-trip delay per path (STAMP session)."), 12),
        ]),
        (8, [
            (Table(title="Alarms: periods with loss ratio above $loss_threshold", dataSource=DATASOURCE,
                   targets=targets(LOSS_ALARMS, table=True),
                   overrides=[{"matcher": {"id": "byName", "options": "loss_ratio"},
                               "properties": [{"id": "unit", "value": "percentunit"}]}]), 12),
            (Table(title="Alarms: periods with p99 delay above $p99_threshold_us µs", dataSource=DATASOURCE,
                   targets=targets(DELAY_ALARMS, table=True)), 12),
        ]),
        (6, [
            (StateTimeline(title="STAMP path liveness", dataSource=DATASOURCE,
                           targets=targets((PATH_LIVENESS, "$tag_session")),
                           description="Sessions that watch their path: down (red) from the moment the sender "
                                       "declared it (N test packets in a row without a reply), up (green) again "
                                       "after M replies in a row. From the liveness alarms on srv6pm.alarms.",
                           mappings=[{"type": "value", "options": {
                               "0": {"text": "down", "color": "red", "index": 0},
                               "1": {"text": "up", "color": "green", "index": 1}}}]), 24),
        ]),
    )
    return dashboard(
        UID, "srv6pm: network overview",
        "Loss per flow (alternate marking) and delay per path (STAMP) for NOC operators.", panels,
        [textbox_variable("loss_threshold", "loss ratio alarm above", "0.01"),
         textbox_variable("p99_threshold_us", "p99 delay alarm above (µs)", "50000")])
