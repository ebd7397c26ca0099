"""What every srv6pm dashboard shares: the datasource, InfluxQL targets, layout.

The datasource is an InfluxDB datasource in InfluxQL mode whose uid is
``srv6pm-influxdb`` (the Grafana provisioning in ``dashboards/provisioning/``
defines it with that uid, pointing at the ``srv6pm`` database or bucket).
Queries use the Grafana InfluxQL macros ``$timeFilter`` (the dashboard's time
range), ``$__interval`` and ``$__interval_ms`` (the bucket width Grafana picks
for the panel), and the dashboard's own template variables as ``$name``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafanalib.core import (REFRESH_ON_TIME_RANGE_CHANGE, SORT_ALPHA_ASC, Dashboard, GridPos, Template,
                             Templating, Time)
from grafanalib.influxdb import InfluxDBTarget

__all__ = ["DATASOURCE", "DATASOURCE_UID", "dashboard", "layout", "query_variable", "targets", "textbox_variable"]

DATASOURCE_UID = "srv6pm-influxdb"
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}

# Grafana 10's dashboard schema: the panels below use its field-config layout.
SCHEMA_VERSION = 39


def targets(*queries: str | tuple[str, str], table: bool = False) -> list[InfluxDBTarget]:
    """InfluxQL targets A, B, … on the srv6pm datasource; a query may be ``(query, alias)``."""
    out = []
    for i, q in enumerate(queries):
        query, alias = q if isinstance(q, tuple) else (q, "")
        out.append(InfluxDBTarget(query=query, alias=alias, datasource=DATASOURCE, refId=chr(ord("A") + i),
                                  format="table" if table else "time_series"))
    return out


def query_variable(name: str, label: str, query: str) -> Template:
    """A single-value variable filled by an InfluxQL ``SHOW TAG VALUES`` query, refreshed with the time range."""
    return Template(name=name, label=label, query=query, dataSource=DATASOURCE,
                    refresh=REFRESH_ON_TIME_RANGE_CHANGE, sort=SORT_ALPHA_ASC, includeAll=False, multi=False)


def textbox_variable(name: str, label: str, default: str) -> Template:
    """A free-text variable (a threshold) with a default value."""
    return Template(name=name, label=label, query=default, default=default, type="textbox")


def layout(*rows: tuple[int, list[tuple[Any, int]]]) -> list:
    """Place panels on Grafana's 24-column grid, row by row: each row is ``(height, [(panel, width), …])``."""
    placed, y = [], 0
    for height, row in rows:
        x = 0
        for panel, width in row:
            if x + width > 24:
                raise ValueError(f"row at y={y} is wider than 24 columns")
            panel.gridPos = GridPos(h=height, w=width, x=x, y=y)
            placed.append(panel)
            x += width
        y += height
    return placed


def dashboard(uid: str, title: str, description: str, panels: list, variables: Sequence[Template] = (),
              time_from: str = "now-1h") -> Dashboard:
    """A dashboard with stable panel ids, tagged ``srv6pm``, refreshing every 10 s."""
    return Dashboard(
        uid=uid, title=title, description=description, tags=["srv6pm"], panels=panels,
        templating=Templating(list=list(variables)), time=Time(time_from, "now"), refresh="10s",
        timezone="utc", schemaVersion=SCHEMA_VERSION, editable=True,
    ).auto_panel_ids()
