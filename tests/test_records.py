import base64
import hashlib
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
    assert (letter["raw_bytes"], letter["raw_truncated"]) == (8, False)
    assert letter["raw_sha256"] == hashlib.sha256(b"\x00garbage").hexdigest()


def test_dead_letter_of_a_huge_record_keeps_its_head_length_and_digest_and_stays_small():
    raw = bytes(range(256)) * 8192  # 2 MiB
    letter = records.dead_letter(records.COUNTERS, 0, 5, "x " * 5000, raw, "g")
    records.validate(records.DEADLETTER, letter)
    assert base64.b64decode(letter["raw"]) == raw[:records.DEADLETTER_RAW_BYTES]
    assert (letter["raw_bytes"], letter["raw_truncated"]) == (len(raw), True)
    assert letter["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert len(letter["reason"]) == records.DEADLETTER_REASON_CHARS
    assert len(records.encode(letter)) < 100_000
    assert records.dead_letter_key(b"k" * 5000) == b"k" * records.DEADLETTER_KEY_BYTES
    assert records.dead_letter_key(None) is None


def test_json_nested_too_deeply_is_a_record_error_not_a_crash():
    nested = b'{"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # under MAX_RECORD_BYTES, beyond the recursion limit
    with pytest.raises(RecordError, match="nested too deeply"):
        records.decode_counters(nested)


def test_loss_result_satisfies_its_schema():
    from srv6pm.processor.pairing import loss_result
    a = CounterRecord("r1", "f1", "ingress", 40, 2.0, 0, 10, 1000)
    b = CounterRecord("r4", "f1", "egress", 40, 2.0, 0, 9, 900)
    result = loss_result(a, b).to_dict()
    records.validate(records.LOSS, result)
    assert result["period_start"].endswith("Z")


def test_flowmon_id_and_position_round_trip_and_are_left_out_when_none():
    rec = CounterRecord("r2", "f1", "transit", 40, 2.0, 0, 5, 600, flowmon_id=1048575, position=1)
    doc = json.loads(rec.to_json())
    assert (doc["flowmon_id"], doc["position"]) == (1048575, 1)
    assert decode_counters(rec.to_json()) == rec
    plain = json.loads(CounterRecord("r1", "f1", "ingress", 40, 2.0, 0, 5, 600).to_json())
    assert "flowmon_id" not in plain and "position" not in plain and "read_ns" not in plain
    with pytest.raises(TypeError):  # keyword only: never confused with read_ns by position
        CounterRecord("r1", "f1", "ingress", 40, 2.0, 0, 5, 600, None, 7)
    assert decode_counters(good(flowmon_id=1, position=0)).position == 0
    assert decode_counters(good(role="egress", position=255)).position == 255


@pytest.mark.parametrize("changes, reason", [
    (dict(flowmon_id=0), "schema: flowmon_id"),
    (dict(flowmon_id=1048576), "schema: flowmon_id"),
    (dict(flowmon_id="7"), "schema: flowmon_id"),
    (dict(position=-1), "schema: position"),
    (dict(position=256), "schema: position"),
    (dict(position=1.5), "schema: position"),
    (dict(position=1), "position 1 does not fit role ingress: it must be 0"),
    (dict(role="transit", position=0), "position 0 does not fit role transit: it must be at least 1"),
    (dict(role="egress", position=0), "position 0 does not fit role egress"),
])
def test_bad_flowmon_ids_and_positions_are_rejected_with_a_reason(changes, reason):
    with pytest.raises(RecordError, match=reason):
        decode_counters(good(**changes))


def test_the_counters_schema_documents_the_new_fields():
    props = records.schema(records.COUNTERS)["properties"]
    assert (props["flowmon_id"]["minimum"], props["flowmon_id"]["maximum"]) == (1, 1048575)
    assert (props["position"]["minimum"], props["position"]["maximum"]) == (0, 255)
    assert props["flowmon_id"]["description"] and props["position"]["description"]
    loss = records.schema(records.LOSS)["properties"]
    assert loss["flowmon_id"]["description"] and loss["segments"]["description"]
    for name, prop in loss["segments"]["items"]["properties"].items():
        assert prop["description"], name


def test_a_loss_result_with_segments_satisfies_its_schema_and_round_trips():
    from srv6pm.records import LossResult, Segment
    result = LossResult(
        flow="f1", period=40, period_start="2025-10-09T08:53:20Z", period_s=2.0, ingress="r1", egress="r3",
        tx_packets=10, rx_packets=9, tx_bytes=1000, rx_bytes=900, lost_packets=1, loss_ratio=0.1, complete=True,
        flowmon_id=42, segments=(Segment("r1", "r2", 10, 9, 1, True), Segment("r2", None, 9, None, None, False)))
    doc = json.loads(result.to_json())
    records.validate(records.LOSS, doc)
    assert doc["flowmon_id"] == 42
    assert doc["segments"] == [
        {"from": "r1", "to": "r2", "tx_packets": 10, "rx_packets": 9, "lost_packets": 1, "complete": True},
        {"from": "r2", "to": None, "tx_packets": 9, "rx_packets": None, "lost_packets": None, "complete": False}]
    assert LossResult.from_dict(doc) == result
    bad = dict(doc, segments=[{"from": "r1", "to": "r2", "tx_packets": -1, "rx_packets": 0, "lost_packets": -1,
                               "complete": True}])
    with pytest.raises(RecordError, match="schema: segments/0/tx_packets"):
        records.validate(records.LOSS, bad)
    with pytest.raises(RecordError, match="schema: missing"):
        records.validate(records.LOSS, dict(doc, missing="transit"))
    records.validate(records.LOSS, dict(doc, complete=False, missing="both"))


def test_the_counter_encoder_gives_the_bytes_of_to_json():
    from srv6pm.records import CounterEncoder
    encoder = CounterEncoder("r\u00e91", 2.5)
    for kw in ({}, {"read_ns": 123}, {"read_ns": 5, "flowmon_id": 7, "position": 2}, {"flowmon_id": 1, "position": 3}):
        for _ in range(2):  # the second from the cached parts
            rec = CounterRecord("r\u00e91", 'f"1', "transit", 41, 2.5, 1, 2**40, 7, **kw)
            assert encoder.encode('f"1', "transit", 41, 1, 2**40, 7, **kw) == rec.to_json()
            assert decode_counters(rec.to_json()) == rec
        encoder.rotate()


def test_encoding_a_guards_blocks_at_once_gives_the_bytes_of_encode():
    from srv6pm.records import CounterEncoder
    blocks = [("f1", 10, 1000), ('f"2', 0, 0), ("f3", 2**40, 7)]
    ids = {("f1", "transit"): (7, 2), ("f3", "transit"): (9, 1)}
    for read_ns in (None, 123):
        one, many = CounterEncoder("r1", 2.5), CounterEncoder("r1", 2.5)
        for _ in range(2):  # the second from the cached parts
            want = [one.encode(f, "transit", 41, 1, p, b, read_ns, *ids.get((f, "transit"), (None, None)))
                    for f, p, b in blocks]
            assert many.encode_blocks("transit", 41, 1, blocks, read_ns, ids) == want
            one.rotate()
            many.rotate()


def test_to_dict_names_every_field_of_the_record_and_fast_encoding_is_the_same_json():
    from dataclasses import fields

    from srv6pm.records import LossResult, Segment
    loss = LossResult("f1", 40, "2025-01-01T00:00:00Z", 2.0, "r1", "r4", 10, 9, 1000, 900, 1, 0.1, True, None,
                      flowmon_id=5, segments=(Segment("r1", "r4", 10, 9, 1, True),))
    counter = CounterRecord("r1", "f1", "ingress", 40, 2.0, 0, 5, 600, read_ns=1, flowmon_id=2, position=0)
    for record in (loss, counter):
        doc = record.to_dict()
        assert list(doc) == ["v", *(f.name for f in fields(record))]
        assert json.loads(records.encode_fast(doc)) == json.loads(records.encode(doc))
    with pytest.raises(ValueError):
        records.encode_fast({"segments": [{"x": float("nan")}]})
    with pytest.raises(ValueError):
        records.encode_fast({"loss_ratio": float("inf")})


def test_build_makes_the_record_the_constructor_makes():
    from dataclasses import fields

    from srv6pm.records import LossResult, build
    made = CounterRecord("r1", "f1", "transit", 40, 2.0, 0, 5, 600, read_ns=1, flowmon_id=2, position=3)
    built = build(CounterRecord, {f.name: getattr(made, f.name) for f in fields(made)})
    assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
    with pytest.raises(AttributeError):  # still frozen
        built.packets = 6
    loss = LossResult("f1", 40, "2025-01-01T00:00:00Z", 2.0, "r1", "r4", 10, 9, 1000, 900, 1, 0.1, True)
    assert build(LossResult, {f.name: getattr(loss, f.name) for f in fields(loss)}) == loss


@pytest.mark.parametrize("decoder, record, bad, reason", [
    (records.decode_loss,
     records.LossResult("f1", 4, "2025-11-24T16:00:08Z", 2.0, "r1", None, 10, None, 1000, None, None, None, False,
                        "egress"),
     {"missing": "middle"}, "schema: missing"),
    (records.decode_delay,
     records.DelayResult("s1", 4, "2025-11-24T16:00:08Z", 2.0, "backward", None, None, 0, 2, None, None, None, None,
                         None, None),
     {"direction": "sideways"}, "schema: direction"),
    (records.decode_alarm,
     records.Alarm("delay_p99_us", "s1", "forward", 4, "2025-11-24T16:00:08Z", 2.0, 900.0, 500.0, True),
     {"direction": None}, "schema: direction"),
    (records.decode_event, records.Event("node_down", "2025-11-24T16:00:08Z", 2, node="r1"),
     {"generation": -1}, "schema: generation"),
])
def test_results_alarms_and_events_round_trip_and_a_bad_one_has_its_reason(decoder, record, bad, reason):
    assert decoder(record.to_json()) == record
    with pytest.raises(RecordError, match=reason):
        decoder(records.encode({**record.to_dict(), **bad}))
    with pytest.raises(RecordError, match="tombstone"):
        decoder(None)


def test_prepared_templates_give_the_same_bytes_until_forgotten():
    from srv6pm.records import CounterEncoder
    blocks = [("f1", 10, 1000), ('f"2', 0, 0)]
    one, prepared = CounterEncoder("r1", 2.5), CounterEncoder("r1", 2.5)
    prepared.prepare("f1", "transit", 7, 2)
    prepared.prepare('f"2', "transit")
    for _ in range(2):
        keys, values = prepared.encode_keyed("transit", 41, 1, blocks, 123)  # no ids: the prepared ones
        assert keys == [b"f1", b'f"2']
        assert values == [one.encode("f1", "transit", 41, 1, 10, 1000, 123, 7, 2),
                          one.encode('f"2', "transit", 41, 1, 0, 0, 123)]
        prepared.rotate()
    prepared.forget("f1", "transit")
    prepared.prepare("f1", "transit", 8, 3)  # the flow's identifiers changed
    assert prepared.encode_blocks("transit", 43, 1, blocks[:1]) == [one.encode("f1", "transit", 43, 1, 10, 1000,
                                                                               None, 8, 3)]
    prepared.forget("f1", "transit")
    assert prepared.encode_blocks("transit", 43, 1, blocks[:1]) == [one.encode("f1", "transit", 43, 1, 10, 1000)]


def test_a_guards_records_from_the_kept_format_are_the_bytes_of_encode():
    """encode_keyed of prepared flows (the format string kept per role): the same bytes as encode, with '%',
    a newline and non-ASCII in names, the counts of each guard, and again after the flows or their order change."""
    from srv6pm.records import CounterEncoder
    flows = ["f1", 'f"2', "f%d%%3", "f\n4", "f\u00e95"]
    ids = {"f1": (7, 2), "f%d%%3": (9, 1)}
    one, prepared = CounterEncoder("r%s\u00e91", 2.5), CounterEncoder("r%s\u00e91", 2.5)
    for flow in flows:
        prepared.prepare(flow, "transit", *ids.get(flow, (None, None)))
    for period, names in ((41, flows), (43, flows), (45, flows[::-1]), (47, flows[1:]), (49, flows[1:])):
        for read_ns in (None, 123):
            blocks = [(f, period * i, 2**40 + i) for i, f in enumerate(names)]
            keys, values = prepared.encode_keyed("transit", period, 1, blocks, read_ns)
            assert keys == [f.encode() for f in names]
            assert values == [one.encode(f, "transit", period, 1, p, b, read_ns, *ids.get(f, (None, None)))
                              for f, p, b in blocks]
            assert [decode_counters(v).packets for v in values] == [p for _, p, _ in blocks]
    assert prepared.encode_keyed("transit", 51, 1, []) == ([], [])
    prepared.forget("f1", "transit")  # one flow without a kept template: the records made one by one
    blocks = [(f, 5, 6) for f in flows]
    assert prepared.encode_keyed("transit", 51, 1, blocks)[1] == [one.encode(f, "transit", 51, 1, 5, 6, None,
                                                                             *ids.get(f, (None, None)) if f != "f1"
                                                                             else (None, None)) for f in flows]
