"""The local lab: a whole srv6pm pipeline on one machine, without Docker.

:class:`Lab` builds a scenario's network as namespaces (``network``: the
underlay only -- addresses, locator routes, end hosts), starts the embedded
broker and InfluxDB unless external ones are configured, and runs, each as a
separate process:

* one node exporter per node, started empty, serving the southbound gRPC API
  on 127.0.0.1 (plaintext: the lab is one machine), with the scenario's data
  plane (``--dataplane``); its STAMP reflector is the
  default ebpf one, except on a node at either end of a link with
  ``delay_ms``: that delay is added at postrouting (NFQUEUE, :mod:`.emulators.delay`),
  which a reply the kernel sends from XDP or tc never passes through, so
  there the exporter runs the socket reflector;
* the collector, with the collector configuration of the scenario
  (:mod:`srv6pm.lab.control`): it applies every SID, SRv6 policy, monitored
  flow and STAMP session to the exporters over gRPC, as in production, and
  reports on ``srv6pm.events``;
* the processor, and the link delay elements;
* the test traffic, one generator per source host sending all of its flows
  (:mod:`srv6pm.lab.traffic`), started once the collector reports that the
  network has converged (so that set-up is not measured as loss), each flow
  with its DSCP; :meth:`Lab.traffic_sent` reads what each really sent. The
  destination host counts the flow's packets by the DSCP they arrive with
  (:mod:`srv6pm.lab.arrivals`; :meth:`Lab.arrivals`).

The exporters and the processor talk only through Kafka; the collector talks
to the exporters only through gRPC. :meth:`Lab.stop` undoes everything in
reverse order; it runs on normal exit, on errors and on Ctrl-C (the ``with``
statement), and is idempotent.

Child processes are started with a parent-death signal, so even a lab killed
with SIGKILL does not leave exporters or traffic running. Its namespaces,
pins and temporary folders do remain; the next lab and ``srv6pm lab clean``
remove them (:mod:`.leftovers`: the workdir's marker names the owning process
and what it built).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from srv6pm.errors import OperationError
from srv6pm import decode, records, srv6
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.ports import free_ports

from . import arrivals, control, leftovers, network, topology
from .emulators.delay import DelayProcess
from .emulators.launcher import ChildProcess
from .scenario import Scenario

__all__ = ["Lab", "LabError"]

log = logging.getLogger("srv6pm.lab")


# The lab's STAMP senders count a test packet lost after this many seconds.
STAMP_TIMEOUT_S = 1.0


class LabError(OperationError, RuntimeError):
    """The lab could not be started or a component failed."""


@dataclass
class Lab:
    """One running lab. Use as a context manager, or call start() and stop()."""

    scenario: Scenario
    kafka: KafkaSettings | None = None  # None: embedded broker on 127.0.0.1:9092
    influx: InfluxSettings | None = None  # None: embedded InfluxDB on 127.0.0.1:8086
    partitions: int = 4
    pair_wait_s: float | None = None
    kafka_port: int = 9092
    influx_port: int = 8086
    verbosity: int = 0
    workdir: Path | None = None
    # Where the exporters' southbound API listens, and the host name the
    # collector configuration gives for it (default: grpc_host).
    grpc_host: str = "127.0.0.1"
    advertise_host: str | None = None
    # Not None: run no collector of the lab's own, write its configuration here
    # for an external one (docker compose).
    external_collector: Path | None = None
    processor: bool = True  # False: external processors (docker compose) consume the lab's records
    processor_args: tuple[str, ...] = ()  # more arguments of `srv6pm processor run` (tests: shorter timings)
    converge_timeout_s: float = 60.0
    children: dict[str, ChildProcess] = field(default_factory=dict)
    delays: dict[str, DelayProcess] = field(default_factory=dict)  # one process per delayed link

    def __post_init__(self):
        self.plan = topology.plan(self.scenario)
        self.embedded_broker = None  # the lab's own broker and InfluxDB, when it runs them
        self.embedded_influxdb = None
        self._stack = contextlib.ExitStack()
        self._started = False
        if self.pair_wait_s is None:
            self.pair_wait_s = max(3.0, 2 * self.scenario.period)

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, SRv6 routes, nftables)")
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        stack = self._stack
        leftovers.sweep()  # what killed labs left (their namespaces may be ours)
        # Refuse before making anything if the namespaces are taken, or if the kernel cannot make the
        # SRv6 routes every flow's path is.
        network.check_free(self.plan)
        srv6.check()
        if self.workdir is None:
            self.workdir = leftovers.owned_tempdir("srv6pm-lab-", self.plan.namespaces, self.scenario.nodes)
            stack.callback(shutil.rmtree, self.workdir, True)
        if self.kafka is None:
            from .emulators.broker import EmbeddedBroker
            broker = EmbeddedBroker(port=self.kafka_port)
            stack.callback(broker.stop)
            broker.start()
            self.embedded_broker = broker
            self.kafka = KafkaSettings(bootstrap=broker.bootstrap)
        if self.influx is None:
            from .emulators.influxdb import EmbeddedInfluxDB
            influx = EmbeddedInfluxDB(port=self.influx_port, database="srv6pm")
            stack.callback(influx.stop)
            influx.start()
            self.embedded_influxdb = influx  # the lab's own InfluxDB (fault tests freeze it)
            self.influx = InfluxSettings(url=influx.url)
        from srv6pm.kafka import ensure_topics
        ensure_topics(self.kafka, {records.COUNTERS: self.partitions, records.LOSS: self.partitions,
                                   records.STAMP: self.partitions, records.DELAY: self.partitions,
                                   records.ALARMS: self.partitions, records.DEADLETTER: 1, records.EVENTS: 1})
        self.events = EventReader(self.kafka)
        stack.callback(self.events.close)
        network.build(self.plan, srv6=False)
        stack.callback(network.teardown, self.plan)
        for link in self.plan.links:  # stopped after the children (below), before the teardown
            if link.delay_ms > 0:
                self._start_delay(link)
        stack.callback(self._stop_children)
        self.grpc_ports = dict(zip(self.scenario.nodes, free_ports(self.grpc_host, len(self.scenario.nodes)), strict=True))
        for node in self.scenario.nodes:
            self._spawn_exporter(node)
        if self.processor:
            self.start_processor()
        self.write_collector_config()
        if self.external_collector is None:
            self._spawn("collector", self.collector_command())
        self.wait_converged(after=None, timeout=self.converge_timeout_s)
        self.check_children()
        for netns in self.traffic_hosts():
            self.traffic_flows_path(netns).write_text(json.dumps(self.traffic_flows(netns)))
            self._spawn(f"traffic-{netns}", self.traffic_command(netns))

    def stop(self) -> None:
        """Stop everything this lab started, in reverse order. Idempotent."""
        self._stack.close()

    # -- components ------------------------------------------------------------

    def _dir(self) -> Path:
        """The lab's working folder (given, or made by :meth:`start` before anything is put in it)."""
        assert self.workdir is not None, "start() makes the workdir before any path in it is used"
        return self.workdir

    def _kafka(self) -> KafkaSettings:
        """The broker the lab uses (given, or the embedded one :meth:`start` runs first)."""
        assert self.kafka is not None, "start() sets kafka before any child or reader is started"
        return self.kafka

    def _influx(self) -> InfluxSettings:
        """The InfluxDB the lab uses (given, or the embedded one :meth:`start` runs first)."""
        assert self.influx is not None, "start() sets influx before any processor is started"
        return self.influx

    def exporter_config(self, node: str) -> dict:
        """The exporter's own configuration: who it is, its namespace, its period, its STAMP reflector's backend
        (socket next to a delayed link, see the module docstring). No flows: they come from the collector."""
        config = {"node": node, "netns": node, "period": self.scenario.period,
                  "state_file": str(self.exporter_state_file(node))}
        if any(link.delay_ms > 0 and node in (link.a, link.b) for link in self.plan.links):
            config["stamp"] = {"reflector": {"backend": "socket"}}
        return config

    def exporter_state_file(self, node: str) -> Path:
        """The exporter's state file (baselines; its applied state is kept beside it)."""
        return self._dir() / f"exporter-{node}.state.json"

    def exporter_command(self, node: str, config_path: Path) -> list[str]:
        """The command line of ``node``'s exporter: its file, its API port, the scenario's data plane."""
        listen = control.host_port(self.grpc_host, self.grpc_ports[node])
        return self._srv6pm("exporter", "run", "--config", str(config_path), "--grpc-listen", listen,
                            "--grpc-plaintext", "--dataplane", self.scenario.dataplane)

    def _spawn_exporter(self, node: str) -> None:
        path = self._dir() / f"exporter-{node}.json"
        path.write_text(json.dumps(self.exporter_config(node), indent=2))
        self._spawn(f"exporter-{node}", self.exporter_command(node, path))

    def traffic_hosts(self) -> list[str]:
        """The source hosts' namespaces, one traffic generator each (in flow order)."""
        return list(dict.fromkeys(f.src_netns for f in self.plan.flows.values()))

    def traffic_flows(self, netns: str) -> list[dict]:
        """The flows that the generator in ``netns`` sends (:class:`srv6pm.lab.traffic.FlowSpec` fields)."""
        return [{"name": f.name, "src": f.src_addr, "dst": f.dst_addr, "rate": f.rate, "dscp": f.dscp}
                for f in self.plan.flows.values() if f.src_netns == netns]

    def traffic_flows_path(self, netns: str) -> Path:
        return self._dir() / f"traffic-{netns}.flows.json"

    def traffic_report_path(self, netns: str) -> Path:
        return self._dir() / f"traffic-{netns}.sent.json"

    def traffic_command(self, netns: str) -> list[str]:
        """The command line of the test traffic of every flow from ``netns`` (one process, its flows' DSCPs)."""
        return ["ip", "netns", "exec", netns, sys.executable, "-m", "srv6pm.lab.traffic",
                "--flows", str(self.traffic_flows_path(netns)), "--report", str(self.traffic_report_path(netns))]

    def traffic_sent(self) -> dict:
        """What the generators report sending so far: ``{"seconds": S, "flows": {flow: counts}}``
        (:mod:`srv6pm.lab.traffic`; the least ``seconds`` of the hosts; flows not reported yet are absent)."""
        seconds, flows = None, {}
        for netns in self.traffic_hosts():
            try:
                report = json.loads(self.traffic_report_path(netns).read_text())
            except (OSError, ValueError):
                continue
            seconds = report["seconds"] if seconds is None else min(seconds, report["seconds"])
            flows.update(report["flows"])
        return {"seconds": seconds or 0.0, "flows": flows}

    # -- control plane ---------------------------------------------------------

    def collector_command(self) -> list[str]:
        """The command line of the lab's own collector (its FlowMonIDs are kept in the lab's workdir)."""
        return self._srv6pm(
            "collector", "run", "--config", str(self.collector_config_path), "--grpc-plaintext",
            "--state-dir", str(self._dir() / "collector-state"),
            "--interval", "0.5", "--retry-max", "2", "--graph-dump", str(self._dir() / "graph.json"),
            "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500")

    @property
    def collector_config_path(self) -> Path:
        return self.external_collector or self._dir() / "collector.yaml"

    def write_collector_config(self, flows: set[str] | None = None) -> None:
        """(Re)write the collector configuration: the scenario, limited to ``flows`` (None: all).

        The collector notices the change and applies it while everything
        else keeps running. The file is replaced atomically.
        """
        config = control.collector_config(self.plan, self.grpc_ports, self.advertise_host or self.grpc_host,
                                          flows=flows, stamp_timeout_s=STAMP_TIMEOUT_S)
        path = self.collector_config_path
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(config, indent=2))  # JSON is YAML
        os.replace(tmp, path)

    def wait_converged(self, after: int | None, timeout: float) -> dict:
        """Wait for the collector's ``converged`` event of a config generation above ``after``; return it.

        Raises :class:`LabError` on timeout (with the collector's last
        events) or if a child process ended meanwhile.
        """
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events.seen:
                if event.get("kind") == "converged" and (after is None or event.get("generation", 0) > after):
                    return event
            if time.monotonic() > deadline:
                last = [f"{e.get('kind')} {e.get('node', '')} {e.get('object', '')} {e.get('detail', '')}".strip()
                        for e in self.events.seen[-5:]]
                raise LabError(f"the collector did not converge within {timeout:g} s; last events: "
                               f"{'; '.join(last) or 'none'}")
            self.events.poll(0.3)
            self.check_children()

    def generation(self) -> int:
        """The collector's current config generation (from its events; 0 if none seen)."""
        self.events.poll(0.1)
        return max((e.get("generation", 0) for e in self.events.seen), default=0)

    def _start_delay(self, link) -> None:
        """The link's delay in both directions: one NFQUEUE element per direction (``delay``), one process."""
        name = f"delay-{link.a}-{link.b}"
        delay = DelayProcess([(ns, dev, link.delay_ms, link.index) for ns, dev in ((link.a, link.b), (link.b, link.a))],
                             name=name)
        self._stack.callback(self._stop_delay, delay)
        try:
            delay.start()
        except OperationError as exc:
            raise LabError(f"{name}: {exc}") from exc  # "delay process did not start: ..."
        self.delays[name] = delay
        log.info("started", extra={"child": name, "pid": delay.pid})

    @staticmethod
    def _stop_delay(delay: DelayProcess) -> None:
        """Stop a delay process; a lost final report is logged, never stops the teardown."""
        try:
            delay.stop()
        except OperationError as exc:
            log.warning("delay process stopped without its statistics", extra={"child": delay.name, "error": str(exc)})

    def start_processor(self, name: str = "processor") -> None:
        """Start (or restart) a processor process named ``name``."""
        influx = self._influx()
        argv = self._srv6pm("processor", "run", "--influx-url", influx.url,
                            "--influx-bucket", influx.bucket, "--pair-wait", str(self.pair_wait_s),
                            "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500",
                            "--delay-lateness", str(STAMP_TIMEOUT_S + 2), "--delay-idle", "10",
                            "--client-id", f"srv6pm-lab-{name}", *self.processor_args)
        self._spawn(name, argv)

    def _srv6pm(self, *args: str) -> list[str]:
        argv = [sys.executable, "-m", "srv6pm"]
        if self.verbosity:
            argv.append("-" + "v" * self.verbosity)
        return [*argv, *args, "--kafka", self._kafka().bootstrap]

    def _spawn(self, name: str, argv: list[str]) -> None:
        child = ChildProcess(name, argv, env=self._child_env())
        child.start()
        self.children[name] = child
        log.info("started", extra={"child": name, "pid": child.pid})

    def _child_env(self) -> dict:
        env = dict(os.environ)
        env.pop("SRV6PM_KAFKA_BOOTSTRAP", None)
        env.pop("SRV6PM_METRICS_PORT", None)  # one port per machine: the lab's children would clash on it
        env.pop("SRV6PM_NODE", None)  # each exporter's name is in its own file
        return env

    def kill(self, name: str) -> None:
        """Kill child ``name`` with SIGKILL (a crash, for tests), and wait for it."""
        child = self.children[name]
        child.kill()
        child.stop()

    def restart(self, name: str) -> None:
        """Start child ``name`` again with the same command line (after :meth:`kill` or a crash)."""
        old = self.children[name]
        old.stop()
        self._spawn(name, old.args)

    def check_children(self) -> None:
        """Raise LabError if a child or an embedded service that should be running has ended.

        The components ride out a broker or InfluxDB that is away, so without this check a lab whose
        embedded service died would run on, measuring nothing.
        """
        if self.embedded_broker is not None and not self.embedded_broker.running:
            raise LabError("the lab's embedded Kafka broker exited: it kept its topics and offsets in memory, "
                           "so every record of this run is gone")
        if self.embedded_influxdb is not None and not self.embedded_influxdb.running:
            raise LabError("the lab's embedded InfluxDB exited: the results stored so far are gone with its "
                           "temporary directory")
        for name, delay in self.delays.items():
            if not delay.running:
                raise LabError(f"{name} exited with status {delay.returncode}: "
                               f"{' | '.join(delay.output_tail(5).splitlines()) or '(no output)'}")
        for child in self.children.values():
            code = child.returncode
            if code is not None:
                raise LabError(f"{child.name} exited with status {code}: {self.log_tail(child.name)}")

    def log_tail(self, name: str, lines: int = 5) -> str:
        return " | ".join(self.children[name].output_tail(lines).splitlines()) or "(no output)"

    def _stop_children(self) -> None:
        # Traffic first (so exporters count whole periods), then exporters, the processor (the delays after).
        def rank(child: ChildProcess) -> int:
            order = ("traffic", "collector", "exporter", "processor")
            return next((i for i, prefix in enumerate(order) if child.name.startswith(prefix)), len(order))
        for child in sorted(self.children.values(), key=rank):
            child.stop(grace=10)

    # -- results ---------------------------------------------------------------

    def arrivals(self) -> dict[str, "arrivals.Arrivals"]:
        """Flow name -> what reached its destination host so far, by DSCP (:mod:`srv6pm.lab.arrivals`).

        Only while the lab runs (NftError once its namespaces are gone).
        """
        return arrivals.read(self.plan)

    def results(self, from_beginning: bool = False, alarms: bool = False) -> "ResultReader":
        """A reader of ``srv6pm.loss`` and ``srv6pm.delay``, and of ``srv6pm.alarms`` if ``alarms``
        (all partitions; from now on, or from the beginning)."""
        topics = (records.LOSS, records.DELAY) + ((records.ALARMS,) if alarms else ())
        return ResultReader(self._kafka(), topics, from_beginning)



