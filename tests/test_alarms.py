"""Threshold alarms (processor/alarms.py): the state machine and the srv6pm.alarms records.

The processor-level guarantees (published with their results, read back after
a restart, nothing doubled) are in test_processor.py against the real broker.
"""

import pytest

from srv6pm import records
from srv6pm.processor.alarms import AlarmRules, Alarms

P = 900_000_000


def loss(period, lost, tx=1000, complete=True, flow="f1"):
    return {"v": 1, "flow": flow, "period": period, "period_start": "2027-01-15T08:00:00Z", "period_s": 1.0,
            "tx_packets": tx if complete else None, "rx_packets": tx - lost if complete else 1000,
            "lost_packets": lost if complete else None, "loss_ratio": lost / tx if complete else None,
            "complete": complete}


def delay(period, direction, p99_us, samples=10):
    return {"v": 1, "session": "s1", "period": period, "period_start": "2027-01-15T08:00:00Z", "period_s": 1.0,
            "direction": direction, "samples": samples, "lost": 0, "p99_us": p99_us if samples else None}


def transitions(alarms, results, partition=0):
    out = []
    for r in results:
        a = alarms.evaluate(partition, r)
        if a is not None:
            out.append((a.subject, a.direction, a.period - P, a.raised))
    return out


def test_only_changes_make_records():
    alarms = Alarms(AlarmRules(loss_ratio=0.01), ("loss_ratio",))
    lost = [0, 0, 20, 50, 11, 10, 0, 30]  # per 1000: 2 %, 5 %, 1.1 % above; 1 % is not above 1 %
    assert transitions(alarms, [loss(P + i, n) for i, n in enumerate(lost)]) == [
        ("f1", None, 2, True), ("f1", None, 5, False), ("f1", None, 7, True)]
    assert alarms.raised() == [("loss_ratio", "f1", None)]


def test_the_record_satisfies_its_schema_and_says_what_crossed_what():
    alarms = Alarms(AlarmRules(loss_ratio=0.01), ("loss_ratio",))
    alarm = alarms.evaluate(3, loss(P, 1, tx=50))
    doc = alarm.to_dict()
    records.validate(records.ALARMS, doc)
    assert doc == {"v": 1, "kind": "loss_ratio", "subject": "f1", "direction": None, "period": P,
                   "period_start": "2027-01-15T08:00:00Z", "period_s": 1.0, "value": 0.02, "threshold": 0.01,
                   "raised": True}
    assert alarm.key == "f1"


@pytest.mark.parametrize("change, where", [
    ({"kind": "loss"}, "kind"),
    ({"raised": "yes"}, "raised"),
    ({"direction": "forward"}, "direction"),  # a loss alarm has no direction
    ({"threshold": -1}, "threshold"),
    ({"subject": ""}, "subject"),
])
def test_the_schema_refuses_bad_alarms(change, where):
    doc = Alarms(AlarmRules(), ("loss_ratio",)).evaluate(0, loss(P, 500)).to_dict()
    with pytest.raises(records.RecordError, match=where):
        records.validate(records.ALARMS, {**doc, **change})


def test_a_delay_alarm_needs_a_direction():
    doc = Alarms(AlarmRules(delay_p99_us=10.0), ("delay_p99_us",)).evaluate(0, delay(P, "forward", 11.0)).to_dict()
    records.validate(records.ALARMS, doc)
    with pytest.raises(records.RecordError, match="direction"):
        records.validate(records.ALARMS, {**doc, "direction": None})


def test_incomplete_periods_are_never_evaluated():
    alarms = Alarms(AlarmRules(loss_ratio=0.01), ("loss_ratio",))
    assert transitions(alarms, [loss(P, 100), loss(P + 1, 0, complete=False), loss(P + 2, 0)]) == [
        ("f1", None, 0, True), ("f1", None, 2, False)]


def test_an_older_result_changes_nothing():
    alarms = Alarms(AlarmRules(loss_ratio=0.01), ("loss_ratio",))
    assert transitions(alarms, [loss(P + 5, 100), loss(P + 4, 0), loss(P + 5, 0), loss(P + 6, 0)]) == [
        ("f1", None, 5, True), ("f1", None, 6, False)]


def test_zero_threshold_means_any_lost_packet_and_a_flow_without_packets_is_not_evaluated():
    alarms = Alarms(AlarmRules(loss_ratio=0.0), ("loss_ratio",))
    empty = {**loss(P + 1, 0), "tx_packets": 0, "rx_packets": 0, "loss_ratio": None}
    assert transitions(alarms, [loss(P, 1, tx=100_000), empty, loss(P + 2, 0)]) == [
        ("f1", None, 0, True), ("f1", None, 2, False)]


def test_delay_alarms_are_per_direction_and_skip_periods_without_samples():
    alarms = Alarms(AlarmRules(loss_ratio=None, delay_p99_us=5000.0), ("delay_p99_us",))
    results = [delay(P, "forward", 6000.0), delay(P, "backward", 4000.0),
               delay(P + 1, "forward", None, samples=0), delay(P + 1, "backward", 5000.1),
               delay(P + 2, "forward", 5000.0), delay(P + 2, "backward", 5000.1)]
    assert transitions(alarms, results) == [("s1", "forward", 0, True), ("s1", "backward", 1, True),
                                            ("s1", "forward", 2, False)]
    assert alarms.evaluate(0, loss(P + 3, 900)) is None  # the loss rule is off


def test_state_is_per_partition_and_forgotten_with_it():
    alarms = Alarms(AlarmRules(), ("loss_ratio",))
    assert transitions(alarms, [loss(P, 100)], partition=0) == [("f1", None, 0, True)]
    assert transitions(alarms, [loss(P, 100)], partition=1) == [("f1", None, 0, True)]
    alarms.forget([0])
    assert transitions(alarms, [loss(P + 1, 100)], partition=0) == [("f1", None, 1, True)]
    assert transitions(alarms, [loss(P + 1, 100)], partition=1) == []


def test_enabled_follows_the_rules_of_its_kinds():
    assert Alarms(AlarmRules(), ("loss_ratio",)).enabled
    assert not Alarms(AlarmRules(), ("delay_p99_us",)).enabled
    assert not Alarms(AlarmRules(loss_ratio=None), ("loss_ratio",)).enabled


@pytest.mark.parametrize("kw", [{"loss_ratio": -0.1}, {"delay_p99_us": float("nan")}])
def test_rules_refuse_bad_thresholds(kw):
    with pytest.raises(ValueError, match="must be a number >= 0"):
        AlarmRules(**kw)
