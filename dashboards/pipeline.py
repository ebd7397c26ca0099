"""Pipeline health: throughput, lag and dead letters of the processors, liveness of the exporters.

Everything comes from the measurements the processors write about themselves
(``processor/health.py``): ``pipeline`` (per instance and input topic, counts
since the previous point plus the consumer lag) and ``exporter`` (per node and
processor instance, the age of the newest record seen). So this dashboard
needs no datasource besides InfluxDB.
"""

from __future__ import annotations

from grafanalib.core import Stat, Table, TimeSeries

from srv6pm.influx_schema import EXPORTER as E
from srv6pm.influx_schema import PIPELINE as P

from .common import DATASOURCE, dashboard, layout, targets

UID = "srv6pm-pipeline"

# Health points come every 10 s by default: a narrower bucket would alternate between 0 and a burst.
MIN_INTERVAL = "10s"
# An exporter publishes at least once per period (default 10 s); three periods of silence is an outage.
STALE_AFTER_S = 30

RATES = (f'SELECT sum("{P.records_in}") * 1000 / $__interval_ms AS "in", '
         f'sum("{P.records_out}") * 1000 / $__interval_ms AS "out" '
         f'FROM "{P.measurement}" WHERE $timeFilter GROUP BY time($__interval), "{P.topic}" fill(0)')
LAG = (f'SELECT max("{P.lag}") AS "lag" FROM "{P.measurement}" WHERE $timeFilter '
       f'GROUP BY time($__interval), "{P.topic}", "{P.instance}" fill(none)')
DEADLETTERS = f'SELECT sum("{P.deadletters}") AS "deadletters" FROM "{P.measurement}" WHERE $timeFilter'
ERRORS = f'SELECT sum("{P.errors}") AS "errors" FROM "{P.measurement}" WHERE $timeFilter'
DEADLETTERS_OVER_TIME = (f'SELECT sum("{P.deadletters}") AS "deadletters", sum("{P.errors}") AS "errors" '
                         f'FROM "{P.measurement}" WHERE $timeFilter GROUP BY time($__interval), "{P.topic}" fill(0)')
PROCESSORS = (f'SELECT sum("{P.records_in}") AS "records_in", sum("{P.records_out}") AS "records_out", '
              f'sum("{P.deadletters}") AS "deadletters", sum("{P.errors}") AS "errors", last("{P.lag}") AS "lag" '
              f'FROM "{P.measurement}" WHERE $timeFilter GROUP BY "{P.instance}", "{P.topic}"')
EXPORTERS = (f'SELECT min("age") AS "last_record_age_s", sum("records") AS "records" FROM '
             f'(SELECT last("{E.last_record_age_s}") AS "age", sum("{E.records}") AS "records" FROM "{E.measurement}" '
             f'WHERE $timeFilter GROUP BY "{E.node}", "{E.instance}") GROUP BY "{E.node}"')
EXPORTER_AGE = (f'SELECT min("{E.last_record_age_s}") AS "age" FROM "{E.measurement}" WHERE $timeFilter '
                f'GROUP BY time($__interval), "{E.node}" fill(none)')

_STALE = [{"color": "green", "value": None}, {"color": "red", "value": STALE_AFTER_S}]
_ANY = [{"color": "green", "value": None}, {"color": "red", "value": 1}]


def build():
    panels = layout(
        (8, [
            (TimeSeries(title="Records per second per topic", dataSource=DATASOURCE,
                        targets=targets((RATES, f"$tag_{P.topic} $col")), interval=MIN_INTERVAL, unit="rps",
                        description="Consumed (in) and results published (out) per input topic, all processors."), 12),
            (TimeSeries(title="Consumer lag", dataSource=DATASOURCE, 
                        targets=targets((LAG, f"$tag_{P.topic} $tag_{P.instance}")),
                        interval=MIN_INTERVAL, unit="none",
                        description="Records on the assigned partitions not yet consumed, per processor."), 12),
        ]),
        (5, [
            (Stat(title="Dead letters", dataSource=DATASOURCE, targets=targets(DEADLETTERS), reduceCalc="sum",
                  noValue="0", graphMode="none", colorMode="background", thresholds=_ANY,
                  description="Input records that could not be decoded or failed their schema (srv6pm.deadletter)."), 6),
            (Stat(title="Publish and store errors", dataSource=DATASOURCE, targets=targets(ERRORS), reduceCalc="sum",
                  noValue="0", graphMode="none", thresholds=_ANY,
                  description="Failed attempts to publish or store results (each was retried)."), 6),
            (TimeSeries(title="Dead letters and errors", dataSource=DATASOURCE,
                        targets=targets((DEADLETTERS_OVER_TIME, f"$tag_{P.topic} $col")), interval=MIN_INTERVAL,
                        drawStyle="bars", fillOpacity=80, unit="none"), 12),
        ]),
        (8, [
            (Table(title="Exporter liveness", dataSource=DATASOURCE, targets=targets(EXPORTERS, table=True),
                   description=f"Seconds since each node's newest record (red after {STALE_AFTER_S} s: its exporter "
                               "is down or cut off), and its records in the time range.",
                   overrides=[{"matcher": {"id": "byName", "options": "last_record_age_s"},
                               "properties": [{"id": "unit", "value": "s"},
                                              {"id": "thresholds", "value": {"mode": "absolute", "steps": _STALE}},
                                              {"id": "custom.displayMode", "value": "color-background"}]}]), 10),
            (TimeSeries(title="Age of the newest record per exporter", dataSource=DATASOURCE,
                        targets=targets((EXPORTER_AGE, f"$tag_{E.node}")), unit="s", thresholds=_STALE,
                        thresholdsStyleMode="line"), 14),
        ]),
        (7, [
            (Table(title="Processors", dataSource=DATASOURCE, targets=targets(PROCESSORS, table=True),
                   description="Per processor instance and input topic, over the time range."), 24),
        ]),
    )
    return dashboard(UID, "srv6pm: pipeline health",
                     "Throughput, consumer lag and dead letters of the processors; liveness of the node exporters.",
                     panels, time_from="now-1h")
