"""Plausibility of input records beyond the schema (processor/plausible.py): each rule on its own, then the
processor dead-lettering such records on the real broker (with the real InfluxDB engine) and publishing only
the true ones."""

from __future__ import annotations

import json

import pytest

from srv6pm import records
from srv6pm.processor import plausible
from srv6pm.processor.plausible import Implausible
from srv6pm.processor.stages import DelayStage, LossStage
from srv6pm.records import CounterRecord, StampSample

S = 1_000_000_000
NOW = 1_790_000_000 * S  # 2026-09-21
PERIOD_S = 2.0
K = NOW // (2 * S) - 10  # a period 20 s ago


def counter(period=K, packets=10, nbytes=1000, read_ns=None, period_s=PERIOD_S):
    return CounterRecord("r1", "f1", "ingress", period, period_s, period % 2, packets, nbytes, read_ns)


def sample(t1=NOW - 5 * S, fwd=2_000_000, hold=50_000, bwd=3_000_000, lost=False):
    if lost:
        return StampSample("s1", 1, PERIOD_S, t1, None, None, None, True)
    return StampSample("s1", 1, PERIOD_S, t1, t1 + fwd, t1 + fwd + hold, t1 + fwd + hold + bwd, False)


@pytest.mark.parametrize("record", [
    counter(), counter(packets=0, nbytes=0), counter(packets=2**64 - 1, nbytes=2**64 - 1),
    counter(read_ns=(K + 1) * 2 * S + S), counter(read_ns=(K + 1) * 2 * S), counter(read_ns=(K + 2) * 2 * S - 1),
    counter(period=1), counter(period=NOW // (2 * S)),  # the current period (its block cannot be read yet, but
    counter(period=NOW // (2 * S) + 29),                # the exporter's clock may be ahead of ours by 60 s)
])
def test_plausible_counters_pass(record):
    assert plausible.counters(record, NOW) is record


@pytest.mark.parametrize("record, reason", [
    (counter(packets=2**80, nbytes=2**90), "packets 1208925819614629174706176 does not fit in 64 bits"),
    (counter(packets=1, nbytes=2**64), "bytes 18446744073709551616 does not fit in 64 bits"),
    (counter(packets=10, nbytes=9), "bytes 9 is less than packets 10"),
    (counter(period=2_200_000_000), "period 2200000000 of 2 s starts at 2109-06-"),  # 2112 at T=2.1: same
    (counter(period=NOW // (2 * S) + 31), "after the time now (2026-09-21"),
    (counter(period=K, period_s=2.1), "starts at 2029-"),  # the index of one period length, read as another
    (counter(read_ns=(K + 1) * 2 * S - 1), "is not in the period after period"),
    (counter(read_ns=(K + 2) * 2 * S), "is not in the period after period"),
    (counter(period=K - 1000, read_ns=(K + 1) * 2 * S + S), "is not in the period after period"),
    (counter(period=K, read_ns=2**70), "read_ns 1180591620717411303424 (beyond the year 9999) is after the time now"),
])
def test_implausible_counters_are_refused_with_a_reason(record, reason):
    with pytest.raises(Implausible) as caught:
        plausible.counters(record, NOW)
    message = str(caught.value)
    assert message.startswith("implausible: ") and reason in message, message


@pytest.mark.parametrize("value", [
    sample(), sample(lost=True), sample(t1=NOW + 59 * S, fwd=0, hold=0, bwd=0),
    sample(fwd=-37 * S, bwd=37 * S),  # a reflector on TAI, a sender on UTC
    sample(t1=1000),  # old records pass (a processor may re-read days of them)
])
def test_plausible_stamp_samples_pass(value):
    assert plausible.stamp(value, NOW) is value


@pytest.mark.parametrize("value, reason", [
    (StampSample("s1", 1, PERIOD_S, NOW - S, NOW, NOW, 2**70, False), "t4 1180591620717411303424 does not fit in 64 bits"),
    (StampSample("s1", 1, PERIOD_S, NOW - S, NOW, NOW, 2**63, False), "t4 9223372036854775808 (2262-04-11T23:47:16Z) is after the time now (2026-09-21T14:13:20Z)"),
    (StampSample("s1", 1, PERIOD_S, 2**64, None, None, None, True), "t1 18446744073709551616 does not fit in 64"),
    (StampSample("s1", 1, PERIOD_S, NOW + 120 * S, None, None, None, True), "is after the time now"),
    (sample(t1=NOW - 500 * S, bwd=200 * S), "t4 - t1 = 200.002 s: a reply comes back within 120 s"),
    (sample(t1=NOW - 500 * S, hold=130 * S, fwd=0, bwd=0), "t3 - t2 = 130 s: a reflector answers within 120 s"),
    (sample(t1=NOW - 500 * S, fwd=7200 * S, bwd=-7200 * S + S), "t2 - t1 = 7200 s: the clocks of sender and "),
])
def test_implausible_stamp_samples_are_refused_with_a_reason(value, reason):
    with pytest.raises(Implausible) as caught:
        plausible.stamp(value, NOW)
    message = str(caught.value)
    assert message.startswith("implausible: ") and reason in message, message


def test_the_stages_check_plausibility_after_decoding():
    """What the processor's loop calls: a record the schema accepts, whose result could not be true."""
    bad = counter(period=2_200_000_000).to_json()
    records.decode_counters(bad)  # the schema and the decoder accept it
    with pytest.raises(records.RecordError, match="^implausible: period 2200000000 of 2 s starts at 2109"):
        LossStage(1.0).decode(bad)
    t1 = 1_700_000_000 * S
    reply = StampSample("s1", 1, PERIOD_S, t1, t1 + 1000, t1 + 2000, 2**70, False).to_json()
    with pytest.raises(records.RecordError, match="^implausible: t4 1180591620717411303424 "):
        DelayStage(1.0, 5.0).decode(reply)


@pytest.mark.services
def test_the_processor_dead_letters_implausible_records_and_publishes_the_rest(fresh_broker, influxdb):
    import base64
    import uuid

    from test_processor import BASE_PERIOD, PERIOD, block, options, produce, read_topic, run_until

    from srv6pm.config import InfluxSettings, KafkaSettings
    from srv6pm.influx import influxql
    from srv6pm.kafka import ensure_topics
    from srv6pm.processor.service import Processor

    kafka = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(kafka, {records.COUNTERS: 2, records.STAMP: 1, records.LOSS: 2, records.DELAY: 1,
                          records.ALARMS: 2, records.DEADLETTER: 1})
    name = "t" + uuid.uuid4().hex[:12]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    influx = InfluxSettings(url=influxdb.url, bucket=name)
    future = 2_200_000_000 + (2_200_000_000 % 2)  # period_start in 2109 with period_s 2
    bad = [
        ("f1", CounterRecord("r1", "f1", "ingress", future, PERIOD, future % 2, 10, 1000).to_json()),
        ("f1", CounterRecord("r4", "f1", "egress", future, PERIOD, future % 2, 10, 1000).to_json()),
        ("f2", CounterRecord("r1", "f2", "ingress", BASE_PERIOD, PERIOD, 0, 2**80, 2**81).to_json()),
    ]
    t1 = BASE_PERIOD * int(PERIOD * S) + 1000
    stamp_bad = ("s1", StampSample("s1", 1, PERIOD, t1, t1 + 10, t1 + 20, 2**70, False, "r1", "r4").to_json())
    produce(kafka, [block("f1", "ingress", BASE_PERIOD, 10), *bad, block("f1", "egress", BASE_PERIOD, 9)])
    produce(kafka, [stamp_bad], topic=records.STAMP)
    processor = Processor(kafka, influx, options())
    try:
        run_until(processor, lambda: processor.stats["results"] == 1 and processor.stats["deadletters"] == 4)
    finally:
        processor.close()
    letters = [r for _, _, _, r in read_topic(kafka, records.DEADLETTER)]
    for letter in letters:
        records.validate(records.DEADLETTER, letter)
    reasons = sorted(letter["reason"] for letter in letters)
    assert all(r.startswith("implausible: ") for r in reasons), reasons
    assert sum("period 2200000000 of 2 s starts at 2109-" in r for r in reasons) == 2
    assert any("packets 1208925819614629174706176 does not fit in 64 bits" in r for r in reasons)
    assert any(r.startswith("implausible: t4 1180591620717411303424 ") for r in reasons)
    assert sorted(base64.b64decode(x["raw"]) for x in letters) == sorted(v for _, v in [*bad, stamp_bad])
    results = [r for _, _, _, r in read_topic(kafka, records.LOSS)]
    assert [(r["flow"], r["period"], r["lost_packets"]) for r in results] == [("f1", BASE_PERIOD, 1)]
    assert read_topic(kafka, records.DELAY) == []
    assert "2109" not in json.dumps(results)
