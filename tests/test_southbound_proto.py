"""The southbound contract: the .proto, its committed generated code, and the wire format.

* Every message, with every field set, survives SerializeToString/FromString.
* The committed stubs in srv6pm/southbound/v1 are byte-identical to a fresh
  grpc_tools.protoc run (fails when the .proto changed and nobody regenerated).
* The descriptor's package and service hold exactly what the .proto declares.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from srv6pm.southbound import pb, rpc

ROOT = Path(__file__).resolve().parent.parent
PROTO = Path("srv6pm/southbound/v1/southbound.proto")
GENERATED = ["southbound_pb2.py", "southbound_pb2.pyi", "southbound_pb2_grpc.py"]


def _info() -> pb.NodeInfo:
    m = pb.NodeInfo()
    m.node = "r1"
    m.boot_id = "5f0c2b0e-0d7b-4c1e-9b1a-0c5a8e6f1d2a"
    m.period_s = 2.5
    m.version = "0.1.0"
    m.started_ns = 1_700_000_000_123_456_789
    m.dataplane = "ebpf"
    return m


def _local_sid() -> pb.LocalSid:
    m = pb.LocalSid()
    m.sid = "fc00:2::100"
    m.behavior = pb.SID_BEHAVIOR_END_DX6
    m.nexthop = "fd00::1"
    m.table = 100
    m.device = "eth0"
    return m


def _policy() -> pb.Policy:
    m = pb.Policy()
    m.name = "p1"
    m.destination = "fd00:4::/64"
    m.segments.append("fc00:2::1")
    m.segments.append("fc00:3::1")
    m.mode = pb.ENCAP_MODE_INLINE
    m.device = "veth-r1-r2"
    return m


def _flow_monitor() -> pb.FlowMonitor:
    m = pb.FlowMonitor()
    m.flow = "f1"
    m.role = pb.ROLE_EGRESS
    m.source_prefix = "fd00:1::/64"
    m.destination_prefix = "fd00:4::/64"
    m.flowmon_id = 0xFFFFF
    m.position = 3
    return m


def _flow_counter() -> pb.FlowCounter:
    m = pb.FlowCounter()
    m.flow = "f1"
    m.role = pb.ROLE_INGRESS
    m.colour = 1
    m.packets = 2**64 - 1
    m.bytes = 2**40
    m.generation = "g7"
    m.flowmon_id = 1
    return m


def _stamp_session() -> pb.StampSession:
    m = pb.StampSession()
    m.name = "s1"
    m.destination = "fc00:4::1"
    m.source = "fc00:1::1"
    m.port = 8620
    m.segments.append("fc00:2::1")
    m.return_segments.append("fc00:3::1")
    m.rate = 12.5
    m.timeout_s = 0.75
    m.reflector_node = "r4"
    m.auth_key_file = "/etc/srv6pm/stamp.key"
    m.liveness = True
    m.liveness_down_after = 4
    m.liveness_up_after = 5
    m.direct_measurement = True
    m.dscp = 0  # optional: set to 0 is not unset
    m.ssid = 4242
    m.stop_if_ssid_ignored = True
    return m


def _stamp_reflector() -> pb.StampReflector:
    m = pb.StampReflector()
    m.bind = "::"
    m.port = 862
    m.stateful = True
    m.auth_key_file = "/etc/srv6pm/stamp.key"
    m.backend = "socket"
    return m


def _session_status() -> pb.StampSessionStatus:
    m = pb.StampSessionStatus()
    m.name = "s1"
    m.running = True
    m.error = "none yet"
    m.sent = 10
    m.received = 9
    m.lost = 1
    return m


def _reflector_status() -> pb.StampReflectorStatus:
    m = pb.StampReflectorStatus()
    m.running = True
    m.error = "x"
    m.received = 5
    m.reflected = 4
    m.dropped_malformed = 1
    m.dropped_auth = 2
    return m


def _node_state() -> pb.NodeState:
    m = pb.NodeState()
    m.info.CopyFrom(_info())
    m.local_sids.append(_local_sid())
    m.policies.append(_policy())
    m.flows.append(_flow_monitor())
    m.stamp_sessions.append(_stamp_session())
    m.stamp_reflector.CopyFrom(_stamp_reflector())
    m.session_status.append(_session_status())
    m.reflector_status.CopyFrom(_reflector_status())
    return m


def _counters() -> pb.Counters:
    m = pb.Counters()
    m.read_ns = 1_700_000_000_000_000_000
    m.counters.append(_flow_counter())
    return m


_BATCH_OBJECTS = {
    "local_sid": _local_sid, "policy": _policy, "flow": _flow_monitor, "stamp_session": _stamp_session,
    "stamp_reflector": _stamp_reflector, "remove_local_sid": lambda: pb.LocalSidRef(sid="fc00:2::100"),
    "remove_policy": lambda: pb.PolicyRef(name="p1"),
    "remove_flow": lambda: pb.FlowMonitorRef(flow="f1", role=pb.ROLE_INGRESS),
    "remove_stamp_session": lambda: pb.StampSessionRef(name="s1"), "remove_stamp_reflector": pb.StampReflectorRef,
}


def _batch_item(field: str = "flow") -> pb.BatchItem:
    m = pb.BatchItem()
    getattr(m, field).CopyFrom(_BATCH_OBJECTS[field]())
    return m


def _batch() -> pb.Batch:
    m = pb.Batch()
    m.items.append(_batch_item("policy"))
    m.items.append(_batch_item("remove_flow"))
    return m


def _batch_result() -> pb.BatchResult:
    m = pb.BatchResult()
    m.code = 9
    m.error = "source_prefix: flow 'f2' has the same ingress match"
    m.reply.CopyFrom(pb.ApplyReply(changed=True, detail="applied flows f1/ingress"))
    return m


def _batch_reply() -> pb.BatchReply:
    m = pb.BatchReply()
    m.results.append(_batch_result())
    return m


BUILDERS = {
    "GetInfoRequest": pb.GetInfoRequest,
    "NodeInfo": _info,
    "ApplyReply": lambda: pb.ApplyReply(changed=True, detail="added route"),
    "LocalSid": _local_sid,
    "LocalSidRef": lambda: pb.LocalSidRef(sid="fc00:2::100"),
    "Policy": _policy,
    "PolicyRef": lambda: pb.PolicyRef(name="p1"),
    "FlowMonitor": _flow_monitor,
    "FlowMonitorRef": lambda: pb.FlowMonitorRef(flow="f1", role=pb.ROLE_INGRESS),
    "ReadCountersRequest": lambda: pb.ReadCountersRequest(flow="f1"),
    "FlowCounter": _flow_counter,
    "Counters": _counters,
    "StampSession": _stamp_session,
    "StampSessionRef": lambda: pb.StampSessionRef(name="s1"),
    "StampReflector": _stamp_reflector,
    "StampReflectorRef": pb.StampReflectorRef,
    "StampSessionStatus": _session_status,
    "StampReflectorStatus": _reflector_status,
    "GetStateRequest": pb.GetStateRequest,
    "NodeState": _node_state,
    "BatchItem": _batch_item,
    "Batch": _batch,
    "BatchResult": _batch_result,
    "BatchReply": _batch_reply,
}


def test_every_message_has_a_builder():
    assert set(BUILDERS) == set(pb.DESCRIPTOR.message_types_by_name)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_message_round_trips_with_every_field_set(name):
    message = BUILDERS[name]()
    set_fields = {field.name for field, _ in message.ListFields()}
    alone = {f.name for f in message.DESCRIPTOR.fields if f.containing_oneof is None}
    assert alone <= set_fields, "the builder must set every field outside a oneof"
    for oneof in message.DESCRIPTOR.oneofs:  # and exactly one field of each oneof
        assert len({f.name for f in oneof.fields} & set_fields) == 1, f"{oneof.name}: set exactly one"
    wire = message.SerializeToString()
    back = type(message).FromString(wire)
    assert back == message
    assert back.SerializeToString() == wire


@pytest.mark.parametrize("field", sorted(_BATCH_OBJECTS))
def test_every_kind_of_batch_item_round_trips(field):
    assert set(_BATCH_OBJECTS) == {f.name for f in pb.BatchItem.DESCRIPTOR.oneofs_by_name["object"].fields}
    message = _batch_item(field)
    assert message.WhichOneof("object") == field
    wire = message.SerializeToString()
    back = type(message).FromString(wire)
    assert back == message
    assert back.SerializeToString() == wire


def test_committed_stubs_are_current(tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc")
    code = protoc.main(["grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}",
                        f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "proto" / PROTO)])
    assert code == 0
    for name in GENERATED:
        fresh = (tmp_path / PROTO.parent / name).read_text()
        committed = (ROOT / PROTO.parent / name).read_text()
        assert committed == fresh, f"{PROTO.parent / name} is stale: regenerate it from {PROTO}"


def _declared_rpcs() -> dict[str, tuple[str, str]]:
    text = (ROOT / "proto" / PROTO).read_text()
    text = re.sub(r"//[^\n]*", "", text)
    return {m[0]: (m[1], m[2])
            for m in re.findall(r"\brpc\s+(\w+)\s*\(\s*(\w+)\s*\)\s*returns\s*\(\s*(\w+)\s*\)", text)}


def test_descriptor_matches_the_proto():
    assert pb.DESCRIPTOR.package == "srv6pm.southbound.v1"
    assert list(pb.DESCRIPTOR.services_by_name) == ["NodeExporter"]
    service = pb.DESCRIPTOR.services_by_name["NodeExporter"]
    assert service.full_name == "srv6pm.southbound.v1.NodeExporter"
    found = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    declared = _declared_rpcs()
    assert len(declared) == 14
    assert found == declared
    for m in service.methods:
        assert not m.client_streaming and not m.server_streaming
    # the generated stub and servicer carry every RPC too
    for name in declared:
        assert callable(getattr(rpc.NodeExporterServicer, name))
