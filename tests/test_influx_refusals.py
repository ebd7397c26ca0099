"""What InfluxDB's refusals make the processor do: retry what may pass later, hold and say what to fix for a
configuration failure, dead-letter exactly the results whose points are refused and store the rest.

Against the real embedded InfluxDB (1.6.7 behind its v2-write front) and a real broker; 401, 403 and 429,
which the embedded engine never answers (it runs without authentication), come from a small HTTP server
that answers as InfluxDB 2.x does, to the real influxdb-client.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from srv6pm import metrics as metrics_mod
from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import CONFIG, DATA, TRANSIENT, InfluxWriter, StoreError, influxql
from srv6pm.kafka import ensure_topics
from srv6pm.lab.emulators.influxdb import EmbeddedInfluxDB
from srv6pm.ports import free_port
from srv6pm.processor.service import Processor
from srv6pm.processor.writer import Output, Writer
from srv6pm.publish import Publisher, Send
from srv6pm.waiting import Waiting

from test_processor import BASE_PERIOD, PERIOD, block, committed, options, produce, read_topic, run_until, stored

pytestmark = pytest.mark.services

FAR = 2_000_000  # periods after BASE_PERIOD: 46 days later, in another shard of the default retention policy


@pytest.fixture
def kafka(fresh_broker):
    settings = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(settings, {records.COUNTERS: 2, records.LOSS: 2, records.ALARMS: 2, records.DEADLETTER: 1})
    return settings


def new_database(influxdb) -> InfluxSettings:
    name = "t" + uuid.uuid4().hex[:12]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    return InfluxSettings(url=influxdb.url, bucket=name)


def refused(settings: InfluxSettings, lines: list[str]) -> StoreError:
    writer = InfluxWriter(settings, timeout_s=5)
    try:
        with pytest.raises(StoreError) as caught:
            writer.write(lines)
    finally:
        writer.close()
    return caught.value


# -- the kinds of failure ---------------------------------------------------------------

def test_real_influxdb_refusals_are_told_apart(influxdb):
    settings = new_database(influxdb)
    writer = InfluxWriter(settings)
    writer.write(["m,t=a v=1.5 1000000000"])
    writer.close()
    conflict = refused(settings, ["m,t=b v=2i 2000000000", "m,t=c v=3.5 2000000000", "m,t=d v=4i 2000000000"])
    assert (conflict.kind, conflict.status, conflict.dropped) == (DATA, 400, 2)
    assert conflict.detail.startswith("partial write: field type conflict: input field \"v\" on measurement \"m\"")
    assert str(conflict).startswith("InfluxDB refused the write: HTTP 400: partial write: field type conflict")

    missing = refused(InfluxSettings(url=influxdb.url, bucket="nosuchdb"), ["m v=1"])
    assert (missing.kind, missing.status, missing.cause) == (CONFIG, 404, "not_found")
    assert str(missing) == (f"InfluxDB at {influxdb.url} has no bucket (database) 'nosuchdb' to write to "
                            "(HTTP 404: database not found: \"nosuchdb\"): create it, or set --influx-bucket / "
                            "SRV6PM_INFLUX_BUCKET (and --influx-org / SRV6PM_INFLUX_ORG on 2.x)")
    policy = refused(InfluxSettings(url=influxdb.url, bucket=f"{settings.bucket}/nosuchrp"), ["m v=1"])
    assert (policy.kind, policy.status, policy.cause) == (CONFIG, 500, "not_found")  # 1.x says 500 for it

    closed = refused(InfluxSettings(url=f"http://127.0.0.1:{free_port()}"), ["m v=1"])
    assert (closed.kind, closed.status) == (TRANSIENT, None)


def test_a_body_too_large_is_a_data_refusal():
    with EmbeddedInfluxDB(port=free_port(), max_body_bytes=200) as small:
        error = refused(InfluxSettings(url=small.url), [f"m,t=a v={i} {i}" for i in range(40)])
    assert (error.kind, error.status) == (DATA, 413) and "exceeds the limit of 200 bytes" in error.detail


class _V2Answer(http.server.BaseHTTPRequestHandler):
    """Answers every write with ``answer`` = (status, v2 code, message, headers), as InfluxDB 2.x does."""

    answer: tuple[int, str, str, dict] = (204, "", "", {})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, code, message, headers = self.answer
        body = json.dumps({"code": code, "message": message}).encode() if code else b""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def v2_server():
    handler = type("Handler", (_V2Answer,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("answer, kind, cause, words", [
    ((401, "unauthorized", "unauthorized access", {}), CONFIG, "unauthorized", "SRV6PM_INFLUX_TOKEN_FILE"),
    ((403, "forbidden", "insufficient permissions for write", {}), CONFIG, "forbidden", "write permission"),
    ((404, "not found", 'bucket "pm" not found', {}), CONFIG, "not_found", "--influx-bucket"),
    ((405, "method not allowed", "no", {}), CONFIG, "refused", "--influx-url"),
    ((429, "too many requests", "slow down", {"Retry-After": "7"}), TRANSIENT, None, "HTTP 429: slow down"),
    ((503, "unavailable", "busy", {}), TRANSIENT, None, "HTTP 503: busy"),
    ((422, "unprocessable entity", "points beyond retention policy dropped=1", {}), DATA, None, "HTTP 422"),
])
def test_v2_answers_are_told_apart(v2_server, answer, kind, cause, words):
    server, handler = v2_server
    handler.answer = answer
    error = refused(InfluxSettings(url=f"http://127.0.0.1:{server.server_address[1]}", bucket="pm"), ["m v=1"])
    assert (error.kind, error.cause, error.status) == (kind, cause, answer[0])
    assert words in str(error) and "\n" not in str(error)
    assert error.retry_after_s == (7.0 if answer[0] == 429 else None)


# -- the writer -------------------------------------------------------------------------

def test_the_writer_splits_a_refused_batch_and_dead_letters_exactly_the_refused_lines(kafka):
    """A body limit of 400 bytes: 30 short lines go in pieces that fit, and the one longer line alone is refused."""
    registry = CollectorRegistry()
    metrics = metrics_mod.get(registry)
    with EmbeddedInfluxDB(port=free_port(), max_body_bytes=400) as small:
        settings = InfluxSettings(url=small.url)
        lines = [f"m,t=n{i} v={i}i {10**9 * (i + 1)}" for i in range(30)]
        huge = f"m,t=huge v=1i,pad=\"{'x' * 500}\" {10**9 * 99}"
        lines.insert(17, huge)
        seen: list[dict[int, str]] = []

        def letters(state, refused, all_lines):
            seen.append(refused)
            return [(Send(records.DEADLETTER, None, b"k", json.dumps({"line": all_lines[i]}).encode()), ("in", 0))
                    for i in refused]

        output = Output(lines, [], None, line_origins=[("in", 0)] * len(lines), letters=letters)
        store, publisher = InfluxWriter(settings), Publisher(kafka.client_options(), "test-writer")
        writer = Writer(store, publisher, threading.Event(), 1.0, Waiting("processor", logging.getLogger("t"), metrics),
                        metrics)
        try:
            writer.submit(output)
            assert writer.wait() is output
        finally:
            writer.close()
            store.close()
            publisher.close()
        (res,) = influxql(settings, 'SELECT count("v") FROM "m"')
    assert res["series"][0]["values"][0][1] == 30  # every other line is stored
    assert seen == [{17: "InfluxDB refused its point: HTTP 413: request body exceeds the limit of 400 bytes"}]
    assert output.lettered == [("in", 0)]
    (letter,) = [r for _, _, _, r in read_topic(kafka, records.DEADLETTER)]
    assert letter == {"line": huge}
    assert registry.get_sample_value("srv6pm_store_refused_points_total",
                                     {"component": "processor", "status": "413"}) == 1


# -- the processor ----------------------------------------------------------------------

def test_results_refused_for_a_field_type_conflict_are_dead_lettered_and_the_rest_stored(kafka, influxdb):
    influx = new_database(influxdb)
    far_ns = (BASE_PERIOD + FAR) * int(PERIOD) * 10**9
    writer = InfluxWriter(influx)
    writer.write([f"loss,flow=other lost_packets=0.5 {far_ns}"])  # lost_packets is a float in that shard
    writer.close()
    good = [block(f, role, BASE_PERIOD, 1000 - (role == "egress") * i) for i, f in enumerate(("f1", "f2", "f3"))
            for role in ("ingress", "egress")]
    bad = [block(f, role, BASE_PERIOD + FAR, 500) for f in ("f1", "f4") for role in ("ingress", "egress")]
    produce(kafka, good[:2] + bad[:2] + good[2:] + bad[2:])
    registry = CollectorRegistry()
    opts = options()
    processor = Processor(kafka, influx, opts, metrics=metrics_mod.get(registry))
    try:
        run_until(processor, lambda: processor.stats["results"] == 5 and processor.stats["deadletters"] == 2)
        processor._commit()
    finally:
        processor.close()
    published = {(r["flow"], r["period"]): r for _, _, _, r in read_topic(kafka, records.LOSS)}
    assert sorted(published) == sorted([(f, BASE_PERIOD) for f in ("f1", "f2", "f3")]
                                       + [(f, BASE_PERIOD + FAR) for f in ("f1", "f4")])  # each once
    for i, flow in enumerate(("f1", "f2", "f3")):
        assert [(r["lost_packets"], r["time"]) for r in stored(influx, flow)] == [(i, BASE_PERIOD * 2 * 10**9)]
    assert stored(influx, "f4") == []
    letters = {key.decode(): r for _, _, key, r in read_topic(kafka, records.DEADLETTER)}
    assert sorted(letters) == ["f1", "f4"]
    for flow, letter in letters.items():
        records.validate(records.DEADLETTER, letter)
        result = json.loads(base64.b64decode(letter["raw"]))
        assert result == published[(flow, BASE_PERIOD + FAR)]
        assert (letter["topic"], letter["result_topic"], letter["consumer"]) == (records.COUNTERS, records.LOSS,
                                                                                 opts.group)
        assert letter["reason"].startswith("InfluxDB refused its point: HTTP 400: partial write: field type "
                                           "conflict: input field \"lost_packets\" on measurement \"loss\"")
        assert letter["point"].startswith("loss,") and f"flow={flow}" in letter["point"]
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == len(good) + len(bad)
    assert registry.get_sample_value("srv6pm_store_refused_points_total",
                                     {"component": "processor", "status": "400"}) == 2
    assert registry.get_sample_value("srv6pm_deadletters_total",
                                     {"component": "processor", "topic": records.COUNTERS}) == 2


def test_an_unknown_database_holds_the_results_says_what_to_fix_and_loses_nothing(kafka, influxdb, caplog):
    name = "t" + uuid.uuid4().hex[:12]
    influx = InfluxSettings(url=influxdb.url, bucket=name)  # not created yet
    produce(kafka, [block(f, role, BASE_PERIOD, 100) for f in ("f1", "f2") for role in ("ingress", "egress")])
    registry = CollectorRegistry()
    opts = options(retry_max_s=0.5)
    caplog.set_level(logging.INFO, logger="srv6pm.processor")

    def misconfigured():
        return registry.get_sample_value("srv6pm_store_misconfigured", {"component": "processor",
                                                                       "cause": "not_found"})

    processor = Processor(kafka, influx, opts, metrics=metrics_mod.get(registry))
    try:
        run_until(processor, lambda: processor.stats["holds"] >= 1 and misconfigured() == 1)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            processor.step()
        assert processor.stats["results"] == 0 and processor.stats["deadletters"] == 0
        influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
        run_until(processor, lambda: processor.stats["results"] == 2)
        processor._commit()
    finally:
        processor.close()
    assert misconfigured() == 0
    assert [r["lost_packets"] for r in stored(influx, "f1")] == [0] and len(stored(influx, "f2")) == 1
    assert read_topic(kafka, records.DEADLETTER) == []
    assert sum(c or 0 for c in committed(kafka, opts.group).values()) == 4
    said = [r for r in caplog.records if r.name == "srv6pm.processor"]
    errors = [r for r in said if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # said once, not once per retry
    assert errors[0].cause == "not_found" and "--influx-bucket" in errors[0].error and name in errors[0].error
    assert [r.getMessage() for r in said].count("InfluxDB accepts the writes again") == 1
