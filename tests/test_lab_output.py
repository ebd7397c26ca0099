"""The lab's result table: rows per result and alarm, and the summary at the end."""

import io
import json
import time

import pytest

from srv6pm.lab.output import JsonLines, ResultTable

START = "2027-01-15T08:00:00Z"


def loss(period, tx, rx, complete=True, flow="f1"):
    return {"v": 1, "flow": flow, "period": period, "period_start": START, "period_s": 1.0,
            "tx_packets": tx if complete else None, "rx_packets": rx, "lost_packets": tx - rx if complete else None,
            "loss_ratio": (tx - rx) / tx if complete else None, "complete": complete,
            "missing": None if complete else "ingress"}


def delay(period, direction, mean_us, samples=10, lost=0):
    return {"v": 1, "session": "s1", "period": period, "period_start": START, "period_s": 1.0,
            "direction": direction, "samples": samples, "lost": lost, "min_us": mean_us - 100, "mean_us": mean_us,
            "max_us": mean_us + 300, "p50_us": mean_us, "p99_us": mean_us + 200, "jitter_us": 12.5}


def alarm(period, raised, value):
    return {"v": 1, "kind": "loss_ratio", "subject": "f1", "direction": None, "period": period,
            "period_start": START, "period_s": 1.0, "value": value, "threshold": 0.01, "raised": raised}


def test_rows_and_summary():
    out = io.StringIO()
    table = ResultTable(out)
    table.header()
    for r in [loss(7, 0, 400, complete=False), loss(8, 1000, 1000), loss(9, 1000, 985), alarm(9, True, 0.015),
              loss(10, 1000, 1000), alarm(10, False, 0.0), loss(11, 1000, 970),
              alarm(11, True, 0.03), delay(8, "forward", 20_000), delay(9, "forward", 22_000, samples=30, lost=1)]:
        table.row(r)
    table.summary()
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith("period start (UTC)")
    assert "loss   incomplete: no ingress block (tx -, rx 400)" in text
    assert "lost    15  (1.500 %)  LOSS" in text
    assert "f1                     9  ALARM  raised   loss_ratio: 0.0150 > 0.0100" in text
    assert "f1                    10  ALARM  cleared  loss_ratio: 0.0000 <= 0.0100" in text
    # Summary: complete periods only; the mean delay is weighted by samples; the last alarm is still raised.
    assert "f1                  4           1        4000        3955        45   1.125" in text
    assert "s1            forward           2       40      1    19.900    21.500        22.200    22.300" in text
    assert lines[-1] == "alarms still raised: f1 loss_ratio"


def directed(period, direction, lost, forward, backward, session="s1"):
    """A delay record of a session with Direct Measurement (None: the period's direction is not known)."""
    r = dict(delay(period, direction, 20_000, lost=lost), session=session)
    return r if forward is None else dict(r, lost_forward=forward, lost_backward=backward)


def test_rows_say_which_way_test_packets_were_lost_and_the_summary_sums_where_it_was_known():
    out = io.StringIO()
    table = ResultTable(out)
    for r in [directed(8, "forward", 0, 0, 0), directed(9, "forward", 3, 2, 1), directed(10, "forward", 2, None, None),
              directed(11, "forward", 1, 0, 0), directed(12, "forward", 0, None, None),
              directed(8, "forward", 4, None, None, session="s2")]:
        table.row(r)
    table.summary()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("jitter 0.013 ms")  # nothing lost, nothing more to say
    assert lines[1].endswith("jitter 0.013 ms  LOSS  forward 2, backward 1")
    assert lines[2].endswith("jitter 0.013 ms  LOSS")  # lost, direction not known: never "forward 0"
    assert lines[3].endswith("LOSS  forward 0, backward 0")  # lost in neither direction (never sent, not answered)
    assert lines[5].endswith("jitter 0.013 ms  LOSS")
    assert any(line.endswith("lost fwd  lost back  periods dir unknown") for line in lines)
    (s1,) = [line for line in lines if line.startswith("s1  ")]
    (s2,) = [line for line in lines if line.startswith("s2  ")]
    assert s1.split()[-3:] == ["2", "1", "1"] and s1.split()[4] == "6"  # lost 6: 2 forward, 1 backward, 2 + 1 not
    assert s2.split()[-3:] == ["-", "-", "1"]  # no Direct Measurement: not known, never 0
    totals = {x["session"]: x for x in table.totals()["sessions"]}
    assert [(t["lost"], t["lost_forward"], t["lost_backward"], t["direction_unknown_periods"])
            for t in (totals["s1"], totals["s2"])] == [(6, 2, 1, 1), (4, None, None, 1)]


