"""The processor through the faults operators have: InfluxDB hung, the broker hung, poison records.

Real parts only: a broker (Tansu, memory storage) and an InfluxDB engine of each test's own, since
the tests suspend them (SIGSTOP, :meth:`freeze`) and resume them (SIGCONT, :meth:`thaw`). Each test
asserts exact results: every (flow, period) once on ``srv6pm.loss`` and once in InfluxDB, with the
loss that was put in, and every input offset committed.
"""

import base64
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry

from srv6pm import metrics as metrics_mod
from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import influxql
from srv6pm.kafka import ensure_topics
from srv6pm.lab.emulators.broker import EmbeddedBroker
from srv6pm.lab.emulators.influxdb import EmbeddedInfluxDB
from srv6pm.ports import free_port
from srv6pm.processor.service import Processor

from test_processor import BASE_PERIOD, block, committed, options, produce, read_topic, run_until, stored

pytestmark = pytest.mark.services

FLOWS = ("f1", "f2", "f3", "f4")
TOPICS = {records.COUNTERS: 2, records.STAMP: 2, records.LOSS: 2, records.DELAY: 2, records.ALARMS: 2,
          records.DEADLETTER: 1}


@pytest.fixture
def own_broker():
    with EmbeddedBroker(port=free_port()) as broker:
        ensure_topics(KafkaSettings(bootstrap=broker.bootstrap), TOPICS)
        yield broker


@pytest.fixture
def own_influxdb():
    with EmbeddedInfluxDB(port=free_port(), database="srv6pm") as influx:
        yield influx


def lost(flow: str, k: int) -> int:
    """The loss put into (flow, period k): differs per flow and period, zero for some."""
    return (FLOWS.index(flow) * 3 + k) % 5


def blocks(periods) -> list:
    out = []
    for k in periods:
        for flow in FLOWS:
            out += [block(flow, "ingress", BASE_PERIOD + k, 1000), block(flow, "egress", BASE_PERIOD + k, 1000 - lost(flow, k))]
    return out


def assert_exactly_once(kafka, influx, periods, group, other_counters=0):
    """Every (flow, period) once on srv6pm.loss and once in InfluxDB, with its loss; every record committed
    (``other_counters``: records on srv6pm.counters besides the blocks)."""
    published = [r for _, _, _, r in read_topic(kafka, records.LOSS)]
    keys = sorted((r["flow"], r["period"] - BASE_PERIOD) for r in published)
    assert keys == sorted((f, k) for f in FLOWS for k in periods), "a result missing or published twice"
    for r in published:
        k = r["period"] - BASE_PERIOD
        assert (r["complete"], r["tx_packets"], r["lost_packets"]) == (True, 1000, lost(r["flow"], k)), r
    for flow in FLOWS:
        rows = stored(influx, flow)
        assert [(row["time"], row["lost_packets"], row["complete"]) for row in rows] == \
            [((BASE_PERIOD + k) * 2 * 10**9, lost(flow, k), True) for k in periods]
    assert sum(c or 0 for c in committed(kafka, group).values()) == 2 * len(FLOWS) * len(periods) + other_counters


