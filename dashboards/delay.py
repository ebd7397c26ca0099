"""Path delay (variable ``session``): one STAMP session's delay statistics per direction.

Each period has three points in ``delay``: ``forward`` (t2−t1), ``backward``
(t4−t3) and ``round_trip`` ((t4−t1)−(t3−t2)), each with min, mean, max, p99 and
jitter in µs (absent when no packet came back in that period).
"""

from __future__ import annotations

from grafanalib.core import Table, TimeSeries

from srv6pm.influx_schema import DELAY as D

from .common import DATASOURCE, dashboard, layout, query_variable, targets

UID = "srv6pm-delay"

DIRECTIONS = ("forward", "backward", "round_trip")
SESSION = f'"{D.session}" = \'$session\''


def per_direction(direction: str) -> str:
    return (f'SELECT "{D.min_us}" AS "min", "{D.mean_us}" AS "mean", "{D.max_us}" AS "max", "{D.p99_us}" AS "p99", '
            f'"{D.jitter_us}" AS "jitter" FROM "{D.measurement}" WHERE {SESSION} AND "{D.direction}" = \'{direction}\' '
            'AND $timeFilter')


SUMMARY = (f'SELECT min("{D.min_us}") AS "min", mean("{D.mean_us}") AS "mean", max("{D.max_us}") AS "max", '
           f'max("{D.p99_us}") AS "p99", mean("{D.jitter_us}") AS "jitter", sum("{D.samples}") AS "samples", '
           f'sum("{D.lost}") AS "lost" FROM "{D.measurement}" WHERE {SESSION} AND $timeFilter GROUP BY "{D.direction}"')
PACKETS = (f'SELECT "{D.samples}" AS "answered", "{D.lost}" FROM "{D.measurement}" WHERE {SESSION} '
           f'AND "{D.direction}" = \'round_trip\' AND $timeFilter')

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
                                             f'SHOW TAG VALUES FROM "{D.measurement}" WITH KEY = "{D.session}"')],
                     time_from="now-30m")
