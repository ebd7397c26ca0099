"""InfluxDB access: batched writes through influxdb-client, InfluxQL reads.

Writes use the v2 write API (``/api/v2/write``), which InfluxDB 1.8+, 2.x and
3.x serve (the lab's embedded 1.6.7 engine gets it from ``srv6pm.lab.emulators.influx_front``).
Reads use InfluxQL on ``/query``, which every version serves (2.x and 3.x
through their v1 compatibility API), as the dashboards do.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import cast

from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from srv6pm.errors import OperationError
from srv6pm.config import InfluxSettings

__all__ = ["InfluxWriter", "StoreError", "influxql"]


class StoreError(OperationError, RuntimeError):
    """A write was not accepted; nothing may be assumed stored."""


class InfluxWriter:
    """Synchronous batch writer: ``write(points)`` returns only once InfluxDB accepted them all.

    ``points`` are influxdb-client Points or lines of line protocol (str); a list of lines goes out as
    one request body as it is.
    """

    def __init__(self, settings: InfluxSettings, timeout_s: float = 10.0):
        self.settings = settings
        self._client = InfluxDBClient(url=settings.url, token=settings.token or "", org=settings.org,
                                      timeout=int(timeout_s * 1000), ssl_ca_cert=settings.cafile)
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, points: list[Point] | list[str]) -> None:
        if not points:
            return
        record: list[Point] | list[str] | bytes = points
        if all(isinstance(p, str) for p in points):
            record = "\n".join(p for p in cast("list[str]", points) if p).encode()
        try:
            self._write.write(bucket=self.settings.bucket, org=self.settings.org, record=record)
        except ApiException as exc:
            raise StoreError(f"InfluxDB refused the write: HTTP {exc.status}: {(exc.body or exc.reason or '')!s:.300}") from None
        except Exception as exc:  # urllib3 connection errors and the like: no answer from the store
            from srv6pm.reach import describe
            raise StoreError(f"InfluxDB at {self.settings.url} does not answer: write failed: {describe(exc)}") from None

    def close(self) -> None:
        self._client.close()


def influxql(settings: InfluxSettings, query: str, database: str | None = None, timeout_s: float = 10.0) -> list[dict]:
    """Run an InfluxQL query on ``/query``; returns the ``results`` list (raises StoreError on errors)."""
    params = {"q": query, "db": database or settings.bucket.split("/")[0], "epoch": "ns"}
    request = urllib.request.Request(f"{settings.url.rstrip('/')}/query?{urllib.parse.urlencode(params)}")
    if settings.token:
        request.add_header("Authorization", f"Token {settings.token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            doc = json.load(response)
    except OSError as exc:
        raise StoreError(f"InfluxQL query failed: {exc}") from None
    for result in doc.get("results", []):
        if "error" in result:
            raise StoreError(f"InfluxQL error: {result['error']}")
    return doc.get("results", [])
