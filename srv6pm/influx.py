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

What every writer does with them is here once, for the processor's writer and the liveness store:
:class:`Split` writes a batch of lines, splitting a group InfluxDB refuses as data in halves until each
refused line is alone (or the whole group is refused, as ``dropped`` can say), and keeps which lines were
refused and why, for their dead letters; any other failure it raises, and its caller retries (the split
goes on where it stopped). :class:`Refusals` is what a component says and counts meanwhile: a
configuration failure as an error naming the setting, at once, when its cause changes and then every
:data:`CONFIG_LOG_INTERVAL_S` while it lasts, with the gauge ``srv6pm_store_misconfigured{component, cause}``
1 meanwhile, and ``InfluxDB accepts the writes again`` when it ends; the refused points in
``srv6pm_store_refused_points_total{component, status}``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from srv6pm.errors import OperationError
from srv6pm.config import InfluxSettings
from srv6pm.quote import quote, shorten

if TYPE_CHECKING:
    from srv6pm.metrics import Metrics
    from srv6pm.waiting import Waiting

__all__ = ["CONFIG", "CONFIG_LOG_INTERVAL_S", "DATA", "TRANSIENT", "InfluxWriter", "Refusals", "Split", "StoreError",
           "influxql", "refusal"]


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
CONFIG_LOG_INTERVAL_S = 60.0  # a configuration failure that lasts is said again this often


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


class Refusals:
    """What one component says and counts of InfluxDB's answers to its writes (see the module docstring).

    ``what`` is the name of its wait for InfluxDB in ``waiting`` (whose ``component`` labels the gauges);
    ``log`` says the configuration failures.
    """

    def __init__(self, waiting: Waiting, what: str, log: logging.Logger, metrics: Metrics):
        self._waiting = waiting
        self._what = what
        self._log = log
        self._metrics = metrics
        self._misconfigured: tuple[str, float, float] | None = None  # (cause, monotonic since, last said)

    def stored(self) -> None:
        """A write worked: a wait for InfluxDB, and a configuration failure, are over."""
        self._waiting.ok(self._what)
        if self._misconfigured is not None:
            cause, since, _ = self._misconfigured
            self._misconfigured = None
            self._metrics.store_misconfigured.labels(self._waiting.component, cause).set(0)
            self._log.warning("InfluxDB accepts the writes again",
                              extra={"cause": cause, "refused_s": round(time.monotonic() - since, 3)})

    def answered(self) -> None:
        """InfluxDB answered a write (refusing its points as data): it is not away."""
        self._waiting.ok(self._what)

    def refused(self, error: StoreError, points: int) -> None:
        """``points`` were refused alone (as data, ``error``): counted by status."""
        self._metrics.store_refused.labels(self._waiting.component, str(error.status)).inc(points)

    def failed(self, error: StoreError) -> None:
        """A write failed and is retried. A configuration failure (or a data refusal that cannot be split out)
        is said as an error at once, when its cause changes, and then every CONFIG_LOG_INTERVAL_S; the
        gauge of its cause is 1 while it lasts."""
        if error.kind not in (CONFIG, DATA):
            return
        now = time.monotonic()
        cause = error.cause or "refused"
        component = self._waiting.component
        previous = self._misconfigured
        if previous is not None and previous[0] == cause and now - previous[2] < CONFIG_LOG_INTERVAL_S:
            return
        if previous is not None and previous[0] != cause:
            self._metrics.store_misconfigured.labels(component, previous[0]).set(0)
        since = previous[1] if previous is not None and previous[0] == cause else now
        self._misconfigured = (cause, since, now)
        self._metrics.store_misconfigured.labels(component, cause).set(1)
        self._log.error("InfluxDB refuses the writes; results are held until its settings are fixed",
                        extra={"cause": cause, "status": error.status, "error": str(error),
                               "refused_s": round(now - since, 3)})


class Split:
    """One batch of ``lines`` on its way into InfluxDB, stored whole or all but the lines refused alone.

    ``todo`` holds the groups of line indexes not yet written, the first one tried next; ``refused`` the
    lines InfluxDB refused as data (index -> the reason for their dead letters). With ``split`` False a
    data refusal is raised like any other failure (for a batch whose refused lines could not be
    dead-lettered: it is retried instead, nothing dropped).
    """

    def __init__(self, lines: list[str], *, split: bool = True):
        self.lines = lines
        self.split = split
        self.refused: dict[int, str] = {}
        self.todo = deque([list(range(len(lines)))])

    def write(self, write: Callable[[list[str]], object], refusals: Refusals,
              select: Callable[[list[int]], list[int]] | None = None) -> dict[int, str]:
        """Write the groups still to do with ``write`` (given their lines); returns :attr:`refused` once all
        are done. ``select`` picks the indexes of a group still to write (default: all of them). A failure
        other than a data refusal it can split out is told to ``refusals`` and raised: the group stays
        first, and a call again goes on from it."""
        lines, todo = self.lines, self.todo
        while todo:
            group = select(todo[0]) if select is not None else todo[0]
            try:
                if group:
                    write([lines[i] for i in group])
            except StoreError as error:
                if error.kind != DATA or not self.split:
                    refusals.failed(error)
                    raise
                refusals.answered()
                todo.popleft()
                if len(group) == 1 or error.dropped == sum(1 for i in group if lines[i]):
                    reason = f"InfluxDB refused its point: HTTP {error.status}: {error.detail}"
                    self.refused.update(dict.fromkeys(group, reason))
                    refusals.refused(error, len(group))
                else:
                    half = len(group) // 2
                    todo.extendleft((group[half:], group[:half]))
                continue
            todo.popleft()
            if group:
                refusals.stored()
        return self.refused


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
