"""Grafana dashboards as code (grafanalib), for NOC operators.

Four dashboards over the InfluxDB ``srv6pm`` database, queried in InfluxQL so
that they work on InfluxDB 1.x, 2.x (v1 compatibility API) and 3.x. The
generated JSON is committed in ``dashboards/json/`` (Grafana provisioning
mounts it); ``srv6pm dashboards generate`` rewrites it and ``--check`` tells
whether it is stale. Building needs the ``dashboards`` extra (grafanalib).
"""
