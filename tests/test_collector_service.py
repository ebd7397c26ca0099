"""The collector process: command line, reload on file change and on SIGHUP, rejected configs, events on the
real broker's srv6pm.events topic (validated against the schema), graph dump, clean stop.

The node exporters are stand-ins (tests/collector_standin.py: real gRPC servers over an in-memory dict),
so these tests exercise the collector only; the real exporter's side of the API is tested in its own tests.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from kafka import KafkaConsumer, TopicPartition

from collector_standin import CallLog, StandIn
from srv6pm import cli, records
from srv6pm.collector.reconcile import Backoff
from srv6pm.collector.service import Collector
from srv6pm.kafka import ensure_topics
from srv6pm.southbound.tls import ServerTls
from test_collector_config import GOOD
from test_southbound_tls import make_ca, make_leaf

NAMES = ("r1", "r2", "r3", "r4")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def exporters():
    log = CallLog()
    nodes = {n: StandIn(n, log).start() for n in NAMES}
    yield nodes
    for s in nodes.values():
        s.stop()


def write_config(path: Path, exporters, doc=GOOD) -> None:
    doc = copy.deepcopy(doc)
    for n in doc["nodes"]:
        n["grpc"] = exporters[n["name"]].address
    doc["tls"] = {"plaintext": True}
    # Write next to it and rename, as editors and config management do: a reader never sees half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    os.replace(tmp, path)


def without_f1(doc=GOOD) -> dict:
    doc = copy.deepcopy(doc)
    doc["flows"] = [f for f in doc["flows"] if f["name"] != "f1"]
    return doc


def until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class EventReader:
    """Reads srv6pm.events from the beginning; every record must decode and satisfy the schema."""

    def __init__(self, bootstrap: str):
        ensure_topics(bootstrap, {records.EVENTS: 1})
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        tps = [TopicPartition(records.EVENTS, p) for p in sorted(self.consumer.partitions_for_topic(records.EVENTS))]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.events: list[records.Event] = []
        self.keys: list[str] = []

    def poll(self) -> list[records.Event]:
        for batch in self.consumer.poll(timeout_ms=200).values():
            for m in batch:
                event = records.decode_event(m.value)  # raises on a record that breaks the schema
                assert m.key.decode() == event.key
                self.events.append(event)
        return self.events

    def wait(self, kind: str, count: int = 1, timeout: float = 30.0, **fields) -> list[records.Event]:
        def found():
            hits = [e for e in self.poll() if e.kind == kind and all(getattr(e, k) == v for k, v in fields.items())]
            return hits if len(hits) >= count else None
        return until(found, timeout, f"{count} {kind} event(s) {fields or ''}")

    def close(self):
        self.consumer.close()


# ---------------------------------------------------------------- command line

def test_check_prints_the_desired_state(tmp_path, exporters, capsys):
    path = tmp_path / "c.yaml"
    write_config(path, exporters)
    assert cli.main(["collector", "check", "--config", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {o["object"] for o in doc["r4"]} >= {"stamp_reflector", "flow f1 egress", "policy f2"}


def test_check_and_run_refuse_a_bad_config_with_one_line_and_status_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    doc = copy.deepcopy(GOOD)
    doc["flows"][0]["via"] = ["r2", "r9"]
    path.write_text(yaml.safe_dump(doc))
    for argv in (["check"], ["run", "--grpc-plaintext"]):
        assert cli.main(["collector", *argv, "--config", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"srv6pm: {path}: flows[0].via[1]: unknown node 'r9' (nodes: r1, r2, r3, r4)"


def test_run_needs_tls_or_explicit_plaintext(tmp_path, exporters, capsys):
    path = tmp_path / "c.yaml"
    doc = copy.deepcopy(GOOD)
    del doc["tls"]
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["collector", "run", "--config", str(path), "--kafka", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srv6pm: southbound: no TLS settings") and "\n" not in err
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    assert cli.main(["collector", "run", "--config", str(path), "--grpc-ca", str(tmp_path / "ca.pem")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ca_file" in err and "ca.pem" in err and "\n" not in err
    assert cli.main(["collector", "run", "--config", str(path), "--grpc-plaintext", "--grpc-ca", "x"]) == 2
    assert "either" in capsys.readouterr().err


# ---------------------------------------------------------------- the process

def test_process_reloads_on_file_change_rejects_bad_config_publishes_events_and_stops_cleanly(
        tmp_path, exporters, fresh_broker, free_port):
    metrics_port = free_port()
    path = tmp_path / "c.yaml"
    dump = tmp_path / "graph.json"
    write_config(path, exporters)
    reader = EventReader(fresh_broker)
    proc = subprocess.Popen(
        [sys.executable, "-m", "srv6pm", "collector", "run", "--config", str(path), "--interval", "0.2",
         "--retry-initial", "0.2", "--retry-max", "1", "--kafka", fresh_broker, "--graph-dump", str(dump),
         "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500", "--metrics-port", str(metrics_port), "-v"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        converged = reader.wait("converged")
        assert converged[0].generation == 1
        loaded = reader.wait("config_loaded")[0]
        assert loaded.key == "collector" and loaded.node is None and loaded.generation == 1
        assert {e.node for e in reader.wait("node_up", 4)} == set(NAMES)
        assert "policy f1" in exporters["r1"].kinds()
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read().decode()
        assert 'srv6pm_collector_nodes_up{component="collector"} 4.0' in page
        graph = until(lambda: dump.exists() and json.loads(dump.read_text()), what="graph dump")
        assert "r1" in json.dumps(graph) and "f1" in json.dumps(graph)

        # A changed file is picked up without a signal: f1 goes, generation 2.
        write_config(path, exporters, without_f1())
        reader.wait("config_loaded", generation=2)
        reader.wait("removed", node="r1", object="policy f1")
        reader.wait("converged", generation=2)
        assert "policy f1" not in exporters["r1"].kinds() and "flow f1 egress" not in exporters["r4"].kinds()
        until(lambda: '"flow:f1"' not in dump.read_text(), what="f1 gone from the graph dump")

        # An invalid file is rejected with the error; the running configuration stays.
        bad = without_f1()
        bad["nodes"][0]["sids"][0]["sid"] = "fcff:1::zz"
        path.write_text(yaml.safe_dump(bad))
        rejected = reader.wait("config_rejected")[0]
        assert "nodes[0].sids[0].sid" in rejected.detail and "fcff:1::zz" in rejected.detail
        assert rejected.generation == 2
        assert "local_sid fcff:1::1" in exporters["r1"].kinds()

        # An exporter restart: node_restarted and everything re-applied (stand-in lost its state).
        exporters["r3"].restart(keep_state=False)
        restarted = reader.wait("node_restarted", node="r3")[0]
        assert restarted.boot_id == exporters["r3"].boot_id
        # r3 is f2's via node: with the ebpf data plane it counts f2 too.
        until(lambda: exporters["r3"].kinds() == {"local_sid fcff:3::1", "flow f2 transit"}, what="r3 re-applied")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143  # 128 + SIGTERM, after a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.close()
    # Every event published satisfied the schema (EventReader.poll decodes each one).
    kinds = {e.kind for e in reader.events}
    assert {"config_loaded", "node_up", "applied", "removed", "config_rejected", "node_restarted",
            "converged"} <= kinds


def test_sighup_reloads_and_kafka_away_does_not_stop_reconciliation(tmp_path, exporters, free_port):
    """In-process, so that the test installs the SIGHUP handler itself (the CLI installs the same one)."""
    path = tmp_path / "c.yaml"
    write_config(path, exporters)
    # No broker listens on this port: events cannot be published, the collector goes on regardless.
    collector = Collector(path, f"127.0.0.1:{free_port()}", plaintext=True, interval=0.1,
                          backoff=Backoff(0.1, 0.5), watch_interval=3600, results=False)
    old = signal.signal(signal.SIGHUP, lambda *_: collector.request_reload())
    thread = threading.Thread(target=collector.run)
    thread.start()
    history = collector.events.history
    try:
        until(lambda: any(e.kind == "converged" for e in history), what="converged")
        assert "policy f1" in exporters["r1"].kinds()
        write_config(path, exporters, without_f1())
        time.sleep(0.5)
        assert collector.generation == 1  # the watcher is off in this test: only SIGHUP reloads
        os.kill(os.getpid(), signal.SIGHUP)
        until(lambda: "policy f1" not in exporters["r1"].kinds(), what="f1 removed after SIGHUP")
        assert collector.generation == 2
        until(lambda: any(e.kind == "converged" and e.generation == 2 for e in history), what="converged again")
        # A rejected reload keeps generation 2 in force.
        path.write_text("nodes: []\n")
        os.kill(os.getpid(), signal.SIGHUP)
        rejected = until(lambda: [e for e in history if e.kind == "config_rejected"], what="config_rejected")
        assert rejected[0].detail == f"{path}: nodes: must be a non-empty list of nodes"
        assert collector.generation == 2 and collector.config.flows[0].name == "f2"
        until(lambda: collector.events.stats["failed"] >= 1, what="a failed publish attempt")
        assert collector.events.stats["published"] == 0
    finally:
        signal.signal(signal.SIGHUP, old)
        collector.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_mutual_tls_from_the_config_file(tmp_path):
    """The config's tls section: a collector with a certificate from the exporters' CA gets in; one with a
    certificate from another CA is refused by every exporter, which shows as node_down, not as a crash."""
    ca = make_ca(tmp_path, "ca")
    other = make_ca(tmp_path, "other-ca")
    server = make_leaf(tmp_path, "exporter", ca, server=True,
                       names=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    good = make_leaf(tmp_path, "collector", ca, server=False, names=[x509.DNSName("collector")])
    stranger = make_leaf(tmp_path, "stranger", other, server=False, names=[x509.DNSName("collector")])
    tls = ServerTls(server.cert, server.key, client_ca_file=ca[0].cert)
    nodes = {n: StandIn(n, tls=tls).start() for n in NAMES}
    try:
        for client, converges in ((good, True), (stranger, False)):
            doc = copy.deepcopy(GOOD)
            for n in doc["nodes"]:
                n["grpc"] = nodes[n["name"]].address
            doc["tls"] = {"ca": str(ca[0].cert), "cert": str(client.cert), "key": str(client.key)}
            path = tmp_path / "c.yaml"
            path.write_text(yaml.safe_dump(doc))
            collector = Collector(path, None, interval=0.1, backoff=Backoff(0.1, 0.5), results=False)
            thread = threading.Thread(target=collector.run)
            thread.start()
            history = collector.events.history
            try:
                if converges:
                    until(lambda: any(e.kind == "converged" for e in history), what="converged over mutual TLS")
                    assert "policy f1" in nodes["r1"].kinds()
                else:
                    downs = until(lambda: {e.node for e in history if e.kind == "node_down"} == set(NAMES),
                                  what="every node down")
                    assert downs and not any(e.kind in ("node_up", "applied") for e in history)
            finally:
                collector.stop()
                thread.join(30)
            for s in nodes.values():
                s.objects.clear()
    finally:
        for s in nodes.values():
            s.stop()


# ---------------------------------------------------------------- FlowMonIDs

def test_flowmon_ids_live_in_the_state_dir_and_check_only_reads_them(tmp_path, exporters, capsys,
                                                                     collector_state_dir):
    path = tmp_path / "c.yaml"
    write_config(path, exporters)
    state = tmp_path / "state"
    collector = Collector(path, None, plaintext=True, results=False, state_dir=state)
    try:
        assert dict(collector.config.flowmon_ids) == {"f1": 1, "f2": 2}
        assert json.loads((state / "flowmon.json").read_text())["flows"] == {"f1": 1, "f2": 2}
        # A reload that drops f1 and adds f3: f3 gets a never-used id.
        doc = without_f1()
        doc["flows"].append({**GOOD["flows"][0], "name": "f3"})
        write_config(path, exporters, doc)
        assert collector.reload()
        assert dict(collector.config.flowmon_ids) == {"f2": 2, "f3": 3}
    finally:
        collector.engine.close()
    # check reads the ids (flag beats the environment) and writes nothing.
    before = (state / "flowmon.json").read_text()
    assert cli.main(["collector", "check", "--config", str(path), "--state-dir", str(state)]) == 0
    doc = json.loads(capsys.readouterr().out)
    f3 = next(o for o in doc["r2"] if o["object"] == "flow f3 transit")
    assert f3["flowmon_id"] == 3 and f3["position"] == 1 and f3["phase"] == 2
    assert (state / "flowmon.json").read_text() == before
    assert list(collector_state_dir.iterdir()) == []  # $SRV6PM_COLLECTOR_STATE_DIR was not used


def test_a_corrupt_state_file_stops_check_and_run_with_one_line(tmp_path, exporters, capsys, collector_state_dir):
    path = tmp_path / "c.yaml"
    write_config(path, exporters)
    state_file = collector_state_dir / "flowmon.json"
    state_file.write_text('{"v": 1, "next": 2, "flows": {"f1": 7}, "released": []}')
    for argv in (["check"], ["run", "--grpc-plaintext"]):
        assert cli.main(["collector", *argv, "--config", str(path)]) == 2  # the directory from the environment
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"srv6pm: {state_file}: FlowMonID state file gives flow 'f1' the id 7") and "\n" not in err
    assert "f1" in state_file.read_text() and "7" in state_file.read_text()  # not reset


def test_a_reload_whose_ids_cannot_be_saved_is_rejected_and_sighup_retries(tmp_path, exporters):
    path = tmp_path / "c.yaml"
    write_config(path, exporters)
    state = tmp_path / "state"
    collector = Collector(path, None, plaintext=True, results=False, state_dir=state)
    try:
        (state / "flowmon.json").unlink()
        state.rmdir()
        state.write_text("not a directory")  # the next save fails
        doc = copy.deepcopy(GOOD)
        doc["flows"].append({**GOOD["flows"][0], "name": "f3", "destination": "fd01:4::103/128"})
        write_config(path, exporters, doc)
        assert not collector.reload(forced=False)
        rejected = [e for e in collector.events.history if e.kind == "config_rejected"]
        assert len(rejected) == 1 and "cannot write the FlowMonID state file" in rejected[0].detail
        assert collector.generation == 1 and [f.name for f in collector.config.flows] == ["f1", "f2"]
        assert not collector.reload(forced=False)  # the watcher does not retry the same file over and over
        assert len([e for e in collector.events.history if e.kind == "config_rejected"]) == 1
        state.unlink()
        assert collector.reload(forced=True)  # SIGHUP, once the disk is fixed
        assert collector.generation == 2 and dict(collector.config.flowmon_ids) == {"f1": 1, "f2": 2, "f3": 3}
        assert json.loads((state / "flowmon.json").read_text())["flows"] == {"f1": 1, "f2": 2, "f3": 3}
    finally:
        collector.engine.close()
