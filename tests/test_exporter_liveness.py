"""The exporter's STAMP path liveness on the real broker: a session with ``liveness`` against a real reflector
on loopback; the reflector is closed (the path is cut) and started again (restored). The liveness alarm and
the path_down / path_up events must appear on ``srv6pm.alarms`` and ``srv6pm.events`` and satisfy their
schemas; the exporter publishes them itself (no processor runs). No root needed."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

from srv6pm import records
from srv6pm.config import KafkaSettings
from srv6pm.exporter.probes import Probes
from srv6pm.kafka import ensure_topics
from srv6pm.lab.runner import ResultReader
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.stamp.reflector import Reflector, ReflectorConfig

GUARD_S = 60  # only against a hang: nothing here is timed


def _wait_for(reader: ResultReader, kind: str, raised: bool, seen: list) -> dict:
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        seen += reader.poll(0.2)
        for doc in seen:
            if doc.get("kind") == kind and doc.get("raised") is raised:
                return doc
    raise AssertionError(f"no {kind} alarm with raised={raised} on the broker; saw {seen}")


def test_a_cut_path_raises_the_liveness_alarm_and_clears_it_when_restored(broker):
    kafka = KafkaSettings(bootstrap=broker)
    ensure_topics(kafka, {records.ALARMS: 4, records.EVENTS: 1})
    alarms = ResultReader(kafka, (records.ALARMS,))
    events = ResultReader(kafka, (records.EVENTS,))
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=20)
    probes = Probes("r1", 2.0, producer, boot_id="boot-1")
    reflector = Reflector(ReflectorConfig(bind="::1", port=0)).start()
    port = reflector.address[1]
    session = validate.stamp_session(pb.StampSession(name="s-live", destination="::1", port=port, rate=50,
                                                     reflector_node="r4", liveness=True,
                                                     liveness_down_after=3, liveness_up_after=2))
    seen: list = []
    try:
        probes.start_session(session)
        deadline = time.monotonic() + GUARD_S
        while probes.session_status()[0].received < 5:  # the path works first
            assert time.monotonic() < deadline, "no replies from the reflector"
            time.sleep(0.05)
        reflector.close()
        down = _wait_for(alarms, "liveness", True, seen)
        reflector = Reflector(ReflectorConfig(bind="::1", port=port)).start()
        up = _wait_for(alarms, "liveness", False, seen)
    finally:
        probes.stop()
        reflector.close()
        producer.close()
    for doc in (down, up):
        records.validate(records.ALARMS, doc)
        assert (doc["subject"], doc["sender"], doc["reflector"], doc["direction"]) == ("s-live", "r1", "r4", None)
        assert doc["period_s"] == 2.0 and doc["period"] == doc["time_ns"] // 2_000_000_000
    assert (down["value"], down["threshold"], up["value"], up["threshold"]) == (3, 3, 2, 2)
    assert down["last_reply_ns"] is not None and down["last_reply_ns"] <= down["time_ns"] < up["time_ns"]
    assert up["last_reply_ns"] > down["time_ns"]  # the reply that completed the recovery
    assert [d["raised"] for d in seen if d.get("kind") == "liveness"] == [True, False]

    got: list = []
    deadline = time.monotonic() + GUARD_S
    while sum(1 for e in got if e["kind"] in ("path_down", "path_up")) < 2:
        assert time.monotonic() < deadline, f"no path_down and path_up events; saw {got}"
        got += events.poll(0.2)
    alarms.close()
    events.close()
    path = [e for e in got if e["kind"] in ("path_down", "path_up")]
    for e in path:
        assert records.decode_event(records.encode(e)).node == "r1"
    assert [(e["kind"], e["object"], e["boot_id"], e["generation"]) for e in path] == [
        ("path_down", "stamp_session s-live", "boot-1", 0), ("path_up", "stamp_session s-live", "boot-1", 0)]
    assert "3 consecutive test packets to r4 without a reply" in path[0]["detail"]


def test_liveness_records_satisfy_the_schemas_and_other_kinds_keep_their_members():
    from srv6pm.exporter.liveness import alarm, event
    from srv6pm.stamp.liveness import Change
    s = pb.StampSession(name="s1", destination="fcff:4::2")  # no reflector_node: the address names it
    down = Change(up=False, count=3, threshold=3, time_ns=5_000_000_123, last_reply_ns=None)
    a = alarm(down, s, "r1", 2.0)
    doc = a.to_dict()
    records.validate(records.ALARMS, doc)
    assert (doc["raised"], doc["period"], doc["period_start"], doc["reflector"], doc["last_reply_ns"]) == (
        True, 2, "1970-01-01T00:00:04Z", "fcff:4::2", None)
    e = event(down, s, "r1", None).to_dict()
    records.validate(records.EVENTS, e)
    assert e["kind"] == "path_down" and "no reply yet" in e["detail"]
    without = {k: v for k, v in doc.items() if k not in records.LIVENESS_FIELDS}
    with pytest.raises(records.RecordError, match="time_ns"):  # a liveness alarm needs its own members
        records.validate(records.ALARMS, without)
    loss = records.Alarm(kind="loss_ratio", subject="f1", direction=None, period=1, period_start="1970-01-01T00:00:02Z",
                         period_s=2.0, value=0.5, threshold=0.01, raised=True).to_dict()
    assert set(loss) == {"v", "kind", "subject", "direction", "period", "period_start", "period_s", "value",
                         "threshold", "raised"}
    records.validate(records.ALARMS, loss)