def test_the_summary_has_no_direction_columns_when_no_session_had_direct_measurement():
    out = io.StringIO()
    table = ResultTable(out)
    table.row(delay(8, "forward", 20_000, lost=2))
    table.summary()
    assert "lost fwd" not in out.getvalue()
    assert out.getvalue().splitlines()[-1].endswith("20.300")


def test_summary_without_results():
    out = io.StringIO()
    ResultTable(out).summary()
    assert out.getvalue() == "\nno results yet\n"


def traffic(flow, sent, due, rate=100.0, seconds=10.0):
    return {"record": "traffic", "flow": flow, "rate": rate, "sent_rate": round(sent / seconds, 1), "sent": sent,
            "due": due, "seconds": seconds, "reached": sent >= 0.95 * due - 1}


def test_json_lines_are_exactly_the_records_then_the_lab_s_own_and_a_summary_last():
    out = io.StringIO()
    view = JsonLines(out)
    view.header()
    records = [loss(8, 1000, 999), alarm(8, True, 0.001), delay(8, "forward", 20_000), traffic("f2", 200, 1001)]
    for r in records[:3]:
        view.row(r)
    view.traffic(records[3])
    view.summary()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[:4] == records
    assert lines[4] == {"record": "summary",
                        "flows": {"f1": {"periods": 1, "incomplete": 0, "tx_packets": 1000, "rx_packets": 999,
                                         "lost_packets": 1, "loss_ratio": 0.001, "segments": {}}},
                        "sessions": [{"session": "s1", "direction": "forward", "periods": 1, "samples": 10,
                                      "lost": 0, "min_us": 19_900, "mean_us": 20_000.0, "worst_p99_us": 20_200,
                                      "max_us": 20_300, "lost_forward": None, "lost_backward": None,
                                      "direction_unknown_periods": 0}],
                        "paths": {},
                        "alarms_raised": [{"kind": "loss_ratio", "subject": "f1", "direction": None}],
                        "traffic_below_rate": [records[3]]}


def test_every_kind_of_json_line_passes_the_published_schema_and_a_wrong_one_does_not():
    from lab_schema import lab_output_validator
    out = io.StringIO()
    view = JsonLines(out)
    view.row(with_segments(loss(8, 1000, 995), seg("r1", "r2", 1000, 995), seg("r2", "r3", 995, 0, complete=False)))
    view.row(loss(9, 0, 400, complete=False))
    view.row(delay(8, "round_trip", 40_000))
    view.row(dict(delay(9, "round_trip", 40_000, lost=3), lost_forward=2, lost_backward=1))
    view.row(alarm(8, True, 0.005))
    view.row(liveness(True, 3, 2_000_000_000, 1_938_200_000))
    view.traffic(traffic("f1", 20_000, 100_001, rate=10_000.0))
    view.summary()
    validator = lab_output_validator()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("record") for line in lines] == [None] * 6 + ["traffic", "summary"]
    assert [(x["lost_forward"], x["lost_backward"]) for x in lines[-1]["sessions"]] == [(2, 1)]
    assert lines[-1]["paths"] == {"s1": {"up": False, "downs": 1, "ups": 0, "longest_silence_ms": 61.8}}
    for line in lines:
        validator.validate(line)
    for wrong in ({"record": "summary"}, {"record": "traffic", "flow": "f1"}, {"flow": "f1"},
                  dict(traffic("f1", 1, 1), sent=-1)):
        assert not validator.is_valid(wrong), wrong


