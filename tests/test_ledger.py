"""The ledger's tail and the alarm state read back after a restart, on the real broker: the result topics'
records decoded by their typed decoders (srv6pm.decode), a record that is not one of its topic's left out."""

from __future__ import annotations

import json
import logging

import pytest
from kafka import KafkaConsumer, KafkaProducer

from srv6pm import records
from srv6pm.config import KafkaSettings
from srv6pm.kafka import ensure_topics
from srv6pm.processor.alarms import AlarmRules, Alarms
from srv6pm.processor.ledger import Ledger
from srv6pm.records import Alarm, DelayResult, LossResult

pytestmark = pytest.mark.services

START = "2025-11-24T16:00:00Z"


def loss(period: int, lost: int) -> LossResult:
    return LossResult("f1", period, START, 1.0, "r1", "r4", 100, 100 - lost, 10_000, 10_000 - 100 * lost, lost,
                      lost / 100, True)


def publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(topic, key=b"f1", value=value, partition=0)
    producer.flush()
    producer.close()


@pytest.fixture
def reader(fresh_broker):
    ensure_topics(KafkaSettings(bootstrap=fresh_broker), {records.LOSS: 1, records.DELAY: 1, records.ALARMS: 1})
    consumer = KafkaConsumer(bootstrap_servers=fresh_broker, group_id=None, enable_auto_commit=False)
    yield consumer
    consumer.close()


def test_the_ledger_holds_the_valid_results_of_its_tail_as_published(fresh_broker, reader, caplog):
    delay = DelayResult("s1", 5, START, 1.0, "forward", "r1", "r4", 10, 0, 1.0, 2.0, 3.0, 2.0, 3.0, 0.5)
    not_a_result = json.dumps({**loss(6, 0).to_dict(), "period": -1}).encode()  # JSON, with subject and period
    publish(fresh_broker, records.LOSS, [loss(5, 1).to_json(), b"{not json", not_a_result, loss(6, 0).to_json()])
    publish(fresh_broker, records.DELAY, [delay.to_json()])
    ledger = Ledger(records.LOSS, "flow")
    with caplog.at_level(logging.WARNING, logger="srv6pm.processor.ledger"):
        assert ledger.load(reader, [0], idle_s=0.3) == 2
    assert ledger.get(0, "f1", 5) == [loss(5, 1).to_dict()]
    assert ledger.get(0, "f1", 6) == [loss(6, 0).to_dict()]
    assert ledger.get(0, "f1", -1) is None
    reasons = [r.reason for r in caplog.records if r.getMessage() == "unreadable record on a result topic, skipped"]
    assert len(reasons) == 2 and reasons[0].startswith("not JSON") and reasons[1].startswith("schema: period")
    delays = Ledger(records.DELAY, "session")
    assert delays.load(reader, [0], idle_s=0.3) == 1
    assert delays.get(0, "s1", 5) == [delay.to_dict()]


def test_the_alarm_state_comes_back_from_the_valid_alarms_of_the_tail(fresh_broker, reader):
    def alarm(k, up, **changes):
        return json.dumps({**Alarm("loss_ratio", "f1", None, k, START, 1.0, 0.5, 0.01, up).to_dict(),
                           **changes}).encode()
    publish(fresh_broker, records.ALARMS, [
        alarm(5, True),
        alarm(6, False, direction="forward"),  # not an alarm: a loss_ratio alarm has no direction
        alarm(7, False, period="7"),  # not an alarm either: a period is an integer
        Alarm("delay_p99_us", "s1", "forward", 5, START, 1.0, 900.0, 500.0, True).to_json(),  # another kind
    ])
    alarms = Alarms(AlarmRules(loss_ratio=0.01), ("loss_ratio",))
    assert alarms.load(reader, [0]) == 1
    assert alarms.raised() == [("loss_ratio", "f1", None)]  # period 5 raised it; 6 and 7 are no alarms
    # The state is that of period 5: period 6 back under the threshold clears it, once.
    cleared = alarms.evaluate(0, loss(6, 0).to_dict())
    assert cleared is not None and cleared.raised is False and alarms.raised() == []
