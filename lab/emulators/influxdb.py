"""Embedded InfluxDB for the local lab: Debian's influxd 1.6.7 plus a v2-write front.

:class:`EmbeddedInfluxDB` runs ``influxd`` as a child process with a generated
configuration in a private temporary directory (meta, data and WAL live there
and are deleted on :meth:`~EmbeddedInfluxDB.stop`). The engine listens on
loopback only, on free internal ports (HTTP API and the RPC/backup port),
with usage reporting, the ``_internal`` monitor database and request logging
off. Once it answers ``/ping``, the database (default ``srv6pm``) is created,
and the public address (default ``127.0.0.1:8086``) is served by
:class:`~srv6pm.lab.emulators.influx_front.InfluxFront`, which adds the InfluxDB v2
write API that influxdb-client needs and passes InfluxQL ``/query`` through.
See :mod:`srv6pm.lab.emulators.influx_front` for exactly what the public address offers.

1.x authentication is disabled: bind the public address to loopback.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import os
import shutil
import socket
import time
import weakref
from pathlib import Path
from urllib.parse import urlencode

from srv6pm.errors import OperationError
from srv6pm.ports import free_ports

from .influx_front import DEFAULT_MAX_BODY_BYTES, InfluxFront
from .launcher import ChildProcess, owned_tempdir

__all__ = ["EmbeddedInfluxDB", "InfluxDBStartError"]

log = logging.getLogger(__name__)

_DEBIAN_INFLUXD = "/usr/bin/influxd"
_ENGINE_HOST = "127.0.0.1"
_PORT_ATTEMPTS = 3


class InfluxDBStartError(OperationError, RuntimeError):
    """The embedded InfluxDB could not be started (influxd missing, port in use, crash, timeout)."""


class EmbeddedInfluxDB:
    """influxd 1.x in a temporary directory, published through the v2-write front.

    ``host:port`` is the public address clients use (:attr:`url`); ``port=0``
    picks a free port at :meth:`start` (stored in :attr:`port`). ``database``
    is created at start. ``influxd`` overrides the engine binary (default:
    ``influxd`` on PATH, then ``/usr/bin/influxd``). ``max_body_bytes`` limits
    write and query bodies at the front and in the engine.

    :meth:`start` returns once the engine answers, the database exists and the
    front listens; on failure it cleans up and raises :class:`InfluxDBStartError`
    with the engine's output tail. :meth:`stop` is idempotent and removes the
    temporary directory (all data); if it is never called, the engine is killed
    and the directory removed at interpreter exit. Context manager support.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8086,
        *,
        database: str = "srv6pm",
        influxd: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port!r}")
        if not database:
            raise ValueError("database name must not be empty")
        self.host = host
        self.port = port
        self.database = database
        self.influxd = influxd
        self.max_body_bytes = max_body_bytes
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.engine_port: int | None = None
        self._directory: Path | None = None
        self._directory_cleanup: weakref.finalize | None = None
        self._process: ChildProcess | None = None
        self._front: InfluxFront | None = None

    @property
    def url(self) -> str:
        """Public base URL (the front), e.g. ``http://127.0.0.1:8086``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def engine_url(self) -> str | None:
        """Internal 1.x engine URL (diagnostics only), or None when not started."""
        return f"http://{_ENGINE_HOST}:{self.engine_port}" if self.engine_port else None

    @property
    def running(self) -> bool:
        """True while the engine process is alive and the front is serving."""
        return self._process is not None and self._process.running and self._front is not None

    def freeze(self) -> None:
        """Suspend the engine (SIGSTOP): it keeps its data, the front stays up, requests hang until :meth:`thaw`."""
        if self._process is None:
            raise RuntimeError("influxdb not started")
        self._process.freeze()

    def thaw(self) -> None:
        """Resume the engine after :meth:`freeze` (SIGCONT)."""
        if self._process is None:
            raise RuntimeError("influxdb not started")
        self._process.thaw()

    def start(self) -> EmbeddedInfluxDB:
        """Start engine and front, create the database; returns ``self``."""
        if self._process is not None or self._front is not None:
            raise RuntimeError("InfluxDB already started")
        binary = self._find_influxd()
        started = time.monotonic()
        try:
            self._check_public_port()
            self._directory = owned_tempdir("srv6pm-influxdb-")  # swept if this process is killed (srv6pm.lab.leftovers)
            # Removes the data even if stop() is never called (runs after the engine is killed).
            self._directory_cleanup = weakref.finalize(self, shutil.rmtree, self._directory, True)
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                try:
                    self._start_engine(binary, started)
                    break
                except _PortTaken:
                    # The free ports we picked were taken before influxd bound them; pick again.
                    if attempt == _PORT_ATTEMPTS:
                        raise
                    log.debug("influxd lost its internal ports to another process, retrying",
                              extra={"attempt": attempt})
            self._create_database()
            self._start_front()
        except BaseException:
            self.stop()
            raise
        log.info(
            "influxdb ready",
            extra={
                "url": self.url,
                "engine_url": self.engine_url,
                "database": self.database,
                "startup_s": round(time.monotonic() - started, 3),
            },
        )
        return self

    def stop(self) -> None:
        """Stop front and engine (SIGTERM, SIGKILL after ``stop_timeout``), delete all data. Idempotent."""
        front, self._front = self._front, None
        if front is not None:
            front.stop()
        process, self._process = self._process, None
        if process is not None:
            process.stop(self.stop_timeout)
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        if self._directory_cleanup is not None:
            self._directory_cleanup.detach()
            self._directory_cleanup = None
        if front is not None or process is not None:
            log.info("influxdb stopped", extra={"url": self.url})
        self.engine_port = None

    def __enter__(self) -> EmbeddedInfluxDB:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedInfluxDB(url={self.url!r}, database={self.database!r}, running={self.running})"

    # -- steps ----------------------------------------------------------------------

    def _find_influxd(self) -> str:
        if self.influxd:
            if not (os.path.isfile(self.influxd) and os.access(self.influxd, os.X_OK)):
                raise InfluxDBStartError(f"influxd binary {self.influxd!r} is not an executable file")
            return os.path.abspath(self.influxd)  # influxd runs with the temporary directory as cwd
        found = shutil.which("influxd") or (_DEBIAN_INFLUXD if os.access(_DEBIAN_INFLUXD, os.X_OK) else None)
        if found is None:
            raise InfluxDBStartError(
                "influxd not found (InfluxDB 1.x engine for the embedded lab database); "
                "install it with: apt-get install influxdb"
            )
        return found

    def _check_public_port(self) -> None:
        """Fail fast, before influxd starts, if the public address cannot be bound."""
        if self.port == 0:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the front does
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                raise self._public_port_error(exc) from exc

    def _start_front(self) -> None:
        assert self.engine_url is not None
        front = InfluxFront(self.engine_url, self.host, self.port, max_body_bytes=self.max_body_bytes)
        try:
            front.start()
        except OSError as exc:
            raise self._public_port_error(exc) from exc
        self._front = front
        self.port = front.port

    def _public_port_error(self, exc: OSError) -> InfluxDBStartError:
        hint = " (another InfluxDB running? pick another port or stop it)" if exc.errno == errno.EADDRINUSE else ""
        return InfluxDBStartError(f"cannot serve InfluxDB on {self.url}: {exc.strerror or exc}{hint}")

    def _start_engine(self, binary: str, started: float) -> None:
        assert self._directory is not None
        http_port, rpc_port = free_ports(_ENGINE_HOST, 2)
        config = self._directory / "influxdb.conf"
        config.write_text(self._config(http_port, rpc_port), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}  # they override the file
        process = ChildProcess("influxd", [binary, "run", "-config", str(config)], env=env, cwd=str(self._directory))
        try:
            process.start()
        except OSError as exc:
            raise InfluxDBStartError(f"cannot run influxd {binary!r}: {exc}") from exc
        self._process = process
        self.engine_port = http_port
        try:
            self._wait_for_ping(process, http_port, started + self.start_timeout)
        except InfluxDBStartError:
            tail = process.output_tail()
            process.stop(self.stop_timeout)
            self._process = None
            self.engine_port = None
            if "address already in use" in tail:
                raise _PortTaken(f"influxd could not bind its internal ports; its output ends with:\n{tail}") from None
            raise

    def _wait_for_ping(self, process: ChildProcess, port: int, deadline: float) -> None:
        while True:
            if not process.running:
                raise InfluxDBStartError(
                    f"influxd exited (status {process.returncode}) during startup; "
                    f"its output ends with:\n{process.output_tail()}"
                )
            try:
                status, _ = _request(port, "GET", "/ping", timeout=1.0)
                if status == 204:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() >= deadline:
                raise InfluxDBStartError(
                    f"influxd did not answer /ping on {_ENGINE_HOST}:{port} within {self.start_timeout:g} s; "
                    f"its output ends with:\n{process.output_tail()}"
                )
            time.sleep(0.05)

    def _create_database(self) -> None:
        assert self.engine_port is not None
        query = f"CREATE DATABASE {_quote_identifier(self.database)}"
        try:
            status, body = _request(
                self.engine_port,
                "POST",
                "/query",
                body=urlencode({"q": query}).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=10.0,
            )
        except (OSError, http.client.HTTPException) as exc:
            raise InfluxDBStartError(f"creating database {self.database!r} failed: {exc}") from exc
        errors = _query_errors(body)
        if status != 200 or errors:
            raise InfluxDBStartError(
                f"creating database {self.database!r} failed (HTTP {status}): {'; '.join(errors) or body[:500]!r}"
            )

    def _config(self, http_port: int, rpc_port: int) -> str:
        assert self._directory is not None
        q = _toml_string
        directory = self._directory
        return f"""\
