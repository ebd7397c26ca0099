"""The fast decoders (srv6pm.decode) against the reference (srv6pm.records: jsonschema on the published schemas),
for every topic: counters, stamp, loss, delay, alarms, events.

Property-based: hypothesis builds records field by field from valid values,
values just outside the schema's bounds, values of the wrong JSON type and
values in a non-canonical form; leaves members out, adds unknown ones,
repeats keys, and mutates the bytes of valid records. For every input:

* the fast decoder's outcome (the record, or the reason) is the reference's;
* whatever the typed decoder alone accepts, jsonschema accepts too (and every
  member at every edge the schema states is checked one at a time);
* a record as an exporter writes it is taken by the typed decoder (the fast
  path is really the path), and decodes to the record it came from.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from srv6pm import decode, records
from srv6pm.clock import PeriodClock
from srv6pm.processor.stages import DelayStage, Stage
from srv6pm.records import Alarm, CounterRecord, DelayResult, Event, LossResult, RecordError, Segment, StampSample

SETTINGS = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])

def outcome(fn, raw):
    """("ok", field values with their types) or ("error", reason)."""
    try:
        record = fn(raw)
    except RecordError as exc:
        return "error", str(exc)
    return "ok", [(f.name, type(v), v) for f in dataclasses.fields(record) for v in [getattr(record, f.name)]]


def schema_accepts(topic, raw) -> bool:
    try:
        records.validate(topic, json.loads(raw))
    except (RecordError, ValueError):
        return False
    return True


# -- values --------------------------------------------------------------------------------------------

def odd_values():
    """Values of every JSON type, including forms of integers and strings at the edges of the schemas."""
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=-3, max_value=3), st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70),
        st.sampled_from([0.0, 1.0, 2.0, -0.0, 0.5, 1e-300, 1e300, 4294967296.0, 255.0, 1048575.0, 1048576.0]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["", "x", "r1", "ingress", "egress", "transit", "x" * 255, "x" * 256, "é" * 255,
                         "\U0001F600" * 256, "0", "1"]),
        st.text(max_size=8),
        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    )


TYPE_EDGES = {
    "integer": [0, 1, -1, 1.0, 1.5, True, "1", None], "number": [0.5, 1, -0.5, 1e308, "1", True, None],
    "string": ["", "a", 1, None], "boolean": [True, False, 0, 1, None, "true"], "null": [None, 0, False],
    "object": [{}, {"a": "b"}, {"a": 1}, {"a": None}, [], None], "array": [[], {}, None],
}


def edges(prop: dict) -> list:
    """Values at and just past the bounds that a schema property states, in every JSON form that matters."""
    out = []
    types = prop.get("type", [])
    for kind in [types] if isinstance(types, str) else types:
        out += TYPE_EDGES[kind]
    for bound in ("minimum", "maximum", "exclusiveMinimum"):
        if bound in prop:
            n = prop[bound]
            out += [n - 1, n, n + 1, float(n), float(n - 1), n + 0.5, n - 0.5]
    for bound in ("minLength", "maxLength"):
        if bound in prop:
            n = prop[bound]
            out += [c * k for c in ("x", "\u00e9", "\U0001F600") for k in (max(0, n - 1), n, n + 1)]
    for value in prop.get("enum", []) + ([prop["const"]] if "const" in prop else []):
        out.append(value)
        if isinstance(value, int) and not isinstance(value, bool):
            out += [float(value), bool(value), str(value), value + 1]
        if isinstance(value, str):
            out += [value.upper(), value + " "]
    return out


@st.composite
def perturbed(draw, valid_doc, topic):
    """A valid document with none, one or two members changed: put at a schema edge, given an odd value,
    left out, or added."""
    doc = draw(valid_doc)
    properties = records.schema(topic)["properties"]
    for name in draw(st.lists(st.sampled_from(sorted(properties) + ["extra"]), max_size=2, unique=True)):
        change = draw(st.sampled_from(["edge", "edge", "edge", "odd", "drop"]))
        values = edges(properties.get(name, {}))
        if change == "drop":
            doc.pop(name, None)
        elif change == "edge" and values:
            doc[name] = draw(st.sampled_from(values))
        else:
            doc[name] = draw(odd_values())
    return doc


def counters_doc():
    return perturbed(exporter_counters().map(CounterRecord.to_dict), records.COUNTERS)


def stamp_doc():
    return perturbed(exporter_stamps().map(StampSample.to_dict), records.STAMP)


@st.composite
def raw_json(draw, doc):
    """The document as JSON bytes: members in any order, sometimes a key repeated, sometimes spaces."""
    members = list(draw(doc).items())
    members = draw(st.permutations(members))
    if members and draw(st.integers(0, 3)) == 0:  # a repeated key: the last one counts
        key, value = draw(st.sampled_from(members))
        members.insert(draw(st.integers(0, len(members))), (key, draw(st.one_of(st.just(value), odd_values()))))
    sep = draw(st.sampled_from([",", ", ", " ,\n"]))
    body = sep.join(f"{json.dumps(k)}:{json.dumps(v, ensure_ascii=draw(st.booleans()))}" for k, v in members)
    return ("{" + body + "}").encode()


@st.composite
def mutated(draw, valid_raw):
    """A valid record's bytes with a few bytes replaced, inserted or removed."""
    data = bytearray(draw(valid_raw))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from(list(b'0123456789.-eE"{}[],:\\ntu\x00\xff\xc3') + [draw(st.integers(0, 255))]))
        if edit == "replace" and at < len(data):
            data[at] = byte
        elif edit == "insert":
            data.insert(at, byte)
        elif at < len(data):
            del data[at]
    return bytes(data)


