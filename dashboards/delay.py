"""Path delay (variable ``session``): one STAMP session's delay statistics per direction.

Each period has three points in ``delay``: ``forward`` (t2−t1), ``backward``
(t4−t3) and ``round_trip`` ((t4−t1)−(t3−t2)), each with min, mean, max, p99 and
jitter in µs (absent when no packet came back in that period).
"""

from __future__ import annotations

from grafanalib.core import Table, TimeSeries

from .common import DATASOURCE, dashboard, layout, query_variable, targets

UID = "srv6pm-delay"

DIRECTIONS = ("forward", "backward", "round_trip")
SESSION = '"session" = \'$session\''


def per_direction(direction: str) -> str:
    return ('SELECT "min_us" AS "min", "mean_us" AS "mean", "max_us" AS "max", "p99_us" AS "p99", '
            f'"jitter_us" AS "jitter" FROM "delay" WHERE {SESSION} AND "direction" = \'{direction}\' AND $timeFilter')


SUMMARY = ('SELECT min("min_us") AS "min", mean("mean_us") AS "mean", max("max_us") AS "max", '
           'max("p99_us") AS "p99", mean("jitter_us") AS "jitter", sum("samples") AS "samples", sum("lost") AS "lost" '
           f'FROM "delay" WHERE {SESSION} AND $timeFilter GROUP BY "direction"')
PACKETS = (f'SELECT "samples" AS "answered", "lost" FROM "delay" WHERE {SESSION} AND "direction" = \'round_trip\' '
           'AND $timeFilter')

_TITLES = {"forward": "Forward delay (sender → reflector)", "backward": "Backward delay (reflector → sender)",
           "round_trip": "Round-trip delay (without the reflector's own time)"}


def build():
    series = [(TimeSeries(title=_TITLES[d], dataSource=DATASOURCE, targets=targets(per_direction(d)), unit="µs",
                          legendDisplayMode="table", legendCalcs=["min", "mean", "max"]), 8) for d in DIRECTIONS]
    panels = layout(
        (9, series),
        (7, [
            (Table(title="Per direction over the time range", dataSource=DATASOURCE,
                   targets=targets(SUMMARY, table=True), unit="µs",
                   overrides=[{"matcher": {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": "none"}]}
                              for name in ("samples", "lost")],
                   description="min of the period minima, mean of the period means, max of the maxima, worst "
                               "period p99, mean jitter; test packets answered and lost."), 14),
            (TimeSeries(title="STAMP test packets per period", dataSource=DATASOURCE, targets=targets(PACKETS),
                        drawStyle="bars", fillOpacity=70, unit="none",
                        stacking={"mode": "normal", "group": "A"}), 10),
        ]),
    )
    return dashboard(UID, "srv6pm: path delay", "STAMP delay of one session per direction: min, mean, max, p99, jitter.",
                     panels, [query_variable("session", "STAMP session",
                                             'SHOW TAG VALUES FROM "delay" WITH KEY = "session"')],
                     time_from="now-30m")
