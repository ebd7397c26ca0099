"""Embedded InfluxDB for the local lab: Debian's influxd 1.6.7 plus a v2-write front.

:class:`InfluxDBProcess` runs the same in a process of its own (the command
line ``python -m srv6pm.lab.emulators.influxdb [--host H] [--port P]
[--database D]``, which prints ``{"event": "ready", "url": ...}`` and serves
until SIGTERM), so that the front's thread shares no interpreter lock with
the caller: benchmarks that measure the caller use it.

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

import argparse
import errno
import http.client
import json
import os
import shutil
import signal
import socket
import sys
from urllib.parse import urlencode

from srv6pm.ports import free_ports

from .influx_front import DEFAULT_MAX_BODY_BYTES, InfluxFront
from .launcher import ChildProcess, Launcher, LaunchError, ModuleLauncher

__all__ = ["EmbeddedInfluxDB", "InfluxDBProcess", "InfluxDBStartError", "main"]

_DEBIAN_INFLUXD = "/usr/bin/influxd"
_ENGINE_HOST = "127.0.0.1"
_PORT_ATTEMPTS = 3


class InfluxDBStartError(LaunchError):
    """The embedded InfluxDB could not be started (influxd missing, port in use, crash, timeout)."""


class EmbeddedInfluxDB(Launcher):
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
    :meth:`freeze` suspends the engine only: the front stays up and requests
    hang until :meth:`thaw`. The life cycle is the launcher's
    (:class:`~srv6pm.lab.emulators.launcher.Launcher`).
    """

    name = "influxd"
    what = "influxd"
    StartError = InfluxDBStartError
    workdir_prefix = "srv6pm-influxdb-"  # swept if this process is killed (srv6pm.lab.leftovers)
    attempts = _PORT_ATTEMPTS  # the free internal ports picked may be taken before influxd binds them

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
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host = host
        self.port = port
        self.database = database
        self.influxd = influxd
        self.max_body_bytes = max_body_bytes
        self.engine_port: int | None = None
        self._binary: str | None = None
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
        return super().running and self._front is not None

    # -- the launcher's steps -------------------------------------------------------

    def prepare(self) -> None:
        self._binary = self._find_influxd()
        self._check_public_port()  # fail fast, before influxd starts

    def command(self) -> list[str]:
        assert self.workdir is not None and self._binary is not None  # made and found before the first attempt
        http_port, rpc_port = free_ports(_ENGINE_HOST, 2)
        self.engine_port = http_port
        config = self.workdir / "influxdb.conf"
        config.write_text(self._config(http_port, rpc_port), encoding="utf-8")
        return [self._binary, "run", "-config", str(config)]

    def environment(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}  # they override the file

    def readiness(self) -> str:
        return f"answer /ping on {_ENGINE_HOST}:{self.engine_port}"

    def ready(self, child: ChildProcess, remaining: float) -> bool:
        assert self.engine_port is not None  # command() picked it
        try:
            status, _ = _request(self.engine_port, "GET", "/ping", timeout=min(1.0, remaining))
        except (OSError, http.client.HTTPException):
            return False
        return status == 204

    def retry(self, output: str) -> bool:
        return "address already in use" in output  # influxd lost its internal ports to another process

    def started(self) -> None:
        self._create_database()
        self._start_front()

    def stopping(self) -> None:
        front, self._front = self._front, None
        if front is not None:
            front.stop()

    def stop(self) -> int | None:
        """Stop front and engine (SIGTERM, SIGKILL after ``stop_timeout``), delete all data. Idempotent."""
        status = super().stop()
        self.engine_port = None
        return status

    def details(self) -> dict[str, object]:
        return {"url": self.url, "engine_url": self.engine_url, "database": self.database}

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
        assert self.workdir is not None
        q = _toml_string
        directory = self.workdir
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


class InfluxDBProcess(ModuleLauncher):
    """:class:`EmbeddedInfluxDB` (engine and front) in a process of its own; :attr:`url` once started.

    ``port=0`` picks a free port (in the child). Start and stop as any
    launcher (:class:`~srv6pm.lab.emulators.launcher.Launcher`);
    :class:`InfluxDBStartError` carries the child's output if it fails.
    """

    name = "influxdb"
    what = "embedded InfluxDB process"
    StartError = InfluxDBStartError
    module = "srv6pm.lab.emulators.influxdb"

    def __init__(self, host: str = "127.0.0.1", port: int = 8086, *, database: str = "srv6pm",
                 start_timeout: float = 45.0, stop_timeout: float = 15.0) -> None:
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host, self.port, self.database = host, port, database

    def arguments(self) -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--database", self.database]

    @property
    def url(self) -> str:
        """The public base URL the child serves (from its ready line)."""
        if self.ready_event is None:
            raise RuntimeError("embedded InfluxDB process not started")
        return self.ready_event["url"]


def main(argv: list[str] | None = None) -> int:
    """``python -m srv6pm.lab.emulators.influxdb``: serve until SIGTERM or SIGINT; 1 if it cannot start."""
    parser = argparse.ArgumentParser(prog="python -m srv6pm.lab.emulators.influxdb",
                                     description="The lab's embedded InfluxDB (influxd 1.x and its v2-write front).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8086, help="public port (0: a free one)")
    parser.add_argument("--database", default="srv6pm")
    args = parser.parse_args(argv)
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        with EmbeddedInfluxDB(args.host, args.port, database=args.database) as db:
            print(json.dumps({"event": "ready", "url": db.url, "database": db.database}), flush=True)
            signal.sigwait(signals)
    except (InfluxDBStartError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