def exporter_counters():
    name = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=255)
    period = st.integers(min_value=0, max_value=2**40)

    @st.composite
    def build(draw):
        k = draw(period)
        role = draw(st.sampled_from(["ingress", "egress", "transit"]))
        position = draw(st.one_of(st.none(), st.just(0) if role == "ingress" else st.integers(1, 255)))
        return CounterRecord(draw(name), draw(name), role, k, draw(st.sampled_from([0.5, 1.0, 2.0, 10.0])), k % 2,
                             draw(st.integers(0, 2**63)), draw(st.integers(0, 2**63)),
                             read_ns=draw(st.one_of(st.none(), st.integers(0, 2**63))),
                             flowmon_id=draw(st.one_of(st.none(), st.integers(1, 1048575))), position=position)
    return build()


def exporter_stamps():
    @st.composite
    def build(draw):
        t1 = draw(st.integers(1, 2**62))
        lost = draw(st.booleans())
        if lost:
            t2 = t3 = t4 = None
        else:
            t2 = draw(st.integers(1, 2**62))
            t3 = t2 + draw(st.integers(0, 10**6))
            t4 = t1 + draw(st.integers(0, 10**9))
        return StampSample(draw(st.text(min_size=1, max_size=20)), draw(st.integers(0, 4294967295)),
                           draw(st.sampled_from([1.0, 2.0])), t1, t2, t3, t4, lost,
                           sender=draw(st.one_of(st.none(), st.text(max_size=5))),
                           reflector=draw(st.one_of(st.none(), st.text(max_size=5))),
                           timestamps=draw(st.one_of(st.none(), st.just({"t1": "software-tx", "t2": "kernel"}))),
                           ttl=draw(st.one_of(st.none(), st.integers(0, 255))),
                           reflector_seq=draw(st.one_of(st.none(), st.integers(0, 2**32))),
                           **({} if lost else draw(reply_extras())))
    return build()


def reply_extras():
    """The optional members of a returned packet (RFC 8972 TLVs, impossible timestamps)."""
    counter = st.integers(0, 2**32 - 1)
    dscp = st.integers(0, 63)
    counters = st.one_of(st.just({}), st.fixed_dictionaries(
        {"sender_tx": counter, "reflector_rx": counter, "reflector_tx": counter}))
    cos = st.one_of(st.just({}), st.fixed_dictionaries(
        {"dscp": dscp}, optional={"dscp_at_reflector": dscp, "dscp_remarked": st.booleans(), "reply_dscp": dscp,
                                  "reply_dscp_remarked": st.booleans()}))
    flag = st.one_of(st.just({}), st.just({"impossible_timestamps": True}))
    return st.tuples(counters, cos, flag).map(lambda parts: {k: v for part in parts for k, v in part.items()})


