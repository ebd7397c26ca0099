"""The processor's self-monitoring: health points in a real InfluxDB, counters on a real /metrics socket.

A real broker (a fresh one per test) and the real InfluxDB engine; the
processor is driven step by step in this process.
"""

import time
import urllib.request
import uuid

import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from srv6pm import metrics, records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import influxql
from srv6pm.kafka import ensure_topics
from srv6pm.processor.health import Health
from srv6pm.processor.service import Processor, ProcessorOptions
from srv6pm.records import CounterRecord, StampSample

PERIOD = 2.0
BASE_PERIOD = 880_000_000


@pytest.fixture
def kafka(fresh_broker):
    settings = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(settings, {records.COUNTERS: 2, records.LOSS: 2, records.STAMP: 2, records.DELAY: 2,
                             records.DEADLETTER: 1})
    return settings


@pytest.fixture
def influx(influxdb):
    name = "h" + uuid.uuid4().hex[:12]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    return InfluxSettings(url=influxdb.url, bucket=name)


def produce(kafka, values):
    producer = KafkaProducer(**kafka.client_options(), acks="all")
    for topic, key, value in values:
        producer.send(topic, key=key.encode(), value=value)
    producer.flush()
    producer.close()


def block(flow, role, period, packets, node):
    rec = CounterRecord(node, flow, role, period, PERIOD, period % 2, packets, packets * 100)
    return records.COUNTERS, flow, rec.to_json()


def sample(seq, t1):
    s = StampSample("s1", seq, PERIOD, t1, t1 + 2_000_000, t1 + 2_050_000, t1 + 5_050_000, False, "r1", "r4")
    return records.STAMP, "s1", s.to_json()


def rows(influx, query):
    (res,) = influxql(influx, query)
    out = {}
    for series in res.get("series", []):
        key = tuple(sorted((series.get("tags") or {}).items()))
        out[key] = [dict(zip(series["columns"], v)) for v in series["values"]]
    return out


