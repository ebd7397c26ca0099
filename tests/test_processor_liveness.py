"""The processor's liveness store against the real broker and the real InfluxDB engine, and the overview
dashboard's liveness panel over the points it wrote.

Liveness alarms (as the node exporters publish them), an alarm of another kind and records that are no alarm
go onto srv6pm.alarms; the store must write exactly the liveness alarms as ``liveness`` points, send each bad
record to srv6pm.deadletter with its reason (as the processor does), commit every record it read, and the
committed dashboard's panel query must show each session's state (down, then up). InfluxDB's refusals are
told apart as the processor's writer does: a point refused as data (a field type conflict) sends exactly its
alarm record to srv6pm.deadletter and the other points are stored; an unknown database holds the batch with
one clear error and stores it once the database exists.
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
from prometheus_client import CollectorRegistry

from srv6pm import decode, records
from srv6pm import metrics as metrics_mod
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.dashboards import generate
from srv6pm.dashboards.panels import interpolate, queries
from srv6pm.influx import InfluxWriter, influxql
from srv6pm.kafka import ensure_topics
from srv6pm.processor.liveness import LivenessStore, liveness_lines

pytestmark = pytest.mark.services

T0 = 1_764_000_000 * 10**9  # a whole second


def alarm(session, raised, time_ns, kind="liveness", last_reply_ns=None):
    extra = dict(time_ns=time_ns, last_reply_ns=last_reply_ns, sender="r1", reflector="r4") if kind == "liveness" else {}
    return records.Alarm(kind=kind, subject=session, direction="forward" if kind == "delay_p99_us" else None,
                         period=time_ns // 10**9, period_start="2025-11-24T16:00:00Z", period_s=1.0, value=3,
                         threshold=3, raised=raised, **extra).to_json()


def produce(bootstrap: str, values: list[bytes], partition: int = 0, key: bytes = b"s1") -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(records.ALARMS, key=key, value=value, partition=partition)
    producer.flush()
    producer.close()


def new_database(influxdb) -> InfluxSettings:
    name = "t" + uuid.uuid4().hex[:12]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    return InfluxSettings(url=influxdb.url, bucket=name)


def committed(bootstrap: str, group: str, partitions: int) -> list[int | None]:
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return [reader.committed(TopicPartition(records.ALARMS, p)) for p in range(partitions)]
    finally:
        reader.close()


def dead_letters(bootstrap: str) -> list[tuple[bytes, dict]]:
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                           auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        reader.assign([TopicPartition(records.DEADLETTER, 0)])
        return [(m.key, json.loads(m.value)) for m in reader]
    finally:
        reader.close()


def step_until(store: LivenessStore, stat: str, count: int) -> None:
    """Step until ``stats[stat]`` reaches ``count``; against a hang only, a step still retrying after 60 s is
    stopped (it raises srv6pm.consume.Stopped)."""
    deadline = time.monotonic() + 60
    watchdog = threading.Timer(60, store.stop)
    watchdog.start()
    try:
        while store.stats[stat] < count:
            assert time.monotonic() < deadline, store.stats
            store.step()
    finally:
        watchdog.cancel()


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
    assert store.stats == {"records": 6, "stored": 3, "bad": 2, "refused": 0}
    assert committed(fresh_broker, store.group, 1) == [6]

    # The two bad records are dead letters of the processor's shape, with their reasons, keys and bytes.
    got = dead_letters(fresh_broker)
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


def test_points_refused_for_a_field_type_conflict_dead_letter_exactly_their_alarms_and_the_rest_is_stored(
        fresh_broker, influxdb):
    """last_reply_ns is a float in the shard of T0: every liveness point of that week with a last reply is refused
    (InfluxDB 1.x answers 400 partial write, dropped=N, and keeps the others); those without one are stored."""
    kafka = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(kafka, {records.ALARMS: 2, records.DEADLETTER: 1})
    influx = new_database(influxdb)
    writer = InfluxWriter(influx)
    writer.write([f"liveness,reflector=r9,sender=r9,session=other last_reply_ns=0.5 {T0}"])
    writer.close()
    s = 10**9
    first = [alarm("s1", True, T0 + 1 * s),  # stored
             alarm("s1", False, T0 + 4 * s, last_reply_ns=T0 + 4 * s - 1),  # refused
             b"{not json",  # bad
             alarm("s2", True, T0 + 2 * s),  # stored
             alarm("s2", True, T0, kind="delay_p99_us")]  # skipped
    second = [alarm("s3", True, T0 + 3 * s, last_reply_ns=T0 + 2 * s),  # refused
              alarm("s4", True, T0 + 5 * s),  # stored
              alarm("s5", True, T0 + 6 * s)]  # stored
    produce(fresh_broker, first, partition=0, key=b"k0")
    produce(fresh_broker, second, partition=1, key=b"k1")
    registry = CollectorRegistry()
    store = LivenessStore(kafka, influx, "p" + uuid.uuid4().hex[:8], "test", metrics=metrics_mod.get(registry))
    try:
        step_until(store, "records", len(first) + len(second))
    finally:
        store.close()
    assert store.stats == {"records": 8, "stored": 4, "bad": 1, "refused": 2}
    assert committed(fresh_broker, store.group, 2) == [len(first), len(second)]

    (res,) = influxql(influx, "SELECT up FROM liveness WHERE session != 'other' GROUP BY session")
    got = {series["tags"]["session"]: series["values"] for series in res["series"]}
    assert got == {"s1": [[T0 + 1 * s, 0]], "s2": [[T0 + 2 * s, 0]], "s4": [[T0 + 5 * s, 0]], "s5": [[T0 + 6 * s, 0]]}

    letters = dead_letters(fresh_broker)
    assert [letter["reason"].startswith("not JSON: ") for _, letter in letters] == [True, False, False]
    refused = sorted((letter["partition"], letter["offset"], key, letter) for key, letter in letters[1:])
    assert [(p, o, key) for p, o, key, _ in refused] == [(0, 1, b"k0"), (1, 0, b"k1")]
    for (partition, offset, _, letter), raw in zip(refused, (first[1], second[0]), strict=True):
        records.validate(records.DEADLETTER, letter)
        assert base64.b64decode(letter["raw"]) == raw  # the alarm record as consumed
        assert letter["reason"].startswith("InfluxDB refused its point: HTTP 400: partial write: field type "
                                           "conflict: input field \"last_reply_ns\" on measurement \"liveness\"")
        (point,) = liveness_lines(decode.decode_alarm(raw))
        assert letter == {**records.dead_letter(records.ALARMS, partition, offset, letter["reason"], raw, store.group),
                          "point": point}
    assert registry.get_sample_value("srv6pm_store_refused_points_total",
                                     {"component": "processor", "status": "400"}) == 2
    assert registry.get_sample_value("srv6pm_deadletters_total",
                                     {"component": "processor", "topic": records.ALARMS}) == 3


def test_an_unknown_database_holds_the_points_says_what_to_fix_once_and_stores_them_once_it_exists(
        fresh_broker, influxdb, caplog):
    kafka = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(kafka, {records.ALARMS: 1, records.DEADLETTER: 1})
    name = "t" + uuid.uuid4().hex[:12]
    influx = InfluxSettings(url=influxdb.url, bucket=name)  # no such database yet: InfluxDB refuses every write
    values = [alarm("s1", True, T0), alarm("s2", True, T0 + 10**9), alarm("s1", True, T0, kind="delay_p99_us"),
              alarm("s1", False, T0 + 3 * 10**9, last_reply_ns=T0 + 2 * 10**9)]
    produce(fresh_broker, values)
    registry = CollectorRegistry()
    store = LivenessStore(kafka, influx, "p" + uuid.uuid4().hex[:8], "test", retry_max_s=0.2,
                          metrics=metrics_mod.get(registry))
    attempts = []
    store._store.write = lambda lines, write=store._store.write: (attempts.append(len(lines)), write(lines))[1]
    held = []

    def misconfigured():
        return registry.get_sample_value("srv6pm_store_misconfigured", {"component": "processor",
                                                                       "cause": "not_found"})

    def create_database_later():
        deadline = time.monotonic() + 60
        while len(attempts) < 4 and time.monotonic() < deadline:  # several refused attempts
            time.sleep(0.05)
        held.append((store.stats["stored"], misconfigured()))
        influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    creator = threading.Thread(target=create_database_later)
    creator.start()
    caplog.set_level(logging.DEBUG, logger="srv6pm.processor.liveness")
    try:
        step_until(store, "stored", 3)
        store.step()  # nothing more to read: nothing written again
    finally:
        creator.join()
        store.close()
    assert held == [(0, 1)] and misconfigured() == 0
    assert len(attempts) >= 5 and set(attempts) == {3}  # the whole batch each time: nothing split, nothing dropped
    assert store.stats == {"records": 4, "stored": 3, "bad": 0, "refused": 0}
    assert committed(fresh_broker, store.group, 1) == [4]
    assert dead_letters(fresh_broker) == []
    (res,) = influxql(influx, "SELECT up, last_reply_ns FROM liveness GROUP BY session")
    got = {series["tags"]["session"]: series["values"] for series in res["series"]}
    assert got == {"s1": [[T0, 0, None], [T0 + 3 * 10**9, 1, T0 + 2 * 10**9]], "s2": [[T0 + 10**9, 0, None]]}

    said = [r for r in caplog.records if r.name == "srv6pm.processor.liveness"]
    errors = [r for r in said if r.levelname == "ERROR"]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # said once, not once per retry
    assert errors[0].cause == "not_found" and "--influx-bucket" in errors[0].error and name in errors[0].error
    warnings = [r.getMessage() for r in said if r.levelname == "WARNING"]
    assert warnings == ["waiting for influxdb_liveness", "influxdb_liveness is back",
                        "InfluxDB accepts the writes again"], warnings
    assert sum(r.getMessage() == "still waiting for influxdb_liveness" for r in said) >= 3
