"""The local lab: a whole srv6pm pipeline on one machine, without Docker.

:class:`Lab` builds a scenario's network as namespaces (``network``), starts
the embedded broker and InfluxDB unless external ones are configured, runs one
node exporter per node that has flows and one processor, each as a separate
process that talks to the others only through Kafka, and sends each flow's
test traffic. :meth:`Lab.stop` undoes everything in reverse order; it runs on
normal exit, on errors and on Ctrl-C (the ``with`` statement), and is
idempotent.

Child processes are started with a parent-death signal, so even a lab killed
with SIGKILL does not leave exporters or traffic running (its namespaces do
remain: ``srv6pm lab clean SCENARIO`` removes them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings

from . import network, topology
from .process import ChildProcess
from .scenario import Scenario

__all__ = ["Lab", "LabError"]

log = logging.getLogger("srv6pm.lab")


# The lab's STAMP senders count a test packet lost after this many seconds.
STAMP_TIMEOUT_S = 1.0


class LabError(RuntimeError):
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
    children: dict[str, ChildProcess] = field(default_factory=dict)

    def __post_init__(self):
        self.plan = topology.plan(self.scenario)
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
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="srv6pm-lab-"))
            stack.callback(shutil.rmtree, self.workdir, True)
        # Refuse before starting anything if the namespaces are taken.
        network.check_free(self.plan)
        if self.kafka is None:
            from .broker import EmbeddedBroker
            broker = EmbeddedBroker(port=self.kafka_port)
            stack.callback(broker.stop)
            broker.start()
            self.kafka = KafkaSettings(bootstrap=broker.bootstrap)
        if self.influx is None:
            from .influxdb import EmbeddedInfluxDB
            influx = EmbeddedInfluxDB(port=self.influx_port, database="srv6pm")
            stack.callback(influx.stop)
            influx.start()
            self.influx = InfluxSettings(url=influx.url)
        from srv6pm.kafka import ensure_topics
        ensure_topics(self.kafka, {records.COUNTERS: self.partitions, records.LOSS: self.partitions,
                                   records.STAMP: self.partitions, records.DELAY: self.partitions,
                                   records.DEADLETTER: 1})
        network.build(self.plan)
        stack.callback(network.teardown, self.plan)
        stack.callback(self._stop_children)
        for link in self.plan.links:
            if link.delay_ms > 0:
                self._spawn_delay(link)
        for node in self._exporter_nodes():
            self._spawn_exporter(node)
        self.start_processor()
        time.sleep(0.5)
        self.check_children()
        for flow in self.plan.flows.values():
            self._spawn(f"traffic-{flow.name}", [
                "ip", "netns", "exec", flow.src_netns, sys.executable, "-m", "srv6pm.lab.traffic",
                "--dst", flow.dst_addr, "--src", flow.src_addr, "--flow", flow.name,
                "--rate", str(flow.rate)])

    def stop(self) -> None:
        """Stop everything this lab started, in reverse order. Idempotent."""
        self._stack.close()

    # -- components ------------------------------------------------------------

    def _exporter_nodes(self) -> list[str]:
        """Nodes with something to do: flow ends and STAMP ends, in scenario order."""
        busy = {n for f in self.scenario.flows for n in (f.src, f.dst)}
        busy |= {n for s in self.scenario.stamp for n in (s.src, s.dst)}
        return [n for n in self.scenario.nodes if n in busy]

    def exporter_config(self, node: str) -> dict:
        flows = []
        for flow in self.scenario.flows:
            src, dst = self.plan.flow_match(flow.name)
            if flow.src == node:
                flows.append({"name": flow.name, "role": "ingress", "src": src, "dst": dst})
            if flow.dst == node:
                flows.append({"name": flow.name, "role": "egress", "src": src, "dst": dst})
        config = {"node": node, "netns": node, "period": self.scenario.period,
                  "state_file": str(self.workdir / f"exporter-{node}.state.json"), "flows": flows}
        sessions = [s for s in self.plan.stamp.values() if s.sender == node]
        reflects = any(s.reflector == node for s in self.plan.stamp.values())
        if sessions or reflects:
            config["stamp"] = {
                "reflector": {"bind": self.plan.nodes[node].pm_addr} if reflects else None,
                "sessions": [{"name": s.name, "dest": s.reflector_addr, "source": s.sender_addr,
                              "segments": list(s.segments), "return_segments": list(s.return_segments),
                              "rate": s.rate, "timeout": STAMP_TIMEOUT_S, "reflector": s.reflector}
                             for s in sessions]}
        return config

    def _spawn_exporter(self, node: str) -> None:
        path = self.workdir / f"exporter-{node}.json"
        path.write_text(json.dumps(self.exporter_config(node), indent=2))
        self._spawn(f"exporter-{node}", self._srv6pm("exporter", "run", "--config", str(path)))

    def _spawn_delay(self, link) -> None:
        """The link's delay in both directions: one NFQUEUE element per direction (``delay``), one process."""
        name = f"delay-{link.a}-{link.b}"
        argv = [sys.executable, "-m", "srv6pm.lab.delay"]
        for ns, dev in ((link.a, link.b), (link.b, link.a)):
            argv += ["--netns", ns, "--dev", dev, "--delay-ms", repr(link.delay_ms), "--queue", str(link.index)]
        self._spawn(name, argv)
        deadline = time.monotonic() + 15
        while '"event": "ready"' not in self.children[name].output_tail(20):
            if self.children[name].returncode is not None or time.monotonic() > deadline:
                raise LabError(f"{name} did not start: {self.log_tail(name)}")
            time.sleep(0.05)

    def start_processor(self, name: str = "processor") -> None:
        """Start (or restart) a processor process named ``name``."""
        argv = self._srv6pm("processor", "run", "--influx-url", self.influx.url,
                            "--influx-bucket", self.influx.bucket, "--pair-wait", str(self.pair_wait_s),
                            "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500",
                            "--delay-lateness", str(STAMP_TIMEOUT_S + 2), "--delay-idle", "10",
                            "--client-id", f"srv6pm-lab-{name}")
        self._spawn(name, argv)

    def _srv6pm(self, *args: str) -> list[str]:
        argv = [sys.executable, "-m", "srv6pm"]
        if self.verbosity:
            argv.append("-" + "v" * self.verbosity)
        return [*argv, *args, "--kafka", self.kafka.bootstrap]

    def _spawn(self, name: str, argv: list[str]) -> None:
        child = ChildProcess(name, argv, env=self._child_env())
        child.start()
        self.children[name] = child
        log.info("started", extra={"child": name, "pid": child.pid})

    def _child_env(self) -> dict:
        env = dict(os.environ)
        env.pop("SRV6PM_KAFKA_BOOTSTRAP", None)
        return env

    def kill(self, name: str) -> None:
        """Kill child ``name`` with SIGKILL (a crash, for tests), and wait for it."""
        child = self.children[name]
        if child.running:
            os.kill(child.pid, 9)
        child.stop()

    def restart(self, name: str) -> None:
        """Start child ``name`` again with the same command line (after :meth:`kill` or a crash)."""
        old = self.children[name]
        old.stop()
        self._spawn(name, old.args)

    def check_children(self) -> None:
        """Raise LabError if a child that should be running has ended."""
        for child in self.children.values():
            code = child.returncode
            if code is not None:
                raise LabError(f"{child.name} exited with status {code}: {self.log_tail(child.name)}")

    def log_tail(self, name: str, lines: int = 5) -> str:
        return " | ".join(self.children[name].output_tail(lines).splitlines()) or "(no output)"

    def _stop_children(self) -> None:
        # Traffic first (so exporters count whole periods), then exporters, the processor, the delays.
        def rank(child: ChildProcess) -> int:
            order = ("traffic", "exporter", "processor", "delay")
            return next((i for i, prefix in enumerate(order) if child.name.startswith(prefix)), len(order))
        for child in sorted(self.children.values(), key=rank):
            child.stop(grace=10)

    # -- results ---------------------------------------------------------------

    def results(self, from_beginning: bool = False) -> "ResultReader":
        """A reader of ``srv6pm.loss`` and ``srv6pm.delay`` (all partitions; from now on, or from the beginning)."""
        return ResultReader(self.kafka, (records.LOSS, records.DELAY), from_beginning)


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
        out = []
        for messages in self._consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            for m in messages:
                try:
                    out.append(json.loads(m.value))
                except ValueError:
                    log.warning("unreadable result record", extra={"topic": m.topic, "offset": m.offset})
        return out

    def close(self) -> None:
        self._consumer.close()