def test_traffic_below_its_rate_is_a_row_and_a_summary_line():
    out = io.StringIO()
    table = ResultTable(out)
    table.row(loss(8, 1000, 1000))
    table.traffic(traffic("f1", 20_000, 100_001, rate=10_000.0))
    table.traffic(traffic("f2", 1001, 1001))  # the end-of-run record of a flow that kept its rate: no row
    table.traffic(traffic("f3", 10, 1001))
    table.traffic(traffic("f3", 1000, 1001))  # back at its rate: a row without RATE, and not in the summary
    table.summary()
    text = out.getvalue()
    assert "f1                        traffic sent 2000/s of 10000/s (20.0 % of its packets)  RATE" in text
    assert "f3                        traffic sent 100/s of 100/s (99.9 % of its packets)\n" in text
    assert "f2 " not in text.split("\n\n")[0]
    assert "traffic below its configured rate: f1 sent 2000/s of 10000/s (20.0 % of its packets)" in text


def seg(a, b, tx, rx, complete=True):
    return {"from": a, "to": b, "tx_packets": tx, "rx_packets": rx if complete else None,
            "lost_packets": tx - rx if complete else None, "complete": complete}


def with_segments(result, *segments):
    return dict(result, flowmon_id=3, segments=list(segments))


def test_rows_name_the_segment_that_lost_packets_and_the_summary_sums_them():
    out = io.StringIO()
    table = ResultTable(out)
    table.header()
    rows = [
        with_segments(loss(8, 1000, 1000), seg("r1", "r2", 1000, 1000), seg("r2", "r3", 1000, 1000),
                      seg("r3", "r4", 1000, 1000)),
        with_segments(loss(9, 1000, 995), seg("r1", "r2", 1000, 1000), seg("r2", "r3", 1000, 995),
                      seg("r3", "r4", 995, 995)),
        with_segments(loss(10, 1000, 990), seg("r1", "r2", 1000, 999), seg("r2", "r3", 999, 0, complete=False),
                      seg("r3", "r4", 990, 990, complete=False)),
        with_segments(dict(loss(11, 0, 0, complete=False), missing="both", rx_packets=None),
                      seg(None, "r2", 0, 0, complete=False), seg("r2", "r3", 800, 798)),
        loss(8, 400, 400, flow="f2"),
    ]
    for r in rows:
        table.row(r)
    table.summary()
    lines = out.getvalue().splitlines()
    assert lines[2].endswith("lost     0  (0.000 %)")  # no segment lost anything: nothing more to say
    assert lines[3].endswith("lost     5  (0.500 %)  LOSS  r2→r3: 5")
    assert lines[4].endswith("lost    10  (1.000 %)  LOSS  r1→r2: 1, r2→r3: ?, r3→r4: ?")
    assert lines[5].endswith("loss   incomplete: no ingress or egress block (tx -, rx -)  ?→r2: ?, r2→r3: 2")
    text = out.getvalue()
    assert "loss %  lost on segments" in text
    assert "f1                  3           1        3000        2985        15   0.500  r1→r2: 1, r2→r3: 7" in text
    assert lines[-1].startswith("f2  ") and lines[-1].endswith("0.000")  # a flow without segments: no column


def test_json_lines_carry_the_segments_as_published():
    out = io.StringIO()
    record = with_segments(loss(9, 1000, 995), seg("r1", "r2", 1000, 995), seg("r2", "r3", 995, 0, complete=False))
    JsonLines(out).row(record)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line) == record
    assert json.loads(line)["segments"][1] == {"from": "r2", "to": "r3", "tx_packets": 995, "rx_packets": None,
                                              "lost_packets": None, "complete": False}


def test_the_summary_gives_the_runs_detection_latency_from_the_records_timestamps():
    from srv6pm.lab.latency import DetectionLatency
    latency = DetectionLatency(pair_wait_s=4.0)
    end = (100 + 1) * 2.0  # period 100 of 2 s ends at 202 s
    for i in range(100):  # 1.00 s .. 1.99 s after the end
        latency.add({"flow": "f1", "period": 100, "period_s": 2.0}, end + 1.0 + i / 100)
    assert (latency.percentile(50), latency.percentile(99)) == pytest.approx((1.49, 1.98))
    out = io.StringIO()
    table = ResultTable(out, latency=latency)
    table.row(loss(100, 10, 10))
    table.summary()
    assert ("detection latency (period end -> result in InfluxDB and on srv6pm.loss), 100 results: "
            "p50 1.49 s, p99 1.98 s, max 1.99 s; guard 1 s + pair wait 4 s = 5 s") in out.getvalue()
    assert "no loss results" in DetectionLatency(pair_wait_s=4.0).summary()