# -- counters ------------------------------------------------------------------------------------------

@SETTINGS
@given(st.one_of(raw_json(counters_doc()), mutated(exporter_counters().map(CounterRecord.to_json))))
@example(b'{"v":1.0,"node":"r1","flow":"f","role":"ingress","period":4,"period_s":2,"color":0,"packets":1,"bytes":1}')
@example(b'{"v":1,"node":"r1","flow":"f","role":"ingress","period":4.0,"period_s":2,"color":0,"packets":1,"bytes":1}')
@example(b'{"v":true,"node":"r1","flow":"f","role":"ingress","period":4,"period_s":2,"color":0,"packets":1,"bytes":1}')
@example(b'{"v":1,"node":"r1","flow":"f","role":"ingress","period":4,"period_s":1e400,"color":0,"packets":1,"bytes":1}')
@example(b'{"v":1,"node":"\\ud800","flow":"f","role":"ingress","period":4,"period_s":2,"color":0,"packets":1,"bytes":1}')
@example(b'\xef\xbb\xbf{"v":1,"node":"r1","flow":"f","role":"ingress","period":4,"period_s":2,"color":0,"packets":1,"bytes":1}')
@example(b'{"v":1,"node":"r1","flow":"f","role":"egress","period":5,"period_s":2,"color":1,"packets":1,"bytes":1,"position":0}')
@example(b'{"v":1,"node":"r1","flow":"f","role":"ingress","period":4,"period_s":2,"color":0,"packets":1,"bytes":1,"x":NaN}')
@example(b'{"v":1,"node":"r1","flow":"f","role":"ingress","period":4,"period_s":2,"color":0,"packets":1,"bytes":1,"read_ns":null}')
@example(None)
@example(b"")
def test_counters_decode_as_the_reference_decodes(raw):
    assert outcome(decode.decode_counters, raw) == outcome(records.decode_counters, raw)
    if decode.typed(records.COUNTERS, raw) is not None:
        assert schema_accepts(records.COUNTERS, raw)


@SETTINGS
@given(exporter_counters())
def test_counters_as_exporters_write_them_take_the_fast_path(record):
    raw = record.to_json()
    assert decode.fast_counters(raw) == record
    assert outcome(decode.decode_counters, raw) == outcome(records.decode_counters, raw)


def outcome_of(value):
    """outcome() of what a run decoder gave for one record: the record or the RecordError."""
    return outcome(lambda _: _raise(value) if isinstance(value, RecordError) else value, None)


def _raise(exc):
    raise exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(exporter_counters().map(CounterRecord.to_json), raw_json(counters_doc()),
                          mutated(exporter_counters().map(CounterRecord.to_json))), min_size=2, max_size=12))
@example([CounterRecord("r1", "f", "ingress", 4, 2.0, 0, 1, 1).to_json(),
          b'{"v":1,"node":"r1","flow":"f","role":"ingress","period":4,"period_s":2,"color":0,"packets":1,"bytes":1,'
          b'"x":' + b"[" * 600 + b"]" * 600 + b"}"])
@example([CounterRecord("r1", "f", "ingress", 4, 2.0, 0, 1, 1).to_json(),
          b'{"v":1,"node":"r\xc3\xa9","flow":"f","role":"ingress","period":4,"period_s":2,"color":0,"packets":1,'
          b'"bytes":1}', b'{"v":1,"node":"r1","flow":"\xff","role":"ingress","period":4,"period_s":2,"color":0,'
          b'"packets":1,"bytes":1}'])
def test_a_run_of_counters_decodes_as_the_reference_decodes_each(raws):
    """decode_counters_all (a fetched run at once: its UTF-8 and bracket checks made on the whole run where
    that tells) gives for each record what the reference gives."""
    got = decode.decode_counters_all(raws)
    assert [outcome_of(value) for value in got] == [outcome(records.decode_counters, raw) for raw in raws]
    for raw, value in zip(raws, decode.fast_counters_all(raws), strict=True):
        if value is not None:
            assert schema_accepts(records.COUNTERS, raw)


