"""Path delay (variable ``session``): one STAMP session's delay statistics per direction.

Each period has three points in ``delay``: ``forward`` (t2−t1), ``backward``
(t4−t3) and ``round_trip`` ((t4−t1)−(t3−t2)), each with min, mean, max, p99 and
jitter in µs (absent when no packet came back in that period).

All three carry the period's ``lost`` test packets and, for a session with
RFC 8972 Direct Measurement (``direct_measurement``), ``lost_forward`` (never
reached the reflector) and ``lost_backward`` (the reply never came back): the
same values in the three points, so the loss panels read the ``round_trip``
point only. Those two are left out, never 0, where the direction is not known
(no Direct Measurement, or not known for that period): their panels then show
nothing for that period rather than 0, and count the periods whose lost test
packets have no direction. A test packet never sent or received and not
answered is in neither, so forward + backward can be below ``lost``.
"""

from __future__ import annotations

from grafanalib.core import Stat, Table, TimeSeries

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
ROUND_TRIP = f'"{D.direction}" = \'round_trip\''  # one point per period for what the three points share


def round_trip(select: str, where: str = "") -> str:
    """``SELECT <select>`` of the session's round-trip points (one per period), with ``where`` conditions added."""
    return f'SELECT {select} FROM "{D.measurement}" WHERE {SESSION} AND {ROUND_TRIP} {where}AND $timeFilter'


PACKETS = round_trip(f'"{D.samples}" AS "answered", "{D.lost}"')
LOST_FORWARD = round_trip(f'sum("{D.lost_forward}") AS "lost forward"')
LOST_BACKWARD = round_trip(f'sum("{D.lost_backward}") AS "lost backward"')
PERIODS_WITH_LOSS = round_trip(f'count("{D.lost}")', f'AND "{D.lost}" > 0 ')
PERIODS_WITH_DIRECTION = round_trip(f'count("{D.lost_forward}")', f'AND "{D.lost}" > 0 ')
LOST_PER_DIRECTION = round_trip(f'"{D.lost_forward}" AS "lost forward", "{D.lost_backward}" AS "lost backward"')
ALL_LOST = round_trip(f'"{D.lost}"')

_NOT_MEASURED = "not measured"
_LOSS_COLOURS = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
# All lost test packets (target B) are the reference the two stacked bars are read against: points, not stacked.
_ALL_LOST = [{"matcher": {"id": "byFrameRefID", "options": "B"},
              "properties": [{"id": "custom.drawStyle", "value": "points"}, {"id": "custom.pointSize", "value": 9},
                             {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
                             {"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}}]}]

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
        (4, [
            (Stat(title="Lost forward (sender → reflector)", dataSource=DATASOURCE, targets=targets(LOST_FORWARD),
                  reduceCalc="sum", noValue=_NOT_MEASURED, graphMode="none", thresholds=_LOSS_COLOURS,
                  description="Test packets that never reached the reflector (RFC 8972 Direct Measurement), "
                              "over the periods whose direction is known."), 8),
            (Stat(title="Lost backward (reflector → sender)", dataSource=DATASOURCE, targets=targets(LOST_BACKWARD),
                  reduceCalc="sum", noValue=_NOT_MEASURED, graphMode="none", thresholds=_LOSS_COLOURS,
                  description="Replies the reflector sent that never came back (RFC 8972 Direct Measurement), "
                              "over the periods whose direction is known."), 8),
            (Stat(title="Periods with lost test packets", dataSource=DATASOURCE,
                  targets=targets((PERIODS_WITH_LOSS, "with lost packets"),
                                  (PERIODS_WITH_DIRECTION, "direction known")), reduceCalc="sum", noValue="0",
                  graphMode="none", textMode="value_and_name",
                  description="Periods that lost test packets, and how many of them say in which direction. "
                              "The others had no Direct Measurement or could not tell (reflector without "
                              "the counters, counters gone backwards, losses in both directions across a "
                              "period's end)."), 8),
        ]),
        (8, [
            (TimeSeries(title="Lost test packets per direction per period", dataSource=DATASOURCE,
                        targets=targets((LOST_PER_DIRECTION, "$col"), (ALL_LOST, "lost (all)")), drawStyle="bars", fillOpacity=70, unit="none",
                        stacking={"mode": "normal", "group": "A"}, overrides=_ALL_LOST,
                        description="Forward and backward (stacked bars) against all lost test packets "
                                    "(points). A period without bars has no known direction; bars below the "
                                    "point: packets never sent, or received and not answered."), 24),
        ]),
    )
    return dashboard(UID, "srv6pm: path delay", "STAMP delay of one session per direction: min, mean, max, p99, jitter.",
                     panels, [query_variable("session", "STAMP session",
                                             f'SHOW TAG VALUES FROM "{D.measurement}" WITH KEY = "{D.session}"')],
                     time_from="now-30m")
