"""The processor's liveness store against the real broker and the real InfluxDB engine, and the overview
dashboard's liveness panel over the points it wrote.

Liveness alarms (as the node exporters publish them), an alarm of another kind and records that are no alarm
go onto srv6pm.alarms; the store must write exactly the liveness alarms as ``liveness`` points, send each bad
record to srv6pm.deadletter with its reason (as the processor does), commit every record it read, and the
committed dashboard's panel query must show each session's state (down, then up).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from srv6pm import decode, records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.dashboards import generate
from srv6pm.dashboards.panels import interpolate, queries
from srv6pm.influx import influxql
from srv6pm.kafka import ensure_topics
from srv6pm.processor.liveness import LivenessStore, liveness_lines

pytestmark = pytest.mark.services

T0 = 1_764_000_000 * 10**9  # a whole second


def alarm(session, raised, time_ns, kind="liveness", last_reply_ns=None):
    extra = dict(time_ns=time_ns, last_reply_ns=last_reply_ns, sender="r1", reflector="r4") if kind == "liveness" else {}
    return records.Alarm(kind=kind, subject=session, direction="forward" if kind == "delay_p99_us" else None,
                         period=time_ns // 10**9, period_start="2025-11-24T16:00:00Z", period_s=1.0, value=3,
                         threshold=3, raised=raised, **extra).to_json()


def produce(bootstrap: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(records.ALARMS, key=b"s1", value=value, partition=0)
    producer.flush()
    producer.close()


def step_until(store: LivenessStore, stat: str, count: int) -> None:
    deadline = time.monotonic() + 60  # against a hang only
    while store.stats[stat] < count:
        assert time.monotonic() < deadline, store.stats
        store.step()


def test_a_liveness_line_has_the_schema_s_names_and_leaves_out_an_unknown_last_reply():
    (text,) = liveness_lines(decode.decode_alarm(alarm("s1", True, T0)))
    assert text == f"liveness,reflector=r4,sender=r1,session=s1 count=3i,threshold=3i,up=0i {T0}"
    (text,) = liveness_lines(decode.decode_alarm(alarm("s1", False, T0 + 5, last_reply_ns=T0 + 1)))
    assert text == f"liveness,reflector=r4,sender=r1,session=s1 count=3i,last_reply_ns={T0 + 1}i,threshold=3i,up=1i {T0 + 5}"


def test_the_store_writes_liveness_alarms_and_the_panel_shows_the_path_state(fresh_broker, influxdb):
    kafka = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(kafka, {records.ALARMS: 1, records.DEADLETTER: 1})
    name = "t" + uuid.uuid4().hex[:12]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    influx = InfluxSettings(url=influxdb.url, bucket=name)
    no_sender = json.dumps({k: v for k, v in json.loads(alarm("s3", True, T0)).items() if k != "sender"}).encode()
    produce(fresh_broker, [alarm("s1", True, T0 + 2 * 10**9, last_reply_ns=T0 + 19 * 10**8),
                           alarm("s2", True, T0 + 3 * 10**9),
                           alarm("s1", True, T0, kind="delay_p99_us"),
                           b"{not json",
                           no_sender,
                           alarm("s1", False, T0 + 6 * 10**9, last_reply_ns=T0 + 6 * 10**9 - 1)])
    group = "p" + uuid.uuid4().hex[:8]
    store = LivenessStore(kafka, influx, group, "test")
    try:
        step_until(store, "records", 6)
    finally:
        store.close()
    assert store.stats == {"records": 6, "stored": 3, "bad": 2}
    reader = KafkaConsumer(bootstrap_servers=fresh_broker, group_id=store.group, enable_auto_commit=False)
    try:
        assert reader.committed(TopicPartition(records.ALARMS, 0)) == 6
    finally:
        reader.close()

    # The two bad records are dead letters of the processor's shape, with their reasons, keys and bytes.
    letters = KafkaConsumer(bootstrap_servers=fresh_broker, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        letters.assign([TopicPartition(records.DEADLETTER, 0)])
        got = [(m.key, json.loads(m.value)) for m in letters]
    finally:
        letters.close()
    assert [key for key, _ in got] == [b"s1", b"s1"]
    for (_, letter), offset, raw in zip(got, (3, 4), (b"{not json", no_sender), strict=True):
        records.validate(records.DEADLETTER, letter)
        assert letter == records.dead_letter(records.ALARMS, 0, offset, letter["reason"], raw, store.group)
        assert base64.b64decode(letter["raw"]) == raw
    assert got[0][1]["reason"].startswith("not JSON: ")
    assert got[1][1]["reason"] == "schema: (record): 'sender' is a required property"

    overview = json.loads((generate.JSON_DIR / "srv6pm-overview.json").read_text())
    ((panel, target),) = [(p, t) for p, t in queries(overview) if p["title"] == "STAMP path liveness"]
    assert target["alias"] == "$tag_session"
    start_ms, end_ms = T0 // 10**6, T0 // 10**6 + 8000
    (res,) = influxql(influx, interpolate(target["query"], {}, start_ms, end_ms, 1.0))
    got = {s["tags"]["session"]: [(t // 10**9 - T0 // 10**9, up) for t, up in s["values"] if up is not None]
           for s in res["series"]}
    # s1: down from second 2, up again from second 6; s2: down from second 3 to the end of the range
    assert got == {"s1": [(2, 0), (3, 0), (4, 0), (5, 0), (6, 1), (7, 1), (8, 1)],
                   "s2": [(3, 0), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0)]}
    mappings = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert (mappings["0"]["text"], mappings["1"]["text"]) == ("down", "up")


def test_while_influxdb_refuses_the_points_the_store_says_so_once_and_once_when_it_takes_them(
        fresh_broker, influxdb, caplog):
    kafka = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(kafka, {records.ALARMS: 1})
    name = "t" + uuid.uuid4().hex[:12]
    influx = InfluxSettings(url=influxdb.url, bucket=name)  # no such database yet: InfluxDB refuses every write
    produce(fresh_broker, [alarm("s1", True, T0)])
    store = LivenessStore(kafka, influx, "p" + uuid.uuid4().hex[:8], "test", retry_max_s=0.2)
    refused = threading.Event()
    store._store.write = lambda lines, write=store._store.write: (refused.set(), write(lines))[1]

    def create_database_later():
        refused.wait(60)
        time.sleep(1.5)  # several refused attempts
        influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    creator = threading.Thread(target=create_database_later)
    creator.start()
    caplog.set_level(logging.DEBUG, logger="srv6pm.processor.liveness")
    try:
        step_until(store, "stored", 1)
    finally:
        creator.join()
        store.close()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "srv6pm.processor.liveness"]
    warnings = [text for level, text in said if level == "WARNING"]
    assert warnings == ["waiting for influxdb_liveness", "influxdb_liveness is back"], said
    assert sum(text == "still waiting for influxdb_liveness" for _, text in said) >= 2, said
    (res,) = influxql(influx, "SELECT up FROM liveness")
    assert res["series"][0]["values"] == [[T0, 0]], res