def test_a_run_whose_records_join_into_other_valid_records_decodes_record_by_record():
    """The run is decoded as one JSON array: records that are not JSON values each, but whose texts joined
    by commas make an array of as many valid records, are still each refused with the reference's reason."""
    record = CounterRecord("r1", "f", "ingress", 4, 2.0, 0, 1, 1).to_json()
    raws = [record[:-1] + b',"x":[{}', b"{}]}", record + b"," + record]
    assert len(decode._counter_run(b"[" + b",".join(raws) + b"]")) == len(raws)  # the array alone would pass
    got = decode.decode_counters_all(raws)
    assert [outcome_of(value) for value in got] == [outcome(records.decode_counters, raw) for raw in raws]
    assert all(isinstance(value, RecordError) for value in got)
    assert decode.fast_counters_all(raws) == [None, None, None]


def test_a_run_of_canonical_counters_is_decoded_whole_as_each_record_alone():
    blocks = [CounterRecord("r1", f"f{i}", role, 4 + i, 2.0, i % 2, 10, 1000, read_ns=(5 + i) * 2_000_000_000 + 1,
                            flowmon_id=7 if i == 2 else None, position=None if i != 3 else (0 if role == "ingress" else 2))
              for i in range(5) for role in ("ingress", "egress")]
    raws = [block.to_json() for block in blocks]
    raws[4] = raws[4].replace(b'"color":0', b'"color":1')  # a rule beyond the schema: the reference's reason
    got = decode.fast_counters_all(raws)
    assert got[4] is None
    assert [g for i, g in enumerate(got) if i != 4] == [b for i, b in enumerate(blocks) if i != 4]
    assert [vars(g) for i, g in enumerate(got) if i != 4] == [vars(decode.fast_counters(r)) for i, r in enumerate(raws)
                                                              if i != 4]


def test_a_record_too_large_or_absent_has_the_reference_reason():
    for raw in (None, b" " * (records.MAX_RECORD_BYTES + 1)):
        with pytest.raises(RecordError) as fast:
            decode.decode_counters(raw)
        with pytest.raises(RecordError) as reference:
            records.decode_counters(raw)
        assert str(fast.value) == str(reference.value)


def test_a_schema_valid_record_in_another_form_is_still_accepted():
    raw = b'{"v":1.0,"node":"r1","flow":"f","role":"ingress","period":4.0,"period_s":2,"color":0,"packets":1,"bytes":1}'
    assert decode.fast_counters(raw) is None  # not canonical: the typed decoder leaves it to the reference ...
    assert decode.decode_counters(raw) == records.decode_counters(raw)  # ... which accepts it, as the schema does


# -- stamp ---------------------------------------------------------------------------------------------

@SETTINGS
@given(st.one_of(raw_json(stamp_doc()), mutated(exporter_stamps().map(StampSample.to_json))))
@example(b'{"v":1,"session":"s","seq":1,"period_s":1,"t1":5,"t2":null,"t3":null,"t4":null,"lost":true}')
@example(b'{"v":1,"session":"s","seq":1,"period_s":1,"t1":5,"t2":6,"t3":7,"t4":4,"lost":false}')
@example(b'{"v":1,"session":"s","seq":1,"period_s":1,"t1":5,"t3":null,"t4":null,"lost":true}')
@example(b'{"v":1,"session":"s","seq":1,"period_s":1,"t1":5,"t2":null,"t3":null,"t4":null,"lost":1}')
@example(b'{"v":1,"session":"s","seq":1,"period_s":1,"t1":5,"t2":null,"t3":null,"t4":null,"lost":true,"sender":null}')
@example(b'{"v":1,"session":"s","seq":1,"period_s":1,"t1":5,"t2":null,"t3":null,"t4":null,"lost":true,"timestamps":{"t1":1}}')
def test_stamp_samples_decode_as_the_reference_decodes(raw):
    assert outcome(decode.decode_stamp, raw) == outcome(records.decode_stamp, raw)
    if decode.typed(records.STAMP, raw) is not None:
        assert schema_accepts(records.STAMP, raw)


