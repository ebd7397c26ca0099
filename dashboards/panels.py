"""Reading generated dashboards: their panels, queries and variables, and Grafana's macro expansion.

Works on the JSON documents (``dict``), not on grafanalib objects, so that
what is checked is what Grafana loads. :func:`interpolate` expands a query
the way Grafana's InfluxDB datasource does for InfluxQL: ``$timeFilter``
becomes ``time >= <from>ms and time <= <to>ms``, ``$__interval`` a duration
literal, ``$__interval_ms`` the same in milliseconds, and every ``$name``
(or ``${name}``) of a dashboard variable its single value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

__all__ = ["GRAFANA_MACROS", "interpolate", "panels", "queries", "variable_names", "variables_used"]

GRAFANA_MACROS = ("timeFilter", "__interval", "__interval_ms")

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def panels(doc: dict) -> Iterator[dict]:
    """Every panel of a dashboard, including those nested in rows."""
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(doc: dict) -> Iterator[tuple[dict, dict]]:
    """Every ``(panel, target)`` pair of a dashboard."""
    for panel in panels(doc):
        for target in panel.get("targets", []):
            yield panel, target


def variable_names(doc: dict) -> set[str]:
    """Names of the dashboard's template variables."""
    return {v["name"] for v in doc.get("templating", {}).get("list", [])}


def variables_used(text: str) -> set[str]:
    """Names referenced as ``$name`` or ``${name}`` in ``text`` (macros included)."""
    # \w+ is greedy: "$__interval_ms" reads as one name, not "$__interval" and "_ms".
    return {braced or plain for braced, plain in _VARIABLE.findall(text)}


def interpolate(query: str, values: Mapping[str, str], start_ms: int, end_ms: int, interval_s: float) -> str:
    """``query`` with Grafana's InfluxQL macros and the variables in ``values`` expanded.

    Raises KeyError naming a variable that has no value.
    """
    interval = f"{int(interval_s * 1000)}ms" if interval_s < 1 or interval_s != int(interval_s) else f"{int(interval_s)}s"
    macros = {"timeFilter": f"time >= {int(start_ms)}ms and time <= {int(end_ms)}ms",
              "__interval": interval, "__interval_ms": str(int(interval_s * 1000))}

    def expand(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in macros:
            return macros[name]
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name}")
        return str(values[name])

    return _VARIABLE.sub(expand, query)
