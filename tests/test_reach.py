"""Reachability up front (srv6pm.reach): against the real embedded broker and InfluxDB engine, closed ports,
names that do not resolve and servers that answer but are not the service. ArangoDB is a stand-in HTTP
server (no ArangoDB engine here), as in the collector's graph tests."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from srv6pm import reach
from srv6pm.collector.arango import ArangoSettings
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import InfluxWriter, StoreError

ROOT = Path(__file__).resolve().parent.parent
SRV6PM = [sys.executable, "-m", "srv6pm"]


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 404
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """An HTTP server on a free port answering every GET with ``server.handler.status``."""
    handler = type("Handler", (_Answer,), {"status": 404, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handler = handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_kafka_that_answers_passes(broker):
    reach.kafka(KafkaSettings(bootstrap=broker))
    reach.kafka(KafkaSettings(bootstrap=f"127.0.0.1:1,{broker}"))  # one answering server is enough


@pytest.mark.parametrize("bootstrap, words", [
    ("127.0.0.1:{closed}", "127.0.0.1:{closed}: connection refused"),
    ("nohost.invalid", "nohost.invalid:9092: the name does not resolve"),
    ("127.0.0.1:{closed},nohost.invalid:9", "127.0.0.1:{closed}: connection refused; nohost.invalid:9: the name"),
])
def test_kafka_that_does_not_answer_is_one_line_naming_each_address(bootstrap, words, free_port):
    closed = free_port()
    bootstrap, words = bootstrap.format(closed=closed), words.format(closed=closed)
    with pytest.raises(reach.Unreachable) as caught:
        reach.kafka(KafkaSettings(bootstrap=bootstrap), timeout_s=2)
    message = str(caught.value)
    assert message.startswith(f"Kafka at {bootstrap} does not answer: ") and words in message
    assert message.endswith("(tried an ApiVersions request, PLAINTEXT)") and "\n" not in message


def test_a_server_that_is_not_kafka_is_said_so():
    """A server that answers at once with something else (as an HTTP server does to a bad request)."""
    import socket
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(reach.Unreachable, match=f"127.0.0.1:{port}: the answer is not Kafka's"):
            reach.kafka(KafkaSettings(bootstrap=f"127.0.0.1:{port}"), timeout_s=2)
    finally:
        thread.join(5)
        listener.close()


def test_influxdb_that_answers_passes(influxdb):
    reach.influx(InfluxSettings(url=influxdb.url))


def test_influxdb_that_does_not_answer(free_port, http_server):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(reach.Unreachable) as caught:
        reach.influx(InfluxSettings(url=url), timeout_s=2)
    assert str(caught.value) == f"InfluxDB at {url} does not answer: GET {url}/ping: connection refused"
    other = f"http://127.0.0.1:{http_server.server_address[1]}"
    with pytest.raises(reach.Unreachable, match=f"InfluxDB at {other} does not answer as InfluxDB does: "
                                                f"GET {other}/ping gave HTTP 404"):
        reach.influx(InfluxSettings(url=other), timeout_s=2)


def test_a_write_to_a_store_that_went_away_says_it_does_not_answer(free_port):
    url = f"http://127.0.0.1:{free_port()}"
    writer = InfluxWriter(InfluxSettings(url=url), timeout_s=2)
    try:
        with pytest.raises(StoreError) as caught:
            writer.write(["m v=1"])
    finally:
        writer.close()
    assert str(caught.value) == f"InfluxDB at {url} does not answer: write failed: connection refused"


def test_arango_answers_refuses_or_is_not_arango(http_server, free_port):
    url = f"http://127.0.0.1:{http_server.server_address[1]}"
    settings = ArangoSettings(url=url, user="srv6pm", password="pw")
    http_server.handler.status = 200
    reach.arango(settings)
    assert http_server.handler.seen[-1][0] == "/_api/version"
    assert http_server.handler.seen[-1][1].startswith("Basic ")
    http_server.handler.status = 401
    with pytest.raises(reach.Unreachable, match=f"ArangoDB at {url} refuses user 'srv6pm'"):
        reach.arango(settings)
    http_server.handler.status = 404
    with pytest.raises(reach.Unreachable, match="does not answer as ArangoDB does"):
        reach.arango(settings)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(reach.Unreachable, match=f"ArangoDB at {dead} does not answer: .*connection refused"):
        reach.arango(ArangoSettings(url=dead, password=""), timeout_s=2)


def _run(*args, env=None):
    return subprocess.run([*SRV6PM, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_processor_run_against_a_dead_store_fails_in_one_line_with_status_1(broker, influxdb, free_port):
    dead = free_port()
    out = _run("processor", "run", "--kafka", f"127.0.0.1:{dead}", "--influx-url", influxdb.url)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"srv6pm: error: Kafka at 127.0.0.1:{dead} does not answer: 127.0.0.1:{dead}: connection refused "
        "(tried an ApiVersions request, PLAINTEXT)"]
    out = _run("processor", "run", "--kafka", broker, "--influx-url", f"http://127.0.0.1:{dead}")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"srv6pm: error: InfluxDB at http://127.0.0.1:{dead} does not answer: GET http://127.0.0.1:{dead}/ping: "
        "connection refused"]


def test_kafka_nohost_fails_fast_in_one_line():
    out = _run("processor", "run", "--kafka", "nohost.invalid")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "srv6pm: error: Kafka at nohost.invalid does not answer: nohost.invalid:9092: the name does not resolve "
        "(tried an ApiVersions request, PLAINTEXT)"]


SCENARIO = "period: 2\nnodes: [rq1, rq2]\nlinks: [[rq1, rq2]]\nflows: [{name: f1, from: rq1, to: rq2, rate: 10}]\n"


def test_lab_run_against_a_dead_influxdb_builds_nothing_and_says_so(free_port, tmp_path):
    from srv6pm.netns import exists
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO)  # node names of its own: other labs on this machine use r1...
    dead = free_port()
    out = _run("lab", "run", str(scenario), "--influx-url", f"http://127.0.0.1:{dead}", "--duration", "20")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"srv6pm: error: InfluxDB at http://127.0.0.1:{dead} does not answer: GET http://127.0.0.1:{dead}/ping: "
        "connection refused"]
    assert out.stdout == "" and not exists("rq1") and not exists("rq2")


def test_collector_run_against_a_dead_broker_fails_in_one_line(tmp_path, free_port):
    config = tmp_path / "c.yaml"
    config.write_text('nodes:\n  - {name: r1, grpc: "127.0.0.1:1", sids: [{sid: "fcff:1::1", behavior: End}]}\n')
    dead = free_port()
    out = _run("collector", "run", "--config", str(config), "--grpc-plaintext", "--kafka", f"127.0.0.1:{dead}",
               "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"srv6pm: error: Kafka at 127.0.0.1:{dead} does not answer: 127.0.0.1:{dead}: connection refused "
        "(tried an ApiVersions request, PLAINTEXT)"]
    assert not (tmp_path / "state").exists()  # nothing was started, nothing written
