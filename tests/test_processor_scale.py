"""Scale-out: three processors in one consumer group on the real broker, one killed with SIGKILL and added back.

The processors are ``srv6pm processor run`` processes (as deployed); counter
blocks are published period by period while they run. Every (flow, period)
must end up exactly once on ``srv6pm.loss`` and once in InfluxDB, with its
exact loss: nothing lost when the killed member's partitions move to the
others, nothing doubled when they move back.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid

import pytest
from kafka import KafkaProducer

from srv6pm import records
from srv6pm.config import KafkaSettings
from srv6pm.influx import influxql
from srv6pm.kafka import ensure_topics
from srv6pm.lab.emulators.launcher import ChildProcess
from srv6pm.records import CounterRecord

from test_processor import influx, read_topic  # noqa: F401  (influx: a database of its own)

pytestmark = pytest.mark.services

PERIOD = 2.0
BASE_PERIOD = 880_000_000
FLOWS = [f"f{i:02d}" for i in range(30)]
PERIODS = 36
PARTITIONS = 6


def lost(flow: str, k: int) -> int:
    return (int(flow[1:]) + k) % 4


@pytest.fixture
def kafka(fresh_broker):
    settings = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(settings, {records.COUNTERS: PARTITIONS, records.LOSS: PARTITIONS, records.ALARMS: PARTITIONS,
                             records.DEADLETTER: 1})
    return settings


def processor(kafka, influx, group, name) -> ChildProcess:
    child = ChildProcess(name, [
        sys.executable, "-m", "srv6pm", "-v", "processor", "run", "--kafka", kafka.bootstrap,
        "--influx-url", influx.url, "--influx-bucket", influx.bucket, "--group", group, "--client-id", name,
        "--pair-wait", "3", "--session-timeout-ms", "4000", "--heartbeat-interval-ms", "400",
        "--health-interval", "0"], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    child.start()
    return child


def published(kafka) -> list[tuple[str, int]]:
    return [(r["flow"], r["period"]) for _, _, _, r in read_topic(kafka, records.LOSS)]


def stored(influx) -> dict[tuple[str, int], tuple]:
    res = influxql(influx, "SELECT lost_packets, complete FROM loss GROUP BY flow")
    out = {}
    for series in res[0].get("series", []):
        for t, lost_packets, complete in series["values"]:
            out[(series["tags"]["flow"], t // 10**9 // 2)] = (lost_packets, complete)
    return out


def wait_for(condition, what, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s} s")
        time.sleep(0.5)


def test_three_processors_one_killed_and_added_back_give_every_result_exactly_once(kafka, influx):
    group = "scale-" + uuid.uuid4().hex[:8]
    members = {name: processor(kafka, influx, group, name) for name in ("p1", "p2", "p3")}
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")

    def publish_period(i: int) -> None:
        k = BASE_PERIOD + i
        for flow in FLOWS:
            for role, node, packets in (("ingress", "r1", 100), ("egress", "r4", 100 - lost(flow, k))):
                block = CounterRecord(node, flow, role, k, PERIOD, k % 2, packets, packets * 10)
                producer.send(records.COUNTERS, key=flow.encode(), value=block.to_json())
        producer.flush()

    try:
        for i in range(PERIODS // 3):
            publish_period(i)
        wait_for(lambda: len(published(kafka)) >= len(FLOWS) * 4, "first results")
        os.kill(members["p2"].pid, signal.SIGKILL)  # mid-run: it owns partitions with work in progress
        wait_for(lambda: not members["p2"].running, "p2 gone")
        for i in range(PERIODS // 3, 2 * PERIODS // 3):
            publish_period(i)
            time.sleep(0.2)  # the survivors take p2's partitions over while periods keep coming
        members["p2"] = processor(kafka, influx, group, "p2")  # added back: partitions move again
        for i in range(2 * PERIODS // 3, PERIODS):
            publish_period(i)
            time.sleep(0.2)
        want = {(flow, BASE_PERIOD + i) for flow in FLOWS for i in range(PERIODS)}
        wait_for(lambda: set(published(kafka)) >= want, "every result on srv6pm.loss")
        wait_for(lambda: set(stored(influx)) >= want, "every result in InfluxDB")
        for name, member in members.items():
            assert member.running, f"{name} died: {member.output_tail()}"
    finally:
        producer.close()
        for member in members.values():
            member.stop()

    results = published(kafka)
    assert len(results) == len(want) and set(results) == want  # each exactly once
    for _, _, _, r in read_topic(kafka, records.LOSS):
        assert (r["complete"], r["lost_packets"]) == (True, lost(r["flow"], r["period"]))
    points = stored(influx)
    assert set(points) == want
    assert all(points[(flow, k)] == (lost(flow, k), True) for flow, k in want)
    assert read_topic(kafka, records.DEADLETTER) == []
