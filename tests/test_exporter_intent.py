"""The exporter's intent store (SQLite, one row per object) and the eBPF classification model, without root."""

from __future__ import annotations

import sqlite3

import pytest

from srv6pm.exporter.classify import Model, Point
from srv6pm.exporter.intent import Intent
from srv6pm.southbound.v1 import southbound_pb2 as pb


def flow(name: str, dst: str, role=pb.ROLE_INGRESS) -> pb.FlowMonitor:
    return pb.FlowMonitor(flow=name, role=role, source_prefix="fd01::1/128", destination_prefix=dst)


def test_each_change_writes_its_own_row_and_survives_a_reopen(tmp_path):
    path = tmp_path / "s.json.intent.db"
    intent = Intent(path)
    with intent.held():  # one transaction
        for i in range(500):
            intent.put(flow(f"f{i}", f"fd00:{i:x}::/64"))
    db = intent._db
    before = db.total_changes
    intent.put(flow("f1", "fd00:ffff::/64"))  # a replacement
    intent.remove(pb.FlowMonitorRef(flow="f2", role=pb.ROLE_INGRESS))
    assert db.total_changes - before == 2
    intent.close()
    again = Intent(path).load()
    assert len(again) == 499 and next(f for f in again if f.flow == "f1").destination_prefix == "fd00:ffff::/64"


def test_secondary_keys_are_looked_up_not_scanned():
    intent = Intent()
    intent.put(flow("f1", "fd00::/64"))
    intent.put(pb.Policy(name="p1", destination="fd00::/64", segments=["fcff::1"]))
    assert intent.holder(flow("f2", "fd00::/64")) == ("f1", pb.ROLE_INGRESS)
    assert intent.holder(flow("f1", "fd00::/64")) is None  # its own key
    assert intent.holder(flow("f2", "fd00::/64", role=pb.ROLE_EGRESS)) is None
    assert intent.holder(pb.Policy(name="p2", destination="fd00::/64")) == "p1"
    intent.put(flow("f1", "fd00:1::/64"))  # replaced: its old match is free
    assert intent.holder(flow("f2", "fd00::/64")) is None


def test_an_unreadable_database_is_moved_aside(tmp_path):
    path = tmp_path / "x.intent.db"
    path.write_bytes(b"this is not a database" * 100)
    intent = Intent(path)
    assert intent.load() == []
    assert (tmp_path / "x.intent.db.corrupt").exists()
    intent.put(flow("f1", "fd00::/64"))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM objects").fetchone() == (1,)


def test_the_classification_model_checks_by_lookup_and_reverts_a_refused_change():
    model = Model(limit=10)
    model.change(add=[Point("a", "ingress", 1, 0, "fd00::/64", "fd01::/64"), Point("t", "transit", 2, 1)])
    ops = model.change(add=[Point("b", "ingress", 3, 0, "fd00::/64", "fd02::/64")]).ops
    # a new ingress point's counters exist before its match: no packet is marked that its node cannot count
    assert [(o.verb, o.map) for o in ops] == [("update", "counters0"), ("update", "counters1"), ("update", "flows")]
    for bad, reason in (([Point("c", "ingress", 1, 0, "fd02::/64", "fd01::/64")], "same FlowMonID 1"),
                        ([Point("c", "ingress", 4, 0, "fd00::/64", "fd01::/64")], "same match"),
                        ([Point("c", "ingress", 4, 0, "fd00::/48", "fd09::/64")], "nest"),
                        ([Point("c", "ingress", 4, 0, "fd00::8/125", "fd09::/64")], "nest"),
                        ([Point(f"x{i}", "transit", 10 + i, 1) for i in range(9)], "at most 10")):
        with pytest.raises(ValueError, match=reason):
            model.change(add=bad, remove=[("t", "transit")])
        assert sorted(model.points) == [("a", "ingress"), ("b", "ingress"), ("t", "transit")]
    # a freed prefix can nest with a new one; an exact flow is not classified by the tries
    model.change(remove=[("a", "ingress"), ("b", "ingress")],
                 add=[Point("c", "ingress", 4, 0, "fd00::/48", "fd09::/64"),
                      Point("d", "ingress", 5, 0, "fd00::1/128", "fd09::1/128")])
    assert set(model.by_id) == {2, 4, 5}


def test_rows_hold_protobuf_s_json_mapping_of_each_kind():
    """A row's body is MessageToDict's mapping with the proto's field names (made directly for messages of plain
    fields, by MessageToDict for the others): the same for every kind, defaults left out, enums by name (an
    unknown enum value as its number), repeated fields as lists."""
    import json

    from google.protobuf import json_format

    from srv6pm.exporter import intent as intent_mod
    messages = [pb.LocalSid(sid="fcff:1::100", behavior=pb.SID_BEHAVIOR_END_DX6, nexthop="fd01:1::2", device="v0"),
                pb.LocalSid(sid="fcff:1::1", behavior=pb.SID_BEHAVIOR_END),
                pb.Policy(name="f1", destination="fd01:4::/64", segments=["fcff:2::1", "fcff:4::100"], device="v0",
                          mode=pb.ENCAP_MODE_INLINE),
                flow("f1", "fd01:4::/64"), pb.FlowMonitor(flow="f2", role=pb.ROLE_TRANSIT, flowmon_id=1048575,
                                                          position=3),
                pb.FlowMonitor(flow="f3", role=99),  # not a Role: kept as its number
                pb.StampSession(name="s1", destination="fcff:4::2", segments=["fcff:2::1"], rate=10.5, timeout_s=2),
                pb.StampReflector(), pb.Policy()]
    for message in messages:
        expected = json_format.MessageToDict(message, preserving_proto_field_name=True)
        assert intent_mod._mapping(message) == expected
        assert json.loads(intent_mod._body(message)) == expected
        back = json_format.ParseDict(json.loads(intent_mod._body(message)), type(message)())
        assert back == message
