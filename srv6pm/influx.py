"""InfluxDB access: batched writes through influxdb-client, InfluxQL reads.

Writes use the v2 write API (``/api/v2/write``), which InfluxDB 1.8+, 2.x and
3.x serve (the lab's embedded 1.6.7 engine gets it from ``srv6pm.lab.emulators.influx_front``).
Reads use InfluxQL on ``/query``, which every version serves (2.x and 3.x
through their v1 compatibility API), as the dashboards do.

A write that fails raises :class:`StoreError`, whose ``kind`` tells the caller what to do
(:func:`refusal` decides it from InfluxDB's answer): ``transient`` (no answer, a timeout, HTTP 5xx,
408, 429 with its Retry-After): the same write may work later; ``config`` (401, 403, 404 or an
unknown database, bucket, organisation or retention policy, any other unexpected 4xx): no retry fixes
it but the operator can, and the message names the setting; ``data`` (400, 413, 422): InfluxDB refuses
these points (a field type conflict, a partial write, a body too large), so writing them again never
works, though fewer of them may (1.x stores the good points of a partial write and says how many it
``dropped``).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.parse
import urllib.request
from typing import cast

from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from srv6pm.errors import OperationError
from srv6pm.config import InfluxSettings
from srv6pm.quote import quote, shorten

__all__ = ["CONFIG", "DATA", "TRANSIENT", "InfluxWriter", "StoreError", "influxql", "refusal"]


# What a failed write calls for (StoreError.kind).
TRANSIENT = "transient"  # no answer, a timeout, 5xx, 429: the same write later may work; hold and retry
CONFIG = "config"  # refused for a reason only the operator can fix (auth, no such bucket): hold, say what to fix
DATA = "data"  # the points themselves are refused (400, 413, 422): no retry of them will ever work

_DATA_STATUSES = frozenset({400, 413, 422})
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Refusals of the destination, whatever their status (1.x answers an unknown retention policy with 500).
_NOT_FOUND = re.compile(r"^(database not found|retention policy not found|(bucket|organization|org)\b[^:]*not found)",
                        re.IGNORECASE)
_DROPPED = re.compile(r"\bdropped=(\d+)\s*$")
RETRY_AFTER_MAX_S = 300.0  # a Retry-After longer than this is waited for this long


class StoreError(OperationError, RuntimeError):
    """A write was not accepted; nothing may be assumed stored.

    ``kind`` says what it calls for (:data:`TRANSIENT`, :data:`CONFIG`, :data:`DATA`); ``status`` is the HTTP
    status (None: no answer); ``detail`` InfluxDB's own message, shortened; ``cause`` a short name of a
    configuration failure (``unauthorized``, ``forbidden``, ``not_found``, ``refused``); ``retry_after_s``
    InfluxDB's Retry-After; ``dropped`` the points a partial write says it dropped (None: not said).
    """

    def __init__(self, message: str, *, kind: str = TRANSIENT, status: int | None = None, detail: str = "",
                 cause: str | None = None, retry_after_s: float | None = None, dropped: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.detail = detail
        self.cause = cause
        self.retry_after_s = retry_after_s
        self.dropped = dropped


def _retry_after(value: object) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None when absent or unreadable."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def refusal(settings: InfluxSettings, status: int, message: str, retry_after: object = None) -> StoreError:
    """The :class:`StoreError` for InfluxDB's answer ``status`` with error ``message`` to a write."""
    detail = shorten(message or "")
    said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    bucket = quote(settings.bucket)
    if _NOT_FOUND.match(detail) or status == 404:
        return StoreError(f"InfluxDB at {settings.url} has no bucket (database) {bucket} to write to ({said}): "
                          "create it, or set --influx-bucket / SRV6PM_INFLUX_BUCKET (and --influx-org / "
                          "SRV6PM_INFLUX_ORG on 2.x)", kind=CONFIG, status=status, detail=detail, cause="not_found")
    if status == 401:
        return StoreError(f"InfluxDB at {settings.url} does not accept the token ({said}): set a valid one in "
                          "SRV6PM_INFLUX_TOKEN or SRV6PM_INFLUX_TOKEN_FILE", kind=CONFIG, status=status,
                          detail=detail, cause="unauthorized")
    if status == 403:
        return StoreError(f"InfluxDB at {settings.url} forbids this token to write to bucket {bucket} ({said}): "
                          "give it write permission on the bucket, or set another in SRV6PM_INFLUX_TOKEN / "
                          "SRV6PM_INFLUX_TOKEN_FILE", kind=CONFIG, status=status, detail=detail, cause="forbidden")
    if status in _DATA_STATUSES:
        found = _DROPPED.search(" ".join((message or "").split()))
        return StoreError(f"InfluxDB refused the write: {said}", kind=DATA, status=status, detail=detail,
                          dropped=int(found.group(1)) if found else None)
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return StoreError(f"InfluxDB at {settings.url} failed the write: {said}", status=status, detail=detail,
                          retry_after_s=_retry_after(retry_after))
    return StoreError(f"InfluxDB at {settings.url} refuses the writes ({said}): check --influx-url / "
                      "SRV6PM_INFLUX_URL (is it InfluxDB's address?)", kind=CONFIG, status=status, detail=detail,
                      cause="refused")


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
            message = exc.message if isinstance(exc.message, str) else str(exc.body or exc.reason or "")
            raise refusal(self.settings, int(exc.status or 0), message, exc.retry_after) from None
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
