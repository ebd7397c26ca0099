import base64
import json

import pytest

from srv6pm import records
from srv6pm.records import CounterRecord, RecordError, decode_counters


def good(**changes):
    doc = {"v": 1, "node": "r1", "flow": "f1", "role": "ingress", "period": 41, "period_s": 2,
           "color": 1, "packets": 10, "bytes": 1480}
    doc.update(changes)
    return json.dumps(doc).encode()


def test_round_trip():
    rec = CounterRecord("r1", "f1", "egress", 40, 2.0, 0, 5, 600, read_ns=123)
    assert decode_counters(rec.to_json()) == rec
    assert json.loads(rec.to_json())["v"] == 1


@pytest.mark.parametrize("raw, reason", [
    (b"", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"{bad", "not JSON"),
    (b"[1, 2]", "schema"),
    (b'{"v": 1, "packets": NaN}', "not JSON"),
    (None, "tombstone"),
    (good(v=2), "schema: v"),
    (good(packets=-1), "schema: packets"),
    (good(packets=1.5), "schema: packets"),
    (good(role="middle"), "schema: role"),
    (good(color=0), "does not match period"),
    (good(period_s=0), "schema: period_s"),
    (good(node=""), "schema: node"),
    (json.dumps({"v": 1}).encode(), "schema"),
    (b" " * (records.MAX_RECORD_BYTES + 1), "exceeds"),
])
def test_invalid_records_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(RecordError, match=reason):
        decode_counters(raw)


def test_extra_fields_are_allowed_for_forward_compatibility():
    assert decode_counters(good(extra="x")).packets == 10


def test_dead_letter_record_satisfies_its_schema():
    letter = records.dead_letter(records.COUNTERS, 3, 17, "not JSON", b"\x00garbage", "g")
    records.validate(records.DEADLETTER, letter)
    assert base64.b64decode(letter["raw"]) == b"\x00garbage"


def test_loss_result_satisfies_its_schema():
    from srv6pm.processor.pairing import loss_result
    a = CounterRecord("r1", "f1", "ingress", 40, 2.0, 0, 10, 1000)
    b = CounterRecord("r4", "f1", "egress", 40, 2.0, 0, 9, 900)
    result = loss_result(a, b).to_dict()
    records.validate(records.LOSS, result)
    assert result["period_start"].endswith("Z")