class ResultReader:
    """Reads result topics without a consumer group (does not disturb the processors)."""

    def __init__(self, kafka: KafkaSettings, topics: tuple[str, ...], from_beginning: bool = False):
        self.topics = topics
        self._consumer = KafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for topic in topics
               for p in sorted(self._consumer.partitions_for_topic(topic) or set())]
        self._consumer.assign(tps)
        if from_beginning:
            self._consumer.seek_to_beginning(*tps)
        else:
            self._consumer.seek_to_end(*tps)
            for tp in tps:
                self._consumer.position(tp)  # resolve "end" now, not at the first poll

    def poll(self, timeout_s: float = 0.5) -> list[dict]:
        return [doc for doc, _ in self.poll_timed(timeout_s)]

    def poll_timed(self, timeout_s: float = 0.5) -> list[tuple[dict, float]]:
        """(record, its Kafka timestamp in seconds) of the records that arrived.

        Each record is decoded and checked by its topic's typed decoder (:func:`srv6pm.decode.decode`)
        and given as its ``to_dict()``: the record as srv6pm publishes it. One that is not valid is
        logged with the reason and left out.
        """
        out = []
        for messages in self._consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            for m in messages:
                try:
                    out.append((decode.decode(m.topic, m.value).to_dict(), m.timestamp / 1000))
                except records.RecordError as exc:
                    log.warning("unreadable result record", extra={"topic": m.topic, "offset": m.offset,
                                                                   "reason": str(exc)})
        return out

    def close(self) -> None:
        self._consumer.close()


class EventReader(ResultReader):
    """Reads the collector's ``srv6pm.events`` from the beginning, keeping every event in :attr:`seen`."""

    def __init__(self, kafka: KafkaSettings):
        super().__init__(kafka, (records.EVENTS,), from_beginning=True)
        self.seen: list[dict] = []

    def poll(self, timeout_s: float = 0.5) -> list[dict]:
        new = super().poll(timeout_s)
        self.seen += new
        return new