def liveness(raised, value, time_ns, last_reply_ns):
    return {"v": 1, "kind": "liveness", "subject": "s1", "direction": None, "period": 7, "period_start": START,
            "period_s": 1.0, "value": value, "threshold": 3, "raised": raised, "time_ns": time_ns,
            "last_reply_ns": last_reply_ns, "sender": "r1", "reflector": "r4"}


def test_liveness_alarms_are_rows_and_the_summary_gives_each_path_s_state():
    out = io.StringIO()
    table = ResultTable(out)
    for r in [liveness(True, 3, 1_061_800_000, 1_000_000_000), liveness(False, 3, 2_000_000_000, 1_990_000_000),
              liveness(True, 3, 3_040_000_000, 3_000_000_000)]:
        table.row(r)
    table.summary()
    text = out.getvalue()
    assert "s1                     7  ALARM  raised   liveness: path down, 3 test packets without a reply, " \
           "61.8 ms after the last reply" in text
    assert "s1                     7  ALARM  cleared  liveness: path up, 3 replies" in text
    assert "s1            DOWN      2      1                      61.8" in text
    assert text.splitlines()[-1] == "alarms still raised: s1 liveness"



@pytest.mark.services
def test_the_lab_s_reader_gives_the_records_as_published_and_leaves_out_those_that_are_not(fresh_broker):
    """The lab's reader of the result topics (srv6pm.lab.runner.ResultReader), on the real broker: each
    record decoded by its topic's typed decoder and given as published; a bad one logged and left out."""
    from kafka import KafkaProducer

    from srv6pm import records
    from srv6pm.config import KafkaSettings
    from srv6pm.kafka import ensure_topics
    from srv6pm.lab.runner import ResultReader
    from srv6pm.records import Alarm, DelayResult, LossResult, Segment

    kafka = KafkaSettings(bootstrap=fresh_broker)
    ensure_topics(kafka, {records.LOSS: 1, records.DELAY: 1, records.ALARMS: 1})
    good = [
        (records.LOSS, LossResult("f1", 7, START, 1.0, None, "r4", None, 400, None, 40000, None, None, False, "ingress")),
        (records.LOSS, LossResult("f1", 8, START, 1.0, "r1", "r4", 1000, 985, 10**5, 98500, 15, 0.015, True,
                                  flowmon_id=9, segments=(Segment("r1", "r2", 1000, 990, 10, True),
                                                          Segment("r2", None, 990, None, None, False)))),
        (records.DELAY, DelayResult("s1", 8, START, 1.0, "forward", "r1", "r4", 10, 1, 5.0, 6.0, 9.5, 6.0, 9.0, 0.5,
                                    lost_forward=1)),
        (records.ALARMS, Alarm("loss_ratio", "f1", None, 9, START, 1.0, 0.015, 0.01, True)),
        (records.ALARMS, Alarm("liveness", "s1", None, 9, START, 1.0, 3, 3, True, time_ns=10**18,
                               last_reply_ns=None, sender="r1", reflector="r4")),
    ]
    bad = [(records.LOSS, b"{not json"),
           (records.DELAY, json.dumps({**good[2][1].to_dict(), "lost": -1}).encode()),
           (records.ALARMS, json.dumps({**good[3][1].to_dict(), "direction": "forward"}).encode())]
    reader = ResultReader(kafka, (records.LOSS, records.DELAY, records.ALARMS))
    producer = KafkaProducer(bootstrap_servers=fresh_broker, acks="all")
    for topic, value in good[:2] + bad + good[2:]:
        producer.send(topic, value if isinstance(value, bytes) else value.to_json(), partition=0)
    producer.flush()
    producer.close()
    got: list[dict] = []
    try:
        deadline = time.monotonic() + 30  # against a hang only
        while len(got) < len(good) and time.monotonic() < deadline:
            got += reader.poll(0.5)
        got += reader.poll(0.5)
    finally:
        reader.close()
    expected = [json.loads(record.to_json()) for _, record in good]
    assert sorted(got, key=json.dumps) == sorted(expected, key=json.dumps)
