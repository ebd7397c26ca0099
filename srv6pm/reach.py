"""Do Kafka, InfluxDB and ArangoDB answer? Asked once, at the start of a command, before it starts work.

:func:`kafka`, :func:`influx` and :func:`arango` each return quietly when the
service answers and raise :class:`Unreachable` otherwise, with one line that
names the service, the address and what was tried::

    Kafka at nohost:9092 does not answer: nohost:9092: the name does not resolve (tried an ApiVersions request)
    InfluxDB at http://127.0.0.1:1 does not answer: GET http://127.0.0.1:1/ping: connection refused

Each check takes at most about ``timeout_s`` per address; nothing is retried
(a start against a dead service fails fast; riding out an outage while
running is the components' own business). The commands map
:class:`Unreachable` to exit status 1. :func:`describe` turns a connection
failure into the short words used here, for the components' own messages
while they run.
"""

from __future__ import annotations

import base64
import socket
import ssl
import struct
import urllib.error
import urllib.request

from srv6pm.errors import UnavailableError

__all__ = ["Unreachable", "arango", "describe", "influx", "kafka"]

TIMEOUT_S = 5.0
_CLIENT_ID = b"srv6pm-reach"


class Unreachable(UnavailableError):
    """A service does not answer; ``str()`` is one line naming it, its address and what was tried."""


def _cause(exc: BaseException) -> BaseException:
    """The socket-level error under a client library's wrappers (urllib's URLError, urllib3's MaxRetryError)."""
    for _ in range(6):
        if isinstance(exc, (socket.gaierror, TimeoutError, ConnectionError, ssl.SSLError)):
            return exc
        inner = getattr(exc, "reason", None)
        inner = inner if isinstance(inner, BaseException) else exc.__cause__ or exc.__context__
        if inner is None:
            return exc
        exc = inner
    return exc


def describe(exc: BaseException) -> str:
    """A connection failure in a few words: ``connection refused``, ``the name does not resolve``, ..."""
    from srv6pm.quote import shorten
    exc = _cause(exc)
    if isinstance(exc, socket.gaierror):
        return "the name does not resolve"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return shorten(str(exc), 120) or type(exc).__name__


def _api_versions_request() -> bytes:
    """A Kafka ApiVersions request, version 0 (answered by every broker since Kafka 0.10, before any SASL)."""
    body = struct.pack(">hhih", 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
    return struct.pack(">i", len(body)) + body


def _ask_kafka(host: str, port: int, settings, timeout_s: float) -> None:
    """One ApiVersions round trip with ``host:port``; raises OSError (or ValueError) on failure."""
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        conn = raw
        if settings.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=settings.cafile)
            if settings.certfile:
                context.load_cert_chain(settings.certfile, settings.keyfile)
            conn = context.wrap_socket(raw, server_hostname=host)
        conn.sendall(_api_versions_request())
        header = b""
        while len(header) < 8:
            chunk = conn.recv(8 - len(header))
            if not chunk:
                raise ValueError("the connection was closed without a Kafka answer")
            header += chunk
        size, correlation = struct.unpack(">ii", header)
        if correlation != 1 or not 0 < size < 1 << 20:
            raise ValueError("the answer is not Kafka's")


def kafka(settings, timeout_s: float = TIMEOUT_S) -> None:
    """Return once one bootstrap server of ``settings`` (KafkaSettings) answers an ApiVersions request."""
    from srv6pm.inputs import host_ports
    failures = []
    for host, port in host_ports(settings.bootstrap, "Kafka bootstrap", default_port=9092):
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            _ask_kafka(host, port, settings, timeout_s)
            return
        except (OSError, ValueError) as exc:
            failures.append(f"{where}: {describe(exc)}")
    raise Unreachable(f"Kafka at {settings.bootstrap} does not answer: {'; '.join(failures)} "
                      f"(tried an ApiVersions request, {settings.security_protocol})")


def _get(url: str, headers: dict, cafile: str | None, timeout_s: float) -> int:
    """The HTTP status of ``GET url``; raises URLError/OSError when there is no HTTP answer."""
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https://") else None
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def influx(settings, timeout_s: float = TIMEOUT_S) -> None:
    """Return once InfluxDB at ``settings.url`` (InfluxSettings) answers ``GET /ping`` with 2xx."""
    url = settings.url.rstrip("/") + "/ping"
    headers = {"Authorization": f"Token {settings.token}"} if settings.token else {}
    try:
        status = _get(url, headers, settings.cafile, timeout_s)
    except (OSError, ValueError) as exc:
        raise Unreachable(f"InfluxDB at {settings.url} does not answer: GET {url}: {describe(exc)}") from None
    if not 200 <= status < 300:
        raise Unreachable(f"InfluxDB at {settings.url} does not answer as InfluxDB does: GET {url} gave HTTP {status}")


def arango(settings, timeout_s: float = TIMEOUT_S) -> None:
    """Return once ArangoDB at ``settings.url`` (ArangoSettings) answers ``GET /_api/version`` for its user."""
    url = settings.url.rstrip("/") + "/_api/version"
    token = base64.b64encode(f"{settings.user}:{settings.password or ''}".encode()).decode()
    try:
        status = _get(url, {"Authorization": f"Basic {token}"}, settings.cafile, timeout_s)
    except (OSError, ValueError) as exc:
        raise Unreachable(f"ArangoDB at {settings.url} does not answer: GET {url}: {describe(exc)}") from None
    if status in (401, 403):
        raise Unreachable(f"ArangoDB at {settings.url} refuses user {settings.user!r}: GET {url} gave HTTP {status}")
    if not 200 <= status < 300:
        raise Unreachable(f"ArangoDB at {settings.url} does not answer as ArangoDB does: GET {url} gave HTTP {status}")