@SETTINGS
@given(exporter_stamps())
def test_stamp_samples_as_senders_write_them_take_the_fast_path(sample):
    raw = sample.to_json()
    assert decode.fast_stamp(raw) == sample
    assert outcome(decode.decode_stamp, raw) == outcome(records.decode_stamp, raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(exporter_stamps().map(StampSample.to_json), raw_json(stamp_doc()),
                          mutated(exporter_stamps().map(StampSample.to_json))), min_size=2, max_size=10))
def test_a_run_of_stamp_samples_decodes_as_each_sample_alone(raws):
    """fast_stamp_all (a fetched run, decoded whole when the typed decoder accepts all of it) gives what
    fast_stamp gives each sample, and the delay stage's run decoding what it gives record by record."""
    got = decode.fast_stamp_all(raws)
    assert [None if g is None else vars(g) for g in got] \
        == [None if g is None else vars(g) for g in map(decode.fast_stamp, raws)]
    stage = DelayStage(1.0, 30.0)
    now_ns = 10**19
    assert stage.decode_all(raws, now_ns) == Stage.decode_all(stage, raws, now_ns)


def test_a_run_of_stamp_samples_joined_into_other_samples_is_refused_sample_by_sample():
    sample = StampSample("s1", 3, 1.0, 10, 20, 30, 40, False).to_json()
    raws = [sample[:-1] + b',"x":[{}', b"{}]}", sample + b"," + sample]
    assert len(decode._stamp_run(b"[" + b",".join(raws) + b"]")) == len(raws)
    assert decode.fast_stamp_all(raws) == [None, None, None]
    assert all(isinstance(records_error(raw), RecordError) for raw in raws)


def records_error(raw):
    try:
        return records.decode_stamp(raw)
    except RecordError as exc:
        return exc


# -- every edge of every member, one at a time -----------------------------------------------------------

COUNTER_BASES = [
    CounterRecord("r1", "f1", "ingress", 40, 2.0, 0, 10, 1000).to_dict(),
    CounterRecord("r3", "f1", "transit", 41, 2.0, 1, 10, 1000, read_ns=5, flowmon_id=7, position=2).to_dict(),
]
STAMP_BASES = [
    StampSample("s1", 3, 1.0, 10, 20, 30, 40, False, "r1", "r4", {"t1": "kernel"}, 64, 9).to_dict(),
    StampSample("s1", 4, 1.0, 10, None, None, None, True).to_dict(),
]


def single_edges(topic, bases):
    properties = records.schema(topic)["properties"]
    for base in bases:
        for name in sorted(properties) + ["extra"]:
            yield {k: v for k, v in base.items() if k != name}  # left out
            for value in edges(properties.get(name, {})) + [None, "x", 1.5, [], {}]:
                yield {**base, name: value}


# -- results, alarms, events ---------------------------------------------------------------------------

NAME = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
MAYBE_NAME = st.one_of(st.none(), NAME)
COUNT = st.integers(0, 2**63)
PERIOD_S = st.sampled_from([0.5, 1.0, 2.0, 10.0])
NUMBER = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63))
MAYBE_US = st.one_of(st.none(), st.floats(min_value=0, max_value=1e9))


def period_start(period: int, period_s: float) -> str:
    return PeriodClock(period_s).start_rfc3339(period)


def results():
    """Loss results as the processor writes them: complete or not, with segments and a FlowMonID or not."""
    @st.composite
    def build(draw):
        period, period_s = draw(st.integers(0, 2**31)), draw(PERIOD_S)
        complete = draw(st.booleans())
        tx, rx = draw(COUNT), draw(COUNT)
        segments = draw(st.one_of(st.none(), st.lists(st.builds(
            Segment, MAYBE_NAME, MAYBE_NAME, st.one_of(st.none(), COUNT), st.one_of(st.none(), COUNT),
            st.one_of(st.none(), st.integers(-(2**63), 2**63)), st.booleans()), max_size=4).map(tuple)))
        return LossResult(draw(NAME), period, period_start(period, period_s), period_s, draw(MAYBE_NAME),
                          draw(MAYBE_NAME), tx if complete else draw(st.one_of(st.none(), COUNT)),
                          rx if complete else None, draw(COUNT), draw(st.one_of(st.none(), COUNT)),
                          tx - rx if complete else None,
                          draw(st.floats(min_value=-1e6, max_value=1)) if complete else None, complete,
                          None if complete else draw(st.sampled_from(["ingress", "egress", "both"])),
                          draw(st.one_of(st.none(), st.integers(1, 1048575))), segments)
    return build()


