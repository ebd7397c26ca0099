"""The exporter with the eBPF data plane and the eBPF STAMP reflector: its API over real gRPC, which backend
runs (seen in the kernel's tc filters), and the clear error when eBPF cannot run.

Needs root (a real namespace, programs loaded by libbpf, tc filters) and the
compiled objects (./setup.sh). The refusal tests compile a program the
verifier must reject with the same clang, and point the BTF check at a path
that does not exist.
"""

from __future__ import annotations

import json
import secrets
import subprocess

import grpc
import pytest
from netns_support import skip_reason
from test_exporter_api import Running, ns  # noqa: F401  (the namespace fixture)

from srv6pm import bpf
from srv6pm.config import KafkaSettings
from srv6pm.exporter import ebpf
from srv6pm.exporter.blocks import Baselines
from srv6pm.exporter.config import parse
from srv6pm.exporter.service import DataplaneUnavailable, Exporter
from srv6pm.southbound.v1 import southbound_pb2 as pb

_REASON = skip_reason() or (None if ebpf.OBJECT.exists() else f"{ebpf.OBJECT} is not built (./setup.sh)")
pytestmark = [pytest.mark.netns, pytest.mark.services, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

FLOW = dict(flow="f1", source_prefix="fd00:1::2/128", destination_prefix="fd00:4::100/128")


@pytest.fixture
def running_ebpf(ns, broker, tmp_path):  # noqa: F811
    node = "ebn" + secrets.token_hex(3)
    r = Running(ns, broker, state_file=tmp_path / "state.json", dataplane="ebpf", node=node)
    yield r
    r.stop()
    bpf.unpin(ebpf.pin_dir(node))


def test_info_names_the_dataplane(running_ebpf):
    assert running_ebpf.stub.GetInfo(pb.GetInfoRequest()).dataplane == "ebpf"


def test_flows_of_every_role_with_their_flowmon_id(running_ebpf):
    stub = running_ebpf.stub
    assert stub.StartFlowMonitoring(pb.FlowMonitor(role=pb.ROLE_INGRESS, flowmon_id=11, **FLOW)).changed
    assert stub.StartFlowMonitoring(pb.FlowMonitor(role=pb.ROLE_TRANSIT, flowmon_id=12, position=1,
                                                   **{**FLOW, "flow": "f2"})).changed
    assert not stub.StartFlowMonitoring(pb.FlowMonitor(role=pb.ROLE_INGRESS, flowmon_id=11, **FLOW)).changed
    counters = stub.ReadCounters(pb.ReadCountersRequest()).counters
    got = sorted((c.flow, c.role, c.colour, c.flowmon_id, c.packets) for c in counters)
    assert got == [("f1", pb.ROLE_INGRESS, 0, 11, 0), ("f1", pb.ROLE_INGRESS, 1, 11, 0),
                   ("f2", pb.ROLE_TRANSIT, 0, 12, 0), ("f2", pb.ROLE_TRANSIT, 1, 12, 0)]
    state = stub.GetState(pb.GetStateRequest())
    assert {(f.flow, f.flowmon_id, f.position) for f in state.flows} == {("f1", 11, 0), ("f2", 12, 1)}
    assert stub.StopFlowMonitoring(pb.FlowMonitorRef(flow="f2", role=pb.ROLE_TRANSIT)).changed
    assert {c.flow for c in stub.ReadCounters(pb.ReadCountersRequest()).counters} == {"f1"}


def test_a_tc_filter_handed_over_to_tcx_makes_the_next_readings_baselines(ns, broker, tmp_path):  # noqa: F811
    """An earlier exporter counted on a clsact filter (hook tc) and this one takes its place with tcx links: the
    packets of the hand-over are counted by neither, so the periods in flight must not become blocks. The
    exporter forgets its baselines (the state file says so at once) instead of publishing short counts."""
    if not bpf.tcx_supported():
        pytest.skip("this kernel has no tcx hooks: nothing is handed over")
    node = "ebg" + secrets.token_hex(3)
    state = tmp_path / "state.json"
    planted = Baselines(state)  # a reading of the earlier exporter, for a period of colour 0
    planted.advance("ingress", 0, 8, "g", {"f1": (123_456, 1)})
    planted.save()
    old = ebpf.EbpfTable(node, ns, hook="tc")
    try:
        old.install([ebpf.Point("f1", "ingress", 11, 0, FLOW["source_prefix"], FLOW["destination_prefix"])],
                    colour=0)
    finally:
        old.close()  # the filter and the pinned maps stay, as an exporter's stop leaves them
    assert "altmark" in _filters(ns, "v0", "egress")
    r = Running(ns, broker, state_file=state, dataplane="ebpf", node=node)
    try:
        assert r.stub.StartFlowMonitoring(pb.FlowMonitor(role=pb.ROLE_INGRESS, flowmon_id=11, **FLOW)).changed
        assert "altmark" not in _filters(ns, "v0", "egress")  # the tcx link took its place
        entries = json.loads(state.read_text())["baselines"].values()
        assert all(e["counts"].get("f1", [0])[0] != 123_456 for e in entries), entries
    finally:
        r.stop()
        bpf.unpin(ebpf.pin_dir(node))


def test_two_flows_with_one_flowmon_id_are_refused(running_ebpf):
    stub = running_ebpf.stub
    stub.StartFlowMonitoring(pb.FlowMonitor(role=pb.ROLE_INGRESS, flowmon_id=11, **FLOW))
    with pytest.raises(grpc.RpcError) as info:
        stub.StartFlowMonitoring(pb.FlowMonitor(role=pb.ROLE_EGRESS, flowmon_id=11, position=2,
                                                **{**FLOW, "flow": "g"}))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "same FlowMonID 11" in info.value.details()


def test_a_flow_without_flowmon_id_is_an_invalid_argument(running_ebpf):
    with pytest.raises(grpc.RpcError) as info:
        running_ebpf.stub.StartFlowMonitoring(pb.FlowMonitor(role=pb.ROLE_INGRESS, **FLOW))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("flowmon_id: missing")


def test_transit_on_the_nftables_data_plane_is_refused(ns, broker, tmp_path):  # noqa: F811
    r = Running(ns, broker, state_file=tmp_path / "state.json", dataplane="nftables")
    try:
        with pytest.raises(grpc.RpcError) as info:
            r.stub.StartFlowMonitoring(pb.FlowMonitor(role=pb.ROLE_TRANSIT, flowmon_id=3, position=1, **FLOW))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "transit counting needs the ebpf data plane" in info.value.details()
        assert r.stub.GetInfo(pb.GetInfoRequest()).dataplane == "nftables"
    finally:
        r.stop()


def _exporter(broker: str) -> Exporter:
    config = parse("node: eb1\nperiod: 1\ndataplane: ebpf\n")
    return Exporter(config, KafkaSettings(bootstrap=broker))


def test_missing_btf_is_one_clear_error(broker, monkeypatch):
    monkeypatch.setattr(bpf, "BTF_PATH", "/nonexistent/btf/vmlinux")
    exporter = _exporter(broker)
    try:
        with pytest.raises(DataplaneUnavailable) as info:
            exporter.start()
    finally:
        exporter.close()
    text = str(info.value)
    assert "the ebpf data plane cannot run here: the kernel has no BTF (/nonexistent/btf/vmlinux is missing)" in text
    assert "choose the nftables data plane instead (dataplane: nftables" in text


BAD_PROGRAM = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("tc")
int altmark_mark(struct __sk_buff *skb)
{
    unsigned char *data = (void *)(long)skb->data;
    return data[60];   /* no bounds check against data_end: the verifier must refuse this */
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_a_refused_program_shows_the_verifier_log(broker, monkeypatch, tmp_path):
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD_PROGRAM)
    (obj,) = bpf.build([src], tmp_path / "build")
    with pytest.raises(bpf.VerifierError) as direct:
        bpf.BpfObject(obj)
    assert "invalid access to packet" in direct.value.log  # the kernel verifier's own words
    monkeypatch.setattr(ebpf, "OBJECT", obj)
    exporter = _exporter(broker)
    try:
        with pytest.raises(DataplaneUnavailable) as info:
            exporter.start()
    finally:
        exporter.close()
    first, *rest = str(info.value).splitlines()
    assert first.startswith("the ebpf data plane cannot run here: ") and "nftables" in first
    assert any("invalid access to packet" in line for line in rest)


def test_build_reports_clang_errors(tmp_path):
    src = tmp_path / "broken.bpf.c"
    src.write_text("this is not C\n")
    with pytest.raises(bpf.BpfError, match="clang could not compile"):
        bpf.build([src], tmp_path / "build")
    assert subprocess.run(["clang", "--version"], capture_output=True).returncode == 0


def _filters(ns: str, dev: str = "v0", direction: str = "ingress") -> str:
    """The tc filters of ``dev``'s ``direction`` in ``ns`` (``tc filter show``: the ebpf reflector attaches on
    veth ingress, a clsact altmark filter on egress)."""
    from srv6pm.netns import NetnsThread
    with NetnsThread(ns) as t:
        return t.call(subprocess.run, ["tc", "filter", "show", "dev", dev, direction], capture_output=True,
                      text=True, check=True).stdout


REFLECTOR = pb.StampReflector(bind="fc00:1::1")


def test_the_reflector_backend_is_ebpf_unless_asked_otherwise(ns, broker, tmp_path):  # noqa: F811
    r = Running(ns, broker, state_file=tmp_path / "state.json", node="rb" + secrets.token_hex(3))
    try:
        assert r.stub.StartStampReflector(REFLECTOR).changed
        assert "name stamp_reflect_t " in _filters(ns)  # the exporter's default: ebpf (tc on veth)
        socket_one = pb.StampReflector(bind="fc00:1::1", backend="socket")
        assert r.stub.StartStampReflector(socket_one).changed
        assert "stamp_reflect" not in _filters(ns)
        assert r.stub.GetState(pb.GetStateRequest()).stamp_reflector.backend == "socket"
        assert r.stub.StartStampReflector(pb.StampReflector(bind="fc00:1::1", backend="ebpf")).changed
        assert "name stamp_reflect_t " in _filters(ns)
        assert r.stub.StopStampReflector(pb.StampReflectorRef()).changed
        assert "stamp_reflect" not in _filters(ns)
    finally:
        r.stop()


def test_the_files_reflector_backend_is_the_default(ns, broker, tmp_path):  # noqa: F811
    r = Running(ns, broker, state_file=tmp_path / "state.json", extra="stamp: {reflector: {backend: socket}}\n")
    try:
        assert r.stub.StartStampReflector(REFLECTOR).changed
        assert "stamp_reflect" not in _filters(ns)
        assert r.stub.GetState(pb.GetStateRequest()).reflector_status.running
    finally:
        r.stop()


def test_an_ebpf_reflector_that_cannot_run_is_refused_with_the_reason(ns, broker, tmp_path, monkeypatch):  # noqa: F811
    r = Running(ns, broker, state_file=tmp_path / "state.json")
    try:
        monkeypatch.setattr(bpf, "BTF_PATH", "/nonexistent/btf/vmlinux")
        with pytest.raises(grpc.RpcError) as info:
            r.stub.StartStampReflector(REFLECTOR)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = info.value.details()
        assert "STAMP reflector on [fc00:1::1]:862 (ebpf): the ebpf reflector cannot run here: the kernel has no " \
               "BTF (/nonexistent/btf/vmlinux is missing)" in details
        assert 'choose the socket reflector instead (backend: "socket" in the StampReflector message' in details
        assert not r.stub.GetState(pb.GetStateRequest()).HasField("stamp_reflector")  # nothing was applied
        assert r.stub.StartStampReflector(pb.StampReflector(bind="fc00:1::1", backend="socket")).changed
    finally:
        r.stop()
