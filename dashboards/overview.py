"""Network overview: which flows lose packets, how long the paths take, what is alarming.

Loss figures come only from *complete* periods (``complete = true``): an
incomplete period has no ``lost_packets`` and counts separately, as incomplete,
never as loss or as no loss. "Now" means the last complete period of each flow
inside the chosen time range, so the panels also read right for a past range.
"""

from __future__ import annotations

from grafanalib.core import Stat, Table, TableSortByField, TimeSeries

from .common import DATASOURCE, dashboard, layout, targets, textbox_variable

UID = "srv6pm-overview"

FLOWS_WITH_LOSS_NOW = (
    'SELECT count("lost") AS "flows" FROM (SELECT last("lost_packets") AS "lost" FROM "loss" '
    'WHERE "complete" = true AND $timeFilter GROUP BY "flow") WHERE "lost" > 0')
LOST_IN_RANGE = 'SELECT sum("lost_packets") AS "lost" FROM "loss" WHERE "complete" = true AND $timeFilter'
INCOMPLETE_IN_RANGE = 'SELECT count("complete") AS "incomplete" FROM "loss" WHERE "complete" = false AND $timeFilter'
FLOWS_RANKED = (
    'SELECT sum("lost_packets") AS "lost", sum("tx_packets") AS "sent", '
    'sum("lost_packets") / sum("tx_packets") AS "loss_ratio", count("lost_packets") AS "periods" '
    'FROM "loss" WHERE "complete" = true AND $timeFilter GROUP BY "flow"')
INCOMPLETE_BY_FLOW = (
    'SELECT count("complete") AS "incomplete" FROM "loss" WHERE "complete" = false AND $timeFilter GROUP BY "flow"')
LOSS_OVER_TIME = (
    'SELECT sum("lost_packets") AS "lost" FROM "loss" WHERE "complete" = true AND $timeFilter '
    'GROUP BY time($__interval), "flow" fill(none)')
DELAY_PER_SESSION = (
    'SELECT mean("mean_us") AS "mean", max("p99_us") AS "p99" FROM "delay" '
    'WHERE "direction" = \'round_trip\' AND $timeFilter GROUP BY time($__interval), "session" fill(none)')
LOSS_ALARMS = (
    'SELECT "loss_ratio", "lost_packets", "tx_packets" FROM "loss" '
    'WHERE "complete" = true AND "loss_ratio" > $loss_threshold AND $timeFilter GROUP BY "flow" ORDER BY time DESC')
DELAY_ALARMS = (
    'SELECT "p99_us", "samples", "lost" FROM "delay" '
    'WHERE "p99_us" > $p99_threshold_us AND $timeFilter GROUP BY "session", "direction" ORDER BY time DESC')

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
                        targets=targets((LOSS_OVER_TIME, "$tag_flow")), drawStyle="bars", fillOpacity=80,
                        unit="none"), 12),
            (TimeSeries(title="Round-trip delay per STAMP session", dataSource=DATASOURCE,
                        targets=targets((DELAY_PER_SESSION, "$tag_session $col")), unit="µs",
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
    )
    return dashboard(
        UID, "srv6pm: network overview",
        "Loss per flow (alternate marking) and delay per path (STAMP) for NOC operators.", panels,
        [textbox_variable("loss_threshold", "loss ratio alarm above", "0.01"),
         textbox_variable("p99_threshold_us", "p99 delay alarm above (µs)", "50000")])
