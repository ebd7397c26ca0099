#!/bin/bash
# InfluxDB 2.x initialisation (run once, by the influxdb image's entrypoint, right
# after the initial setup of org, bucket and admin token): map the InfluxQL database
# "srv6pm" with retention policy "autogen" to the srv6pm bucket. The dashboards
# query with InfluxQL through the v1 compatibility API (/query?db=srv6pm), which
# finds a bucket only through such a mapping (DBRP).
set -euo pipefail

influx v1 dbrp create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
    --db srv6pm \
    --rp autogen \
    --default