def test_health_points_and_metrics_count_what_the_processor_did(kafka, influx, free_port):
    t1 = BASE_PERIOD * int(PERIOD * 1e9) + 1000
    produce(kafka, [
        block("f1", "ingress", BASE_PERIOD, 1000, "r1"), block("f1", "egress", BASE_PERIOD, 990, "r4"),
        block("f2", "ingress", BASE_PERIOD, 500, "r1"), block("f2", "egress", BASE_PERIOD, 500, "r4"),
        block("f1", "ingress", BASE_PERIOD + 1, 1000, "r1"), block("f1", "egress", BASE_PERIOD + 1, 1000, "r4"),
        block("f3", "ingress", BASE_PERIOD, 70, "r2"),  # no partner: one incomplete period
        (records.COUNTERS, "junk", b"not json"), (records.COUNTERS, "junk", b'{"v": 1, "flow": "x"}'),
        *[sample(seq, t1 + seq * 100_000_000) for seq in range(5)],
    ])
    registry = CollectorRegistry()
    port = free_port()
    server = metrics.serve(port, addr="127.0.0.1", registry=registry)
    opts = ProcessorOptions(group="h-" + uuid.uuid4().hex[:8], client_id="health-test", pair_wait_s=1.0,
                            delay_lateness_s=0.5, delay_idle_s=1.0, poll_ms=100, session_timeout_ms=6000,
                            heartbeat_interval_ms=500, health_interval_s=0.5)
    processor = Processor(kafka, influx, opts, metrics=metrics.get(registry))
    try:
        deadline = time.monotonic() + 40
        while processor.stats["results"] < 4 + 3 or processor.stats["deadletters"] < 2:
            assert time.monotonic() < deadline, processor.stats
            processor.step()
        quiet_until = time.monotonic() + 1.5  # a few more health points with nothing new: ages grow
        while time.monotonic() < quiet_until:
            processor.step()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        processor.close()
        server.shutdown()

    # -- pipeline: exact sums over the points, per input topic ------------------
    totals = rows(influx, 'SELECT sum("records_in") AS "in", sum("records_out") AS "out", '
                          'sum("deadletters") AS "dead", sum("errors") AS "errors", count("interval_s") AS "points" '
                          'FROM "pipeline" GROUP BY "topic", "instance", "component"')
    counters = totals[(("component", "processor"), ("instance", "health-test"), ("topic", records.COUNTERS))][0]
    stamp = totals[(("component", "processor"), ("instance", "health-test"), ("topic", records.STAMP))][0]
    assert (counters["in"], counters["out"], counters["dead"], counters["errors"]) == (9, 4, 2, 0)
    assert (stamp["in"], stamp["out"], stamp["dead"], stamp["errors"]) == (5, 3, 0, 0)
    assert counters["points"] >= 3
    # every point covers the time since the one before; lag was measured and is 0 once all is consumed
    points = rows(influx, f'SELECT "interval_s", "lag" FROM "pipeline" WHERE "topic" = \'{records.COUNTERS}\'')[()]
    assert all(p["interval_s"] > 0 for p in points[1:])
    lags = [p["lag"] for p in points if p["lag"] is not None]
    assert lags and lags[-1] == 0 and all(v >= 0 for v in lags)

    # -- exporter: records per node, and the age of a silent node grows ----------
    nodes = rows(influx, 'SELECT sum("records") AS "records" FROM "exporter" GROUP BY "node"')
    assert {k[0][1]: v[0]["records"] for k, v in nodes.items()} == {"r1": 3 + 5, "r4": 3, "r2": 1}
    ages = [p["last_record_age_s"] for p in
            rows(influx, 'SELECT "last_record_age_s" FROM "exporter" WHERE "node" = \'r2\'')[()]]
    assert len(ages) >= 3 and ages == sorted(ages) and ages[-1] > ages[0] and ages[0] >= 0

    # -- Prometheus: the same counts --------------------------------------------
    for line in (
        f'srv6pm_records_in_total{{component="processor",topic="{records.COUNTERS}"}} 9.0',
        f'srv6pm_records_in_total{{component="processor",topic="{records.STAMP}"}} 5.0',
        f'srv6pm_records_out_total{{component="processor",topic="{records.LOSS}"}} 4.0',
        f'srv6pm_records_out_total{{component="processor",topic="{records.DELAY}"}} 3.0',
        f'srv6pm_records_out_total{{component="processor",topic="{records.DEADLETTER}"}} 2.0',
        f'srv6pm_deadletters_total{{component="processor",topic="{records.COUNTERS}"}} 2.0',
        f'srv6pm_period_latency_seconds_count{{component="processor",topic="{records.LOSS}"}} 4.0',
        f'srv6pm_consumer_lag{{component="processor",partition="0",topic="{records.COUNTERS}"}} 0.0',
    ):
        assert line in text, line
    assert "srv6pm_errors_total{" not in text


def test_a_failed_health_write_keeps_its_counts_for_the_next_one():
    health = Health("p1", (records.COUNTERS,), interval_s=1.0)
    assert not health.due(100.0)  # the first call starts the first interval
    health.count(records.COUNTERS, "records_in", 5)
    health.seen("r1", 99.5)
    assert not health.due(100.5) and health.due(101.0)
    health.points(101.0)  # ... and the write fails: written() is not called
    health.count(records.COUNTERS, "records_in", 2)
    points = [p.to_line_protocol() for p in health.points(102.0)]
    assert any("records_in=7i" in p and "interval_s=2" in p for p in points), points
    assert any(p.startswith("exporter,instance=p1,node=r1 ") and "last_record_age_s=2.5" in p and "records=1i" in p
               for p in points), points
    health.written(102.0)
    points = [p.to_line_protocol() for p in health.points(103.0)]
    assert any("records_in=0i" in p and "interval_s=1" in p for p in points), points
    assert any("records=0i" in p and "last_record_age_s=3.5" in p for p in points), points


def test_unknown_health_field_is_refused():
    with pytest.raises(ValueError, match="unknown health field 'records'"):
        Health("p1", (records.COUNTERS,)).count(records.COUNTERS, "records")