def delays():
    @st.composite
    def build(draw):
        period, period_s = draw(st.integers(0, 2**31)), draw(PERIOD_S)
        samples = draw(st.integers(0, 10**6))
        stats = [draw(MAYBE_US) if samples else None for _ in range(6)]
        return DelayResult(draw(NAME), period, period_start(period, period_s), period_s,
                           draw(st.sampled_from(["forward", "backward", "round_trip"])), draw(MAYBE_NAME),
                           draw(MAYBE_NAME), samples, draw(st.integers(0, 10**6)), *stats,
                           lost_forward=draw(st.one_of(st.none(), st.integers(0, 10**6))),
                           lost_backward=draw(st.one_of(st.none(), st.integers(0, 10**6))),
                           impossible_timestamps=draw(st.integers(0, 10**6)))
    return build()


def alarms():
    """Threshold alarms as the processor writes them, liveness alarms as the exporters write them."""
    @st.composite
    def build(draw):
        period, period_s = draw(st.integers(0, 2**31)), draw(PERIOD_S)
        kind = draw(st.sampled_from(records.ALARM_KINDS))
        common = dict(kind=kind, subject=draw(NAME), period=period, period_start=period_start(period, period_s),
                      period_s=period_s, raised=draw(st.booleans()))
        if kind == "liveness":
            return Alarm(**common, direction=None, value=draw(st.integers(1, 100)), threshold=draw(st.integers(1, 100)),
                         time_ns=draw(COUNT), last_reply_ns=draw(st.one_of(st.none(), COUNT)), sender=draw(NAME),
                         reflector=draw(NAME))
        direction = None if kind == "loss_ratio" else draw(st.sampled_from(["forward", "backward", "round_trip"]))
        return Alarm(**common, direction=direction, value=draw(NUMBER),
                     threshold=draw(st.floats(min_value=0, max_value=1e9)))
    return build()


def events():
    @st.composite
    def build(draw):
        return Event(draw(st.sampled_from(records.EVENT_KINDS)), "2025-11-24T16:00:00.123Z", draw(st.integers(0, 2**40)),
                     draw(MAYBE_NAME), draw(MAYBE_NAME), draw(st.one_of(st.none(), st.text(max_size=30))),
                     draw(st.one_of(st.none(), st.uuids().map(str))))
    return build()


RESULT_TOPICS = [
    (records.LOSS, decode.decode_loss, records.decode_loss, results()),
    (records.DELAY, decode.decode_delay, records.decode_delay, delays()),
    (records.ALARMS, decode.decode_alarm, records.decode_alarm, alarms()),
    (records.EVENTS, decode.decode_event, records.decode_event, events()),
]
TOPIC_IDS = [topic for topic, *_ in RESULT_TOPICS]


@pytest.mark.parametrize("topic, fast, reference, written", RESULT_TOPICS, ids=TOPIC_IDS)
def test_results_alarms_and_events_decode_as_the_reference_decodes(topic, fast, reference, written):
    @SETTINGS
    @given(st.one_of(raw_json(perturbed(written.map(lambda r: r.to_dict()), topic)),
                     mutated(written.map(lambda r: r.to_json()))))
    def check(raw):
        assert outcome(fast, raw) == outcome(reference, raw)
        assert outcome(lambda raw: decode.decode(topic, raw), raw) == outcome(reference, raw)
        if decode.typed(topic, raw) is not None:
            assert schema_accepts(topic, raw)
    check()