def run_for(processor, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        processor.step()


def generation(processor) -> int:
    return processor._consumer.group_metadata().generation_id


def waiting(registry, what):
    return registry.get_sample_value("srv6pm_waiting", {"component": "processor", "what": what})


def test_influxdb_hung_longer_than_max_poll_interval_is_waited_out_in_the_group(own_broker, own_influxdb, caplog):
    # max_poll_interval_ms is lowered to 8 s so that a 20 s outage crosses it three times over in a
    # test of reasonable length: a processor that stopped polling while InfluxDB is away would be
    # removed from its group (and its rebalance would show as a new generation).
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
    influx = InfluxSettings(url=own_influxdb.url, bucket="srv6pm")
    registry = CollectorRegistry()
    opts = options(max_poll_interval_ms=8_000, retry_max_s=2.0)
    processor = Processor(kafka, influx, opts, metrics=metrics_mod.get(registry))
    caplog.set_level(logging.INFO, logger="srv6pm.processor")
    try:
        produce(kafka, blocks(range(0, 3)))
        run_until(processor, lambda: processor.stats["results"] == 12)
        before = generation(processor)
        own_influxdb.freeze()
        try:
            produce(kafka, blocks(range(3, 7)))
            run_for(processor, 20)
            assert processor.stats["holds"] >= 1 and processor.stats["results"] < 28
            assert waiting(registry, "influxdb") == 1
        finally:
            own_influxdb.thaw()
        run_until(processor, lambda: processor.stats["results"] == 28, timeout=60)
        assert generation(processor) == before, "the processor left its group during the outage"
        assert waiting(registry, "influxdb") == 0
        processor._commit()
    finally:
        processor.close()
    assert_exactly_once(kafka, influx, range(0, 7), opts.group)
    said = [r.getMessage() for r in caplog.records if r.name == "srv6pm.processor"]
    assert said.count("waiting for influxdb") == 1 and said.count("influxdb is back") == 1, said
    assert said.count("input paused until the results in flight are written") == processor.stats["holds"]
    (res,) = influxql(influx, 'SELECT sum("held_s") FROM "pipeline" WHERE "topic" = \'srv6pm.counters\'')
    assert res["series"][0]["values"][0][1] >= 15  # the outage, less the first second and a write's timeout


def test_broker_hung_longer_than_the_session_timeout_is_ridden_out(own_broker, own_influxdb):
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
    influx = InfluxSettings(url=own_influxdb.url, bucket="srv6pm")
    opts = options(session_timeout_ms=6_000, retry_max_s=2.0)
    processor = Processor(kafka, influx, opts, metrics=metrics_mod.get(CollectorRegistry()))
    try:
        produce(kafka, blocks(range(0, 3)))
        run_until(processor, lambda: processor.stats["results"] == 12)
        produce(kafka, blocks(range(3, 6)) + [("junk", b"\xff not a record")])
        processor.step()  # some of these records read, their output (results, the dead letter) perhaps in flight
        own_broker.freeze()
        try:
            run_for(processor, 15)  # 2.5 session timeouts: the broker evicts the member when it resumes
        finally:
            own_broker.thaw()
        run_until(processor, lambda: processor.stats["results"] >= 24 and processor.stats["deadletters"] >= 1,
                  timeout=90)
        run_for(processor, 3)  # anything doubled would show up now
        processor._commit()
    finally:
        processor.close()
    assert_exactly_once(kafka, influx, range(0, 6), opts.group, other_counters=1)
    letters = [(key, r["topic"], r["raw_bytes"]) for _, _, key, r in read_topic(kafka, records.DEADLETTER)]
    assert letters == [(b"junk", records.COUNTERS, len(b"\xff not a record"))]  # once, not lost, not doubled


def poison() -> list[tuple[str, bytes]]:
    """A 1 MB record, random bytes and JSON nested too deeply for the decoder."""
    return [("big", b'{"v":1,"pad":"' + b"x" * 1_000_000 + b'"}'), ("junk", os.urandom(4096)),
            ("deep", b'{"v":1,"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}")]


def test_a_1mb_record_random_bytes_and_deep_json_on_each_input_are_dead_lettered_once(own_broker, own_influxdb):
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
    influx = InfluxSettings(url=own_influxdb.url, bucket="srv6pm")
    bad = poison()
    for topic in (records.COUNTERS, records.STAMP):
        produce(kafka, bad, topic=topic)
    produce(kafka, blocks([0]))
    opts = options()
    processor = Processor(kafka, influx, opts, metrics=metrics_mod.get(CollectorRegistry()))
    try:
        run_until(processor, lambda: processor.stats["results"] == 4 and processor.stats["deadletters"] == 6)
        processor._commit()
    finally:
        processor.close()
    letters = [(key, r) for _, _, key, r in read_topic(kafka, records.DEADLETTER)]
    assert len(letters) == 6
    by = {(r["topic"], key.decode()): r for key, r in letters}
    for topic in (records.COUNTERS, records.STAMP):
        for key, raw in bad:
            letter = by[(topic, key)]
            records.validate(records.DEADLETTER, letter)
            kept = base64.b64decode(letter["raw"])
            assert (letter["raw_bytes"], letter["raw_sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
            assert letter["raw_truncated"] == (len(raw) > records.DEADLETTER_RAW_BYTES)
            assert kept == raw[:records.DEADLETTER_RAW_BYTES]
    assert "nested too deeply" in by[(records.COUNTERS, "deep")]["reason"]
    assert_exactly_once(kafka, influx, [0], opts.group, other_counters=len(bad))

    # A restart of the group reads nothing again: no restart loop, no second dead letter.
    again = Processor(kafka, influx, opts, metrics=metrics_mod.get(CollectorRegistry()))
    try:
        run_until(again, lambda: bool(again._consumer.assignment()) and not again._unloaded)
        run_for(again, 3)
        assert again.stats["records"] == 0
    finally:
        again.close()
    assert len(read_topic(kafka, records.DEADLETTER)) == 6


class Gate:
    """A TCP path to ``target`` that the test opens and closes: closed, connections are refused and those
    open are cut (InfluxDB unreachable from one processor only; the engine itself keeps running)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._listener = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way; close() alone would not
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_partitions_revoked_while_their_results_wait_for_influxdb_are_made_once_by_their_next_owner(
        own_broker, own_influxdb, caplog):
    """Member a holds a batch it cannot store (InfluxDB unreachable from a only) when member b joins: the
    rebalance withdraws the batch from a's writer, each partition's next owner re-reads and makes its
    results, and when a reaches InfluxDB again nothing is stored or published twice."""
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
    influx = InfluxSettings(url=own_influxdb.url, bucket="srv6pm")
    gate = Gate(own_influxdb.port)
    group = "rebalance-" + uuid.uuid4().hex[:8]
    opts = dict(group=group, retry_max_s=1.0, health_interval_s=None)
    a = Processor(kafka, InfluxSettings(url=gate.url, bucket="srv6pm"), options(**opts, client_id="a"),
                  metrics=metrics_mod.get(CollectorRegistry()))
    caplog.set_level(logging.INFO, logger="srv6pm.processor")
    threads = []
    b = None
    try:
        gate.open()
        produce(kafka, blocks(range(0, 2)))
        run_until(a, lambda: a.stats["results"] == 8)
        gate.close()
        produce(kafka, blocks(range(2, 5)))
        run_until(a, lambda: a.stats["holds"] >= 1)  # a's batch of periods 2-4 is stuck in its writer
        threads.append(threading.Thread(target=a.run, daemon=True))
        threads[-1].start()
        b = Processor(kafka, influx, options(**opts, client_id="b"), metrics=metrics_mod.get(CollectorRegistry()))
        threads.append(threading.Thread(target=b.run, daemon=True))
        threads[-1].start()
        deadline = time.monotonic() + 60
        while not (b._consumer.assignment() and any("partitions revoked" in r.getMessage() for r in caplog.records)):
            assert time.monotonic() < deadline, "no rebalance"
            time.sleep(0.2)
        time.sleep(3)  # b makes the results of its partitions meanwhile
        gate.open()
        want = {(f, BASE_PERIOD + k) for f in FLOWS for k in range(5)}
        deadline = time.monotonic() + 60
        while {(r["flow"], r["period"]) for _, _, _, r in read_topic(kafka, records.LOSS)} != want:
            assert time.monotonic() < deadline, f"results missing: a {a.stats} {a._consumer.assignment()}, " \
                f"b {b.stats} {b._consumer.assignment()}"
            time.sleep(0.5)
        time.sleep(3)  # anything published twice would show up now
    finally:
        a.stop()
        if b is not None:
            b.stop()
        for thread in threads:
            thread.join(30)
        gate.close()
    assert b.stats["results"] > 0, "b made none of the results: the test did not move partitions"
    assert_exactly_once(kafka, influx, range(0, 5), group)