# Generated by srv6pm.lab.emulators.influxdb for one lab run; deleted when the lab stops.
reporting-enabled = false
bind-address = {q(f"{_ENGINE_HOST}:{rpc_port}")}

[meta]
  dir = {q(str(directory / "meta"))}
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = {q(str(directory / "data"))}
  wal-dir = {q(str(directory / "wal"))}
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = {q(f"{_ENGINE_HOST}:{http_port}")}
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  write-tracing = false
  pprof-enabled = false
  https-enabled = false
  unix-socket-enabled = false
  max-body-size = {int(self.max_body_bytes)}

[ifql]
  enabled = false

[logging]
  format = "logfmt"
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = true
  log-enabled = false
"""


class _PortTaken(InfluxDBStartError):
    """influxd lost the race for the internal ports picked for it."""



def _request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(_ENGINE_HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(1024 * 1024)
    finally:
        connection.close()


def _query_errors(body: bytes) -> list[str]:
    """Error strings of a 1.x /query JSON answer (top level and per statement)."""
    try:
        decoded = json.loads(body or b"{}")
    except ValueError:
        return [body[:500].decode("utf-8", "replace")]
    errors = [decoded["error"]] if isinstance(decoded.get("error"), str) else []
    for result in decoded.get("results", ()):
        if isinstance(result, dict) and isinstance(result.get("error"), str):
            errors.append(result["error"])
    return errors


def _quote_identifier(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML escapes)."""
    return json.dumps(value)