@pytest.mark.parametrize("topic, fast, reference, written", RESULT_TOPICS, ids=TOPIC_IDS)
def test_records_as_srv6pm_writes_them_take_the_fast_path_and_round_trip(topic, fast, reference, written):
    @SETTINGS
    @given(written)
    def check(record):
        raw = record.to_json()
        assert decode.fast(topic, raw) == record
        assert fast(raw) == reference(raw) == record
        assert fast(raw).to_dict() == json.loads(raw)  # a reader that re-publishes the record changes nothing
    check()


def test_the_alarm_rules_per_kind_are_the_schema_s():
    base = Alarm("liveness", "s1", None, 3, "2025-11-24T16:00:00Z", 1.0, 3, 3, True, time_ns=5,
                 last_reply_ns=None, sender="r1", reflector="r4").to_dict()
    for changes, ok in [({}, True), ({"direction": "forward"}, False), ({"value": 0}, False),
                        ({"value": 2.5}, False), ({"value": 2.0}, True), ({"threshold": 1.0}, True),
                        ({"kind": "delay_p99_us"}, False), ({"kind": "delay_p99_us", "direction": "backward"}, True),
                        ({"kind": "loss_ratio", "value": 0.5, "time_ns": None}, False),
                        ({"kind": "loss_ratio", "value": 0.5}, True)]:
        doc = {**base, **changes}
        raw = json.dumps(doc).encode()
        assert schema_accepts(records.ALARMS, raw) is ok, changes
        assert outcome(decode.decode_alarm, raw) == outcome(records.decode_alarm, raw), changes
    for name in records.LIVENESS_FIELDS:
        raw = json.dumps({k: v for k, v in base.items() if k != name}).encode()
        assert decode.typed(records.ALARMS, raw) is None
        with pytest.raises(RecordError, match=f"'{name}' is a required property"):
            decode.decode_alarm(raw)


def test_values_nested_as_deep_as_json_refuses_are_the_reference_s_to_judge():
    record = CounterRecord("r1", "f1", "ingress", 40, 2.0, 0, 10, 1000).to_dict()
    for depth in (10, 600, 995, 5000):
        raw = json.dumps({**record, "x": 0}).encode().replace(b'"x": 0', b'"x": ' + b"[" * depth + b"]" * depth)
        assert outcome(decode.decode_counters, raw) == outcome(records.decode_counters, raw), depth
        for topic, fast, reference, _ in RESULT_TOPICS:
            assert outcome(fast, raw) == outcome(reference, raw), (topic, depth)


RESULT_BASES = {
    records.LOSS: [
        LossResult("f1", 40, "2025-11-24T16:01:20Z", 2.0, "r1", "r4", 10, 9, 1000, 900, 1, 0.1, True).to_dict(),
        LossResult("f1", 41, "2025-11-24T16:01:22Z", 2.0, "r1", None, 10, None, 1000, None, None, None, False,
                   "egress", 7, (Segment("r1", "r2", 10, 10, 0, True), Segment("r2", None, 10, None, None, False))
                   ).to_dict(),
    ],
    records.DELAY: [
        DelayResult("s1", 40, "2025-11-24T16:01:20Z", 2.0, "forward", "r1", "r4", 10, 1, 5.0, 6.0, 9.5, 6.0, 9.0,
                    0.5, lost_forward=1, lost_backward=0, impossible_timestamps=2).to_dict(),
        DelayResult("s1", 40, "2025-11-24T16:01:20Z", 2.0, "round_trip", None, None, 0, 3, None, None, None, None,
                    None, None).to_dict(),
    ],
    records.ALARMS: [
        Alarm("loss_ratio", "f1", None, 40, "2025-11-24T16:01:20Z", 2.0, 0.5, 0.01, True).to_dict(),
        Alarm("delay_p99_us", "s1", "backward", 40, "2025-11-24T16:01:20Z", 2.0, 900.0, 500, False).to_dict(),
        Alarm("liveness", "s1", None, 40, "2025-11-24T16:01:20Z", 2.0, 3, 3, True, time_ns=10**18,
              last_reply_ns=None, sender="r1", reflector="r4").to_dict(),
    ],
    records.EVENTS: [
        Event("applied", "2025-11-24T16:01:20.5Z", 3, "r1", "policy f1", None, "b-1").to_dict(),
        Event("converged", "2025-11-24T16:01:20Z", 1).to_dict(),
    ],
}


