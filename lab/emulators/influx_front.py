"""A minimal InfluxDB v2 *write* compatibility front for an InfluxDB 1.x engine.

Debian's InfluxDB (1.6.7) has no ``/api/v2/write``, which the official
influxdb-client libraries use for writing; InfluxDB 1.8 added it as a thin
compatibility layer. :class:`InfluxFront` is that layer, in front of a 1.x
engine, for the local lab only.

What it does (and nothing more):

``POST /api/v2/write?org=..&bucket=..&precision=ns|us|ms|s``
    Forwarded as ``POST /write?db=..&rp=..&precision=n|u|ms|s`` to the engine.
    The bucket maps to database and retention policy exactly like InfluxDB 1.8:
    ``"db/rp"`` → database ``db``, retention policy ``rp``; ``"db"`` (no slash)
    or ``"db/"`` → database ``db``, its default retention policy; an empty
    bucket or empty database part → 404. ``org`` is accepted and ignored. No
    precision means nanoseconds; any other precision value → 400. The body
    (line protocol) is streamed through unchanged, including
    ``Content-Encoding: gzip`` (the engine decompresses it); other content
    encodings than ``gzip``/``identity`` → 415. The engine's status code is
    returned unchanged (204 on success); its 1.x error body ``{"error": msg}``
    becomes the v2 error body ``{"code": <v2 code for the status>, "message":
    msg}``. Write semantics stay 1.x's: a batch with some bad lines stores the
    good ones and answers 400 "partial write: ..."; an unknown database
    answers 404, an unknown retention policy 500.
``GET|HEAD /ping``
    Passed through unchanged (status 204 and ``X-Influxdb-Version``).
``GET /health``
    A v2-style health object derived from the engine's ``/ping``: 200 and
    ``{"name": "influxdb", "status": "pass", "version": ..., ...}``, or 503
    with ``"status": "fail"`` when the engine does not answer.
``GET|POST /query``
    The 1.x InfluxQL API, passed through unchanged (query string, body,
    headers, streamed and chunked responses), because the dashboards query
    with InfluxQL.

What it is not:

- No Flux and no other v2 API (``/api/v2/query``, buckets, orgs, tokens,
  delete, ...), and no v1 ``/write``: every other path answers 501 with a JSON
  message saying that this front only translates writes.
- No authentication: the ``Authorization`` header is neither checked nor
  translated (v2 ``Token`` credentials are dropped on writes; the header is
  passed through unchanged on ``/query`` and ``/ping``). The embedded engine
  runs with 1.x authentication disabled, so anyone who can reach the front can
  read and write. Bind it to loopback.
- No buffering of bodies: request bodies are streamed to the engine and refused
  with 413 when larger than ``max_body_bytes`` (counted on the wire, i.e. after
  gzip compression; the engine applies its own ``max-body-size`` to the
  decompressed body). A body found too large while streaming is aborted before
  the engine commits anything (1.x parses a write only once the whole body has
  arrived). Responses are streamed too.
- No TLS, no retries, no write batching: one upstream connection per request.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from srv6pm.errors import InputError

__all__ = ["InfluxFront", "bucket_to_database", "DEFAULT_MAX_BODY_BYTES"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
_COPY_CHUNK = 64 * 1024
_MAX_ERROR_BODY = 64 * 1024
_LINGER_SECONDS = 2.0

# v2 precision -> 1.x precision, as InfluxDB 1.8's serveWriteV2 maps it.
_PRECISIONS = {"ns": "n", "us": "u", "ms": "ms", "s": "s", "": ""}

# v2 error codes (influxdb/v2 errors.go) by HTTP status.
_V2_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request too large",
    415: "unsupported media type",
    422: "unprocessable entity",
    429: "too many requests",
    501: "not implemented",
    503: "unavailable",
}

_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection",
    )
)
# Request headers never forwarded upstream (recomputed or meaningless there).
_REQUEST_DROP = _HOP_BY_HOP | {"host", "content-length", "expect"}
# Response headers never copied back (the front writes its own).
_RESPONSE_DROP = _HOP_BY_HOP | {"content-length", "date", "server"}
# Response headers kept from the engine on translated writes.
_WRITE_RESPONSE_KEEP = ("x-influxdb-version", "x-influxdb-build", "request-id", "x-request-id")


def bucket_to_database(bucket: str) -> tuple[str, str]:
    """Map a v2 bucket name to a 1.x ``(database, retention_policy)`` like InfluxDB 1.8.

    ``"db/rp"`` → ``("db", "rp")``; ``"db"`` → ``("db", "")`` (empty retention policy
    = the database's default). Only the first ``/`` splits. Raises :class:`ValueError`
    for an empty bucket or an empty database part (1.8 answers those with 404).
    """
    database, slash, retention_policy = bucket.partition("/")
    if not slash:
        if not database:
            raise ValueError(f'bucket name "{bucket}" is missing a slash; not in "database/retention-policy" format')
        return database, ""
    if not database:
        raise ValueError(f'bucket name "{bucket}" is in db/rp form but has an empty database')
    return database, retention_policy


class _BodyTooLarge(InputError):
    pass


class _BadRequestBody(InputError):
    pass


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], front: InfluxFront) -> None:
        self.front = front
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (socket.getfqdn): a DNS lookup
        # that can stall startup for seconds on machines without working DNS.
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        self.server_name = str(host)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down client connections still open (idle keep-alive or in flight)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class InfluxFront:
    """The v2-write compatibility front; see the module docstring for the contract.

    ``upstream`` is the engine's base URL (``http://host:port``, plain HTTP).
    The front listens on ``host:port`` (``port=0``: a free port, see
    :attr:`port` after :meth:`start`). ``max_body_bytes`` bounds request bodies
    (413 above it); ``upstream_timeout`` (seconds) bounds each socket operation
    towards the engine; ``idle_timeout`` closes idle client connections.
    :meth:`start` returns once the socket is listening; :meth:`stop` is
    idempotent. Context manager support.
    """

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        port: int = 8086,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        upstream_timeout: float = 60.0,
        idle_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be an http://host:port URL, got {upstream!r}")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes!r}")
        self.upstream = upstream.rstrip("/")
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.upstream_timeout = upstream_timeout
        self.idle_timeout = idle_timeout
        self._server: _FrontServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL clients use, e.g. ``http://127.0.0.1:8086``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> InfluxFront:
        """Bind and start serving in a background thread; returns ``self``.

        Raises :class:`OSError` if the address cannot be bound (e.g. port in use).
        """
        if self._server is not None:
            raise RuntimeError("front already started")
        server = _FrontServer((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="influx-front", daemon=True
        )
        self._thread.start()
        log.debug("influx front listening", extra={"url": self.url, "upstream": self.upstream})
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and open client connections. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        log.debug("influx front stopped", extra={"url": self.url})

    def __enter__(self) -> InfluxFront:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._upstream_host, self._upstream_port, timeout=self.upstream_timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FrontServer
    server_version = "srv6pm-influx-front"
    _body_read = False

    # -- plumbing -------------------------------------------------------------------

    def setup(self) -> None:
        self.timeout = self.server.front.idle_timeout  # type: ignore[misc]  # per connection: setup() reads it
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        log.debug("influx front: " + format, *args, extra={"client": self.client_address[0]})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = int(code) if isinstance(code, int) else code
        log.debug("influx front request", extra={"method": self.command, "path": self.path, "status": status})

    @property
    def _front(self) -> InfluxFront:
        return self.server.front

    # -- routing --------------------------------------------------------------------

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def do_PATCH(self) -> None:
        self._route()

    def do_OPTIONS(self) -> None:
        self._route()

    def handle_expect_100(self) -> bool:
        """Skip "100 Continue" for a body declared too large: the 413 then arrives before any body."""
        try:
            too_large = int(self.headers.get("Content-Length") or 0) > self._front.max_body_bytes
        except ValueError:
            too_large = False
        return True if too_large else super().handle_expect_100()

    def _route(self) -> None:
        self._body_read = False
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if self.close_connection and self._body_unread():
                self._linger()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        method = self.command
        if path == "/api/v2/write":
            if method != "POST":
                return self._method_not_allowed("POST")
            return self._write()
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return self._method_not_allowed("GET, HEAD")
            return self._pass_through()
        if path == "/query":
            if method not in ("GET", "POST"):
                return self._method_not_allowed("GET, POST")
            return self._pass_through()
        if path == "/health":
            if method not in ("GET", "HEAD"):
                return self._method_not_allowed("GET, HEAD")
            return self._health()
        self._json_error(
            HTTPStatus.NOT_IMPLEMENTED,
            f"{method} {path} is not supported: this InfluxDB front only translates v2 writes "
            "(POST /api/v2/write) to InfluxDB 1.x; query with InfluxQL via /query",
        )

    # -- endpoints ------------------------------------------------------------------

    def _write(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)

        def first(name: str) -> str:  # like Go's url.Values.Get
            return query.get(name, [""])[0]

        precision = first("precision")
        if precision not in _PRECISIONS:
            return self._json_error(HTTPStatus.BAD_REQUEST, f'invalid precision "{precision}" (use ns, us, ms or s)')
        try:
            database, retention_policy = bucket_to_database(first("bucket"))
        except ValueError as exc:
            return self._json_error(HTTPStatus.NOT_FOUND, str(exc))
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            return self._json_error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f'unsupported Content-Encoding "{encoding}" (use gzip or identity)'
            )

        params = {"db": database}
        if retention_policy:
            params["rp"] = retention_policy
        if _PRECISIONS[precision]:
            params["precision"] = _PRECISIONS[precision]
        headers = {"Content-Type": self.headers.get("Content-Type") or "text/plain; charset=utf-8"}
        if encoding == "gzip":
            headers["Content-Encoding"] = "gzip"

        response = self._forward("POST", "/write?" + urlencode(params), headers)
        if response is None:
            return
        connection, upstream = response
        try:
            if upstream.status < 400:
                upstream.read(_MAX_ERROR_BODY)
                self.send_response(upstream.status)
                self._copy_headers(upstream, only=_WRITE_RESPONSE_KEEP)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            raw = upstream.read(_MAX_ERROR_BODY)
            self._json_error(upstream.status, _error_message(raw, upstream.status), upstream=upstream)
        finally:
            connection.close()

    def _pass_through(self) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _REQUEST_DROP}
        response = self._forward(self.command, self.path, headers)
        if response is None:
            return
        connection, upstream = response
        try:
            self.send_response(upstream.status)
            self._copy_headers(upstream)
            if self.command == "HEAD" or upstream.status in (204, 304) or 100 <= upstream.status < 200:
                declared = upstream.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", declared or "0")
                self.end_headers()
                return
            if upstream.length is not None:
                self.send_header("Content-Length", str(upstream.length))
                self.end_headers()
                while chunk := upstream.read(_COPY_CHUNK):
                    self.wfile.write(chunk)
            else:  # chunked or close-delimited upstream body: re-chunk as it arrives
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while chunk := upstream.read1(_COPY_CHUNK):
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
        except (OSError, http.client.HTTPException) as exc:
            # Headers may already be out: the only honest signal left is closing the connection.
            log.warning("influx front: upstream response aborted", extra={"path": self.path, "error": repr(exc)})
            self.close_connection = True
        finally:
            connection.close()

    def _health(self) -> None:
        body: dict[str, object] = {"name": "influxdb", "checks": []}
        try:
            connection = self._front._connect()
            try:
                connection.request("GET", "/ping")
                ping = connection.getresponse()
                ping.read()
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            status = HTTPStatus.SERVICE_UNAVAILABLE
            body.update(status="fail", message=f"InfluxDB engine not reachable: {exc}")
        else:
            if ping.status == HTTPStatus.NO_CONTENT:
                status = HTTPStatus.OK
                body.update(status="pass", message="ready for queries and writes")
            else:
                status = HTTPStatus.SERVICE_UNAVAILABLE
                body.update(status="fail", message=f"InfluxDB engine /ping answered {ping.status}")
            body["version"] = ping.getheader("X-Influxdb-Version", "")
            body["commit"] = ping.getheader("X-Influxdb-Build", "")
        self._send_json(status, body)

    # -- helpers --------------------------------------------------------------------

    def _forward(
        self, method: str, target: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None:
        """Send this request (streaming its body) upstream; None if an error was already answered."""
        try:
            length = self._request_length()
        except _BadRequestBody as exc:
            self._json_error(HTTPStatus.BAD_REQUEST, str(exc), close=True)
            return None
        except _BodyTooLarge as exc:
            self._json_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc), close=True)
            return None

        connection = self._front._connect()
        try:
            connection.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            if length is None:
                connection.putheader("Transfer-Encoding", "chunked")
            elif length or "Content-Length" in self.headers:
                connection.putheader("Content-Length", str(length))
            connection.endheaders()
            for chunk in self._body_chunks(length):
                connection.send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if length is None else chunk)
            if length is None:
                connection.send(b"0\r\n\r\n")
            self._body_read = True
            return connection, connection.getresponse()
        except _BodyTooLarge as exc:
            connection.close()  # incomplete body upstream: the engine writes nothing
            self._json_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc), close=True)
        except _BadRequestBody as exc:
            connection.close()
            self._json_error(HTTPStatus.BAD_REQUEST, str(exc), close=True)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            log.warning(
                "influx front: engine unreachable", extra={"upstream": self._front.upstream, "error": repr(exc)}
            )
            self._json_error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"InfluxDB engine at {self._front.upstream} unavailable: {exc}",
                close=True,
            )
        return None

    def _is_chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _body_unread(self) -> bool:
        """True if the request carries a body this handler has not consumed."""
        if self._body_read:
            return False
        return self._is_chunked() or (self.headers.get("Content-Length") or "0").strip() not in ("", "0")

    def _request_length(self) -> int | None:
        """Declared body length: an int, or None for a chunked body. Enforces the size limit."""
        if self._is_chunked():
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        try:
            length = int(raw)
        except ValueError:
            raise _BadRequestBody(f"invalid Content-Length {raw!r}") from None
        if length < 0:
            raise _BadRequestBody(f"invalid Content-Length {raw!r}")
        if length > self._front.max_body_bytes:
            raise _BodyTooLarge(self._too_large_message())
        return length

    def _body_chunks(self, length: int | None) -> Iterator[bytes]:
        """The request body in pieces: exactly ``length`` bytes, or a decoded chunked body."""
        limit = self._front.max_body_bytes
        if length is not None:
            remaining = length
            while remaining:
                chunk = self.rfile.read(min(remaining, _COPY_CHUNK))
                if not chunk:
                    raise _BadRequestBody("request body shorter than Content-Length")
                remaining -= len(chunk)
                yield chunk
            return
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequestBody("malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # discard trailers
                return
            total += size
            if total > limit:
                raise _BodyTooLarge(self._too_large_message())
            remaining = size
            while remaining:
                chunk = self.rfile.read(min(remaining, _COPY_CHUNK))
                if not chunk:
                    raise _BadRequestBody("truncated chunked request body")
                remaining -= len(chunk)
                yield chunk
            self.rfile.readline(1024)  # CRLF after the chunk data

    def _linger(self) -> None:
        """Answer sent, body left unread: drain what the client still sends (at most
        ``_LINGER_SECONDS``) before closing, so that closing with unread data does not
        reset the connection before the client has read the answer."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.2)
            deadline = time.monotonic() + _LINGER_SECONDS
            while time.monotonic() < deadline:
                try:
                    if not self.connection.recv(_COPY_CHUNK):
                        return
                except TimeoutError:
                    continue
        except OSError:
            pass

    def _too_large_message(self) -> str:
        return f"request body exceeds the limit of {self._front.max_body_bytes} bytes"

    def _copy_headers(self, upstream: http.client.HTTPResponse, only: tuple[str, ...] | None = None) -> None:
        for name, value in upstream.getheaders():
            lower = name.lower()
            if lower in _RESPONSE_DROP or (only is not None and lower not in only):
                continue
            self.send_header(name, value)

    def _method_not_allowed(self, allowed: str) -> None:
        self._json_error(
            HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} not allowed", extra_headers={"Allow": allowed}
        )

    def _json_error(
        self,
        status: int,
        message: str,
        *,
        upstream: http.client.HTTPResponse | None = None,
        close: bool = False,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with a v2 error body ``{"code": ..., "message": ...}``."""
        code = _V2_CODES.get(int(status), "internal error" if int(status) >= 500 else "invalid")
        headers = dict(extra_headers or {})
        if upstream is not None:
            for name, value in upstream.getheaders():
                if name.lower() in _WRITE_RESPONSE_KEEP or name.lower() == "x-influxdb-error":
                    headers[name] = value
        if close:
            headers["Connection"] = "close"
        self._send_json(status, {"code": code, "message": message}, headers)

    def _send_json(self, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        headers = dict(headers or {})
        if self._body_unread():  # it would be parsed as the next request: close instead
            headers["Connection"] = "close"
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def _error_message(raw: bytes, status: int) -> str:
    """The message of a 1.x error body (``{"error": msg}``), else the body text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return decoded["error"]
    if text:
        return text
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP status {status}"
