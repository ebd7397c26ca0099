"""The collector process: configuration, reconciliation, events, graph, reload.

:class:`Collector` loads the configuration file (an invalid file at start is
a :class:`~srv6pm.collector.config.ConfigError`: the command exits 2), then
runs until :meth:`Collector.stop`:

* the reconciliation :class:`~srv6pm.collector.reconcile.Engine` in its own thread;
* the events publisher (:class:`~srv6pm.collector.events.Events`) to Kafka;
* the graph: :meth:`GraphStore.sync_topology` at every accepted load,
  :meth:`GraphStore.set_node_status` at every liveness change, and a
  :class:`~srv6pm.collector.results.ResultsConsumer` thread feeding it the
  latest loss and delay results; with ``graph_dump``, the graph's snapshot is
  written there as JSON (atomic replace) whenever it changed (checked every
  ``watch_interval``);
* reloading: on :meth:`request_reload` (SIGHUP) and, every ``watch_interval``
  seconds, when the file's content changed. A valid new configuration becomes
  the desired state at once (event ``config_loaded``, generation + 1) without
  restarting anything; an invalid one is event ``config_rejected`` with the
  error, and the previous configuration stays in force. A file whose content
  did not change is not reloaded, except by SIGHUP after its FlowMonIDs could
  not be saved (so that it is tried again once the disk is fixed);
* FlowMonIDs (ebpf data plane): every loaded configuration gets its flows'
  ids from :class:`~srv6pm.collector.flowmon.Allocator`, persisted in
  ``state_dir`` (:data:`~srv6pm.collector.flowmon.STATE_FILE`) before anything
  is sent with them. An unusable state file at start is a ConfigError; at a
  reload, a failure to allocate or save the ids rejects the configuration.
  Without ``state_dir`` the ids are kept in memory only (tests).

The southbound TLS is fixed at start: the given ``tls`` / ``plaintext``, else
the configuration's ``tls`` section; without any of them the collector
refuses to start (ConfigError). A later change of the file's ``tls`` section
needs a restart (logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srv6pm import atomicfile
from srv6pm.collector import config as config_mod
from srv6pm.collector import flowmon
from srv6pm.collector.config import Config, ConfigError
from srv6pm.collector.events import Events
from srv6pm.collector.graph import GraphStore, MemoryGraph
from srv6pm.collector.reconcile import Backoff, Engine
from srv6pm.config import KafkaSettings
from srv6pm.southbound.tls import ClientTls, TlsError

if TYPE_CHECKING:  # imported when the results loop starts (see _results_loop)
    from srv6pm.collector.results import ResultsConsumer

__all__ = ["Collector"]

log = logging.getLogger("srv6pm.collector")

_BACKOFF = Backoff()  # the default retry delays (Backoff is frozen: one shared instance is safe)


class Collector:
    """The collector for the configuration at ``config_path``; see the module docstring.

    ``kafka``: KafkaSettings (or a bootstrap string) for events and results;
    None: events are only logged and no results are consumed. ``tls``: client
    TLS for the southbound API; ``plaintext=True`` to go without. ``graph``:
    the GraphStore (default a new MemoryGraph). ``results``: run the results
    consumer (needs ``kafka``), with ``results_options`` (a ResultsOptions).
    ``state_dir``: where the FlowMonID allocation is kept (None: in memory).
    """

    def __init__(self, config_path: str | Path, kafka: KafkaSettings | str | None = None, *,
                 tls: ClientTls | None = None, plaintext: bool = False, interval: float = 2.0,
                 graph: GraphStore | None = None, graph_dump: str | Path | None = None,
                 backoff: Backoff = _BACKOFF, timeout: float = 5.0, watch_interval: float = 1.0,
                 results: bool = True, results_options: Any = None, state_dir: str | Path | None = None):
        if tls is not None and plaintext:
            raise ConfigError("southbound: choose TLS or plaintext, not both")
        self.path = Path(config_path)
        self.kafka = KafkaSettings(bootstrap=kafka) if isinstance(kafka, str) else kafka
        self.flowmon = flowmon.Allocator(flowmon.state_path(state_dir) if state_dir is not None else None)
        text, digest = self._read()
        config = config_mod.parse(text, source=str(self.path))
        self.tls = self._southbound_tls(tls, plaintext, config)  # before any id is written: a bad start writes nothing
        self.config = flowmon.assign(config, self.flowmon)
        self._digest = digest
        self._unsaved: str | None = None  # digest of a valid file whose FlowMonIDs could not be saved
        self.generation = 1
        self.graph = graph if graph is not None else MemoryGraph()
        self.graph_dump = Path(graph_dump) if graph_dump else None
        self.watch_interval = watch_interval
        self.results_options = results_options
        self.events = Events(self.kafka)
        self.engine = Engine(self.events, tls=self.tls, interval=interval, backoff=backoff, timeout=timeout,
                             on_status=self._node_status)
        self._run_results = results and self.kafka is not None
        self._results: ResultsConsumer | None = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._threads: list[threading.Thread] = []
        self._dumped: str | None = None

    # ------------------------------------------------------------ set-up

    @staticmethod
    def _southbound_tls(tls: ClientTls | None, plaintext: bool, config: Config) -> ClientTls | None:
        origin = "--grpc-ca/--grpc-cert/--grpc-key"
        if tls is None and not plaintext and config.tls is not None:
            if config.tls.plaintext:
                plaintext = True
            elif config.tls.ca or config.tls.cert:
                tls = ClientTls(config.tls.ca, config.tls.cert, config.tls.key)
                origin = "the configuration's tls section"
        if tls is None and not plaintext:
            raise ConfigError("southbound: no TLS settings: give --grpc-ca (and --grpc-cert/--grpc-key for mutual "
                              "TLS) or a tls: section in the configuration, or choose --grpc-plaintext "
                              "(tls: {plaintext: true}) explicitly")
        if tls is not None:
            try:
                tls.credentials()  # unreadable or non-PEM files: a TlsError now, not at the first call
            except TlsError as exc:
                raise TlsError(f"southbound TLS ({origin}): {exc}") from None
        return tls

    def _read(self) -> tuple[str, str]:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path}: not UTF-8 text") from None
        return text, hashlib.sha256(raw).hexdigest()

    # ------------------------------------------------------------ running

    def run(self) -> None:
        """Run until :meth:`stop`; cleans up on the way out."""
        try:
            self.graph.ensure()
            self.events.start()
            self._loaded(self.config)
            self._spawn("srv6pm-collector-engine", self.engine.run, self._stop)
            if self._run_results:
                self._spawn("srv6pm-collector-results", self._results_loop)
            while not self._stop.is_set():
                self._reload.wait(self.watch_interval)
                if self._stop.is_set():
                    break
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload(forced=True)
                else:
                    self.reload(forced=False)
                self._dump()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (safe from a signal handler)."""
        self._stop.set()
        self._reload.set()
        self.engine.wake()

    def request_reload(self) -> None:
        """Reload the configuration file soon (safe from a signal handler: SIGHUP)."""
        self._reload.set()

    def reload(self, forced: bool = True) -> bool:
        """Re-read the file; apply it if its content changed. Returns True if a new configuration was loaded.

        ``forced`` (SIGHUP) only changes the log: an unchanged file is never reloaded.
        """
        try:
            text, digest = self._read()
        except ConfigError as exc:
            if forced or self._digest != "unreadable":
                self._digest = "unreadable"
                self.events.emit("config_rejected", detail=str(exc))
            return False
        if digest == self._digest and not (forced and digest == self._unsaved):
            if forced:
                log.info("configuration unchanged", extra={"file": str(self.path)})
            return False
        self._digest = digest
        self._unsaved = None
        try:
            config = config_mod.parse(text, source=str(self.path))
        except ConfigError as exc:
            self.events.emit("config_rejected", detail=str(exc))
            return False
        try:
            config = flowmon.assign(config, self.flowmon)
        except flowmon.FlowMonError as exc:
            self._unsaved = digest
            self.events.emit("config_rejected", detail=str(exc))
            return False
        if config.tls != self.config.tls:
            log.warning("the tls section changed: it takes effect at the next restart", extra={"file": str(self.path)})
        self.generation += 1
        self.config = config
        self._loaded(config)
        return True

    def _loaded(self, config: Config) -> None:
        self.events.generation = self.generation
        self.events.emit("config_loaded", detail=f"{config.source}: {len(config.nodes)} nodes, "
                         f"{len(config.flows)} flows, {len(config.stamp)} STAMP sessions")
        self.engine.load(config, self.generation)
        try:
            self.graph.sync_topology(config)
        except Exception as exc:
            log.error("graph update failed", extra={"error": str(exc)})
        self._dump()

    def _node_status(self, name: str, alive: bool, boot_id: str | None, at_ns: int) -> None:
        try:
            self.graph.set_node_status(name, alive, boot_id, at_ns)
        except Exception as exc:
            log.error("graph update failed", extra={"node": name, "error": str(exc)})

    def _results_loop(self) -> None:
        """Run the results consumer; (re)create it with backoff while Kafka is away."""
        from srv6pm.collector.results import ResultsConsumer
        assert self.kafka is not None, "started only with Kafka settings (see _run_results)"
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._results = ResultsConsumer(self.kafka, self.graph, options=self.results_options)
                if self._stop.is_set():
                    self._results.close()
                    return
                self._results.run()
                return
            except Exception as exc:
                log.warning("results consumer failed", extra={"error": repr(exc), "retry_s": delay})
                self._results = None
                self._stop.wait(delay)
                delay = min(30.0, delay * 2)

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _dump(self) -> None:
        if self.graph_dump is None:
            return
        try:
            text = json.dumps(self.graph.snapshot(), indent=1, sort_keys=True, default=str)
        except Exception as exc:
            log.error("graph snapshot failed", extra={"error": str(exc)})
            return
        if text == self._dumped:
            return
        try:
            atomicfile.replace(self.graph_dump, text, fsync=False)
        except OSError as exc:
            log.error("cannot write the graph dump", extra={"file": str(self.graph_dump), "error": str(exc)})
            return
        self._dumped = text

    def _shutdown(self) -> None:
        self._stop.set()
        if self._results is not None:
            self._results.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.engine.close()
        self._dump()
        self.events.close()
        try:
            self.graph.close()
        except Exception:
            pass
        log.info("collector stopped", extra={"generation": self.generation})
