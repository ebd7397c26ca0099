"""The exporter at scale: ApplyBatch over real gRPC, and the cost of one change not growing with the flow count.

Needs root: a real namespace, the real nftables table and the real eBPF maps
(the ebpf tests also need the compiled objects). "Cost" is checked as real,
countable properties, never as time: the nftables commands and eBPF map
operations one change runs, and what one change writes to the intent database.
"""

from __future__ import annotations

import json
import secrets
import sqlite3

import grpc
import pytest
from netns_support import skip_reason
from test_exporter_api import Running, elements, ns  # noqa: F401  (the namespace fixture)

from srv6pm import bpf
from srv6pm.exporter import ebpf
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

pytestmark = [pytest.mark.netns, pytest.mark.services,
              pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


def flow(i: int, role=pb.ROLE_INGRESS, **extra) -> pb.FlowMonitor:
    return pb.FlowMonitor(flow=f"f{i}", role=role, source_prefix="fd01::1",
                          destination_prefix=f"fd00:{i // 65536:x}:{i % 65536:x}::/64", **extra)


def batch(*messages) -> pb.Batch:
    return pb.Batch(items=[validate.batch_item(m) for m in messages])


def changes(payloads: list) -> list:
    """The nftables transactions that change set elements (the exporter loop's colour switches and guard
    reads run meanwhile); each must hold element commands only."""
    out = [p for p in payloads if any("element" in body for c in p for body in c.values())]
    assert all("element" in body for p in out for c in p for body in c.values())
    return out


@pytest.fixture
def running(ns, broker, tmp_path):  # noqa: F811
    r = Running(ns, broker, state_file=tmp_path / "state.json")
    yield r
    r.stop()


@pytest.mark.srv6
def test_a_batch_is_answered_per_object_in_order(running, ns):  # noqa: F811
    twin = pb.FlowMonitor(flow="twin", role=pb.ROLE_INGRESS, source_prefix="fd01::1",
                          destination_prefix="fd00:0:3::/64")  # f3's match
    items = [pb.LocalSid(sid="fcff:1::1", behavior=pb.SID_BEHAVIOR_END), *(flow(i) for i in range(5)),
             flow(7, role=pb.ROLE_UNSPECIFIED), twin, pb.FlowMonitorRef(flow="f4", role=pb.ROLE_INGRESS),
             flow(0), pb.FlowMonitorRef(flow="nope", role=pb.ROLE_EGRESS)]
    request = batch(*items)
    request.items.add()  # an empty item
    results = running.stub.ApplyBatch(request, timeout=20).results
    codes = [grpc.StatusCode.OK.value[0]] * 6 + [grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                                 grpc.StatusCode.FAILED_PRECONDITION.value[0]] + [0] * 3 + [3]
    assert [r.code for r in results] == codes
    assert results[6].error.startswith("role: ") and results[7].error.startswith("source_prefix: flow 'f3'")
    assert results[11].error.startswith("object: missing")
    assert [r.reply.changed for r in results[:6]] == [True] * 6 and results[8].reply.detail.startswith("removed")
    assert not results[9].reply.changed and not results[10].reply.changed  # f0 again, and a stop of nothing
    state = running.stub.GetState(pb.GetStateRequest(), timeout=5)
    assert [f.flow for f in state.flows] == ["f0", "f1", "f2", "f3"] and len(state.local_sids) == 1
    assert len(elements(ns, "ingress_c0")) == len(elements(ns, "ingress_c1")) == 4
    # each result is what the object's own RPC answers now: applying again changes nothing
    again = running.stub.ApplyBatch(batch(*(flow(i) for i in range(4))), timeout=20).results
    assert [(r.code, r.reply.changed) for r in again] == [(0, False)] * 4


def test_a_thousand_flows_in_one_batch_are_one_nftables_transaction(running, ns):  # noqa: F811
    assert running.stub.StartFlowMonitoring(flow(100_000), timeout=5).changed  # the table exists now
    nft = running.exporter._nft
    payloads = []
    real = nft.run
    nft.run = lambda commands: payloads.append(commands) or real(commands)
    try:
        results = running.stub.ApplyBatch(batch(*(flow(i) for i in range(1000))), timeout=60).results
    finally:
        nft.run = real
    assert all(r.code == 0 and r.reply.changed for r in results)
    (commands,) = changes(payloads)  # one transaction: two "add element" commands (one per colour), no listing
    assert [next(iter(c)) for c in commands] == ["add", "add"]
    assert [len(c["add"]["element"]["elem"]) for c in commands] == [1000, 1000]
    assert len(elements(ns, "ingress_c1")) == 1001


def test_one_more_flow_costs_one_small_transaction_and_one_row(running, ns, tmp_path):  # noqa: F811
    """With 2,000 flows installed, adding one runs one nftables transaction of two one-element commands and
    writes one row; the intent database is not rewritten."""
    running.stub.ApplyBatch(batch(*(flow(i) for i in range(2000))), timeout=60)
    nft = running.exporter._nft
    payloads = []
    real = nft.run
    nft.run = lambda commands: payloads.append(commands) or real(commands)
    db = running.exporter.intent._db
    rows_before = db.total_changes
    try:
        assert running.stub.StartFlowMonitoring(flow(5000), timeout=5).changed
        assert running.stub.StopFlowMonitoring(pb.FlowMonitorRef(flow="f7", role=pb.ROLE_INGRESS), timeout=5).changed
    finally:
        nft.run = real
    assert [[(verb, len(body["element"]["elem"])) for c in commands for verb, body in c.items()]
            for commands in changes(payloads)] == [[("add", 1), ("add", 1)], [("delete", 1), ("delete", 1)]]
    assert db.total_changes - rows_before == 2  # one upsert, one delete
    with sqlite3.connect(tmp_path / "state.json.intent.db") as check:
        assert check.execute("SELECT count(*) FROM objects WHERE kind = 'flows'").fetchone() == (2000,)


@pytest.mark.srv6
def test_the_json_intent_of_earlier_versions_is_migrated_once(ns, broker, tmp_path):  # noqa: F811
    legacy = tmp_path / "state.json.intent.json"
    legacy.write_text(json.dumps({"v": 1, "local_sids": [{"sid": "fcff:1::1", "behavior": "SID_BEHAVIOR_END"}],
                                  "flows": [{"flow": "f1", "role": "ROLE_EGRESS", "source_prefix": "fd01::1/128",
                                             "destination_prefix": "fd00::/64"}]}))
    r = Running(ns, broker, state_file=tmp_path / "state.json")
    try:
        state = r.stub.GetState(pb.GetStateRequest(), timeout=5)
        assert [s.sid for s in state.local_sids] == ["fcff:1::1"] and [f.flow for f in state.flows] == ["f1"]
        assert len(elements(ns, "egress_c0")) == 1
    finally:
        r.stop()
    assert not legacy.exists() and (tmp_path / "state.json.intent.json.migrated").exists()
    with sqlite3.connect(tmp_path / "state.json.intent.db") as db:
        assert db.execute("SELECT count(*) FROM objects").fetchone() == (2,)


_REASON = None if ebpf.OBJECT.exists() else f"{ebpf.OBJECT} is not built (./setup.sh)"


@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_ebpf_one_flow_is_a_few_map_updates_at_any_count(ns, broker, tmp_path):  # noqa: F811
    node = "ebs" + secrets.token_hex(3)
    r = Running(ns, broker, state_file=tmp_path / "state.json", dataplane="ebpf", node=node)
    try:
        def ops_of(*messages) -> int:
            table = r.exporter._table
            done = []
            real = table._run
            table._run = lambda op: done.append(op) or real(op)
            try:
                results = r.stub.ApplyBatch(batch(*messages), timeout=60).results
            finally:
                table._run = real
            assert all(x.code == 0 for x in results), [x.error for x in results if x.code]
            return len(done)

        r.stub.StartFlowMonitoring(flow(0, flowmon_id=1), timeout=5)
        small = ops_of(flow(1, flowmon_id=2))
        ops_of(*(flow(i, flowmon_id=i + 1) for i in range(2, 3000)))
        assert ops_of(flow(5000, flowmon_id=9000)) == small == 3  # its trie entry and its two counters
        assert ops_of(pb.FlowMonitorRef(flow="f5000", role=pb.ROLE_INGRESS)) == 3
        assert len(r.stub.ReadCounters(pb.ReadCountersRequest(), timeout=10).counters) == 2 * 3000
    finally:
        r.stop()
        bpf.unpin(ebpf.pin_dir(node))


@pytest.mark.srv6
def test_a_batch_of_policies_is_answered_as_one_call_each_with_the_routes_in_bulk(running, ns):  # noqa: F811
    """Policies in a batch: the new ones' routes are sent in bulk, not one request each, and every item gets the
    answer of its own ApplyPolicy: applied, already applied, replaced, moved, refused by the kernel (nothing
    changed), a destination another policy steers (also within the batch), one name twice (the second replaces)."""
    from test_exporter_api import kernel
    assert running.stub.ApplyPolicy(pb.Policy(name="old", destination="fd00:ff00::/64", segments=["fc00:1::9"]),
                                    timeout=5).changed
    assert running.stub.ApplyPolicy(pb.Policy(name="mv", destination="fd00:ff01::/64", segments=["fc00:1::9"]),
                                    timeout=5).changed
    new = [pb.Policy(name=f"p{i}", destination=f"fd00:{i:x}::/64", segments=["fc00:1::9"]) for i in range(200)]
    items = new[:100] + [
        pb.Policy(name="old", destination="fd00:ff00::/64", segments=["fc00:1::9"]),                  # 100 unchanged
        pb.Policy(name="old", destination="fd00:ff00::/64", segments=["fc00:1::9", "fcff:2::1"]),     # 101 replaced
        pb.Policy(name="mv", destination="fd00:ff02::/64", segments=["fc00:1::9"]),                   # 102 moved
        pb.Policy(name="down", destination="fd00:ff03::/64", segments=["fc00:1::9"], device="d0"),    # 103 kernel
        pb.Policy(name="steal", destination="fd00:7::/64", segments=["fc00:1::9"]),                   # 104 p7's
        pb.Policy(name="twice", destination="fd00:ff04::/64", segments=["fc00:1::9"]),                # 105 applied
        pb.Policy(name="twice", destination="fd00:ff04::/64", segments=["fcff:1::9", "fc00:1::9"]),   # 106 unreachable
        pb.Policy(name="bad", destination="fd00::1/64", segments=["fc00:1::9"]),                      # 107 invalid
    ] + new[100:]
    main = running.exporter.routes._main
    sends = []
    real = main.change
    main.change = lambda requests: sends.append(len(requests)) or real(requests)
    try:
        results = running.stub.ApplyBatch(batch(*items), timeout=60).results
    finally:
        main.change = real
    ok, refused, invalid = 0, grpc.StatusCode.FAILED_PRECONDITION.value[0], grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [r.code for r in results] == [ok] * 103 + [refused, refused, ok, refused, invalid] + [ok] * 100
    assert all(r.reply.changed and r.reply.detail.startswith("applied policies p") for r in results[:100] + results[108:])
    assert (results[100].reply.changed, results[100].reply.detail) == (False, "policies old already applied")
    assert [r.reply.detail for r in results[101:103]] == ["replaced policies old", "replaced policies mv"]
    assert results[103].error.endswith("Network is down")
    assert results[104].error == "destination: fd00:7::/64 is already steered by policy 'p7'"
    assert results[106].error.endswith("Network is unreachable") and results[107].error.startswith("destination")
    # in bulk, not 201 sends (items applied one by one, as the replaced and moved ones, send one request each)
    assert len([n for n in sends if n > 1]) <= 4 and sum(sends) >= 201 and sends.count(1) <= 4
    state = running.stub.GetState(pb.GetStateRequest(), timeout=5)
    assert sorted(p.name for p in state.policies) == sorted(["old", "mv", "twice"] + [p.name for p in new])
    routes = {r["dst"]: r for r in kernel(ns)[0]}
    assert set(routes) == {p.destination for p in state.policies}
    assert routes["fd00:ff00::/64"]["encap"]["segs"] == ["fc00:1::9", "fcff:2::1"]
    assert routes["fd00:ff04::/64"]["encap"]["segs"] == ["fc00:1::9"]  # the refused replacement changed nothing
    # each answer is what its own RPC answers now
    again = running.stub.ApplyBatch(batch(*new), timeout=60).results
    assert [(r.code, r.reply.changed) for r in again] == [(0, False)] * 200