BASES = {records.COUNTERS: COUNTER_BASES, records.STAMP: STAMP_BASES, **RESULT_BASES}


@pytest.mark.parametrize("topic, fast, reference", [
    (records.COUNTERS, decode.decode_counters, records.decode_counters),
    (records.STAMP, decode.decode_stamp, records.decode_stamp),
] + [(topic, fast, reference) for topic, fast, reference, _ in RESULT_TOPICS], ids=[records.COUNTERS, records.STAMP] + TOPIC_IDS)
def test_every_edge_of_every_member_decodes_as_the_reference_decodes(topic, fast, reference):
    checked = 0
    for doc in single_edges(topic, BASES[topic]):
        raw = json.dumps(doc).encode()
        assert outcome(fast, raw) == outcome(reference, raw), raw
        if decode.typed(topic, raw) is not None:
            assert schema_accepts(topic, raw), raw
        checked += 1
    assert checked > 200
    for base in BASES[topic]:  # and the bases themselves take the fast path
        assert decode.fast(topic, json.dumps(base).encode()) is not None, base


def _counter_text(period_s: str, extra: str = "", period: str = "3", color: int = 1) -> bytes:
    return (f'{{"v":1,"node":"r","flow":"f","role":"egress","period":{period},"period_s":{period_s},'
            f'"color":{color},"packets":0,"bytes":0{extra}}}').encode()


def _stamp_text(period_s: str, t1: int) -> bytes:
    return (f'{{"v":1,"session":"s","seq":1,"period_s":{period_s},"t1":{t1},"t2":{t1 + 1000},"t3":{t1 + 2000},'
            f'"t4":{t1 + 3000},"lost":false}}').encode()


def test_numbers_beyond_what_json_or_a_float_holds_are_reasons_not_exceptions():
    """Found by fuzzing: a number of more than 4300 digits (int() refuses to convert it), a period_s beyond a
    float's range, one a clock cannot keep, and one of under a millisecond: the decoders and both stages give
    a reason for each record (the fast path agreeing with the reference), and raise nothing."""
    import time

    from srv6pm.processor.stages import LossStage

    now = time.time_ns()
    huge = "1" + "0" * 4301
    counters = {
        b"[" + huge.encode() + b"]": "not usable JSON: a number of more than 4300 digits",
        _counter_text("2", f',"x":{huge}'): "not usable JSON: a number of more than 4300 digits",
        _counter_text("1" + "0" * 310): "period_s is not finite",
        _counter_text("8e299"): "implausible: period_s 8e+299: period must be at most 31622400 s (a year)",
    }
    raws = list(counters)
    assert [str(r) for r in decode.decode_counters_all(raws)] == [str(e) for e in map(_reference_error, raws)]
    _, reasons = LossStage(30.0).decode_all(raws, now)
    assert sorted(reasons) == list(range(len(raws))) and all(reasons[i].startswith(counters[r]) for i, r in enumerate(raws)), reasons
    t1 = now - 10**9
    stamps = {
        _stamp_text("1" + "0" * 310, t1): "period_s is not finite",
        _stamp_text("8e299", t1): "implausible: period_s 8e+299: period must be at most 31622400 s (a year)",
        _stamp_text("0.0001", t1): "implausible: period_s 0.0001: period must be at least 1 ms",
    }
    raws = list(stamps)
    stage = DelayStage(0.0, 30.0)
    decoded, reasons = stage.decode_all(raws, now)
    assert decoded == [None] * len(raws) and all(reasons[i].startswith(stamps[r]) for i, r in enumerate(raws)), reasons


def _reference_error(raw: bytes):
    try:
        return records.decode_counters(raw)
    except records.RecordError as exc:
        return exc


def test_a_whole_number_written_as_a_float_is_an_int_in_the_record():
    """The schema's integers accept 3.0: the record holds 3, so that it meets the same keys and caches as a
    record that wrote 3 (the plausibility rules' bounds per (period_s, period) were shared between the two)."""
    (record,) = decode.decode_counters_all([_counter_text("2", period="3.0", color=1)])
    assert type(record.period) is int and record.period == 3 and type(record.color) is int
