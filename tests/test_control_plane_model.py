"""One model for the control plane: every configuration file becomes the southbound messages, with the
rules and defaults of srv6pm.southbound.validate alone.

The defaults are changed in validate.DEFAULTS (the one table) and every reader is seen to follow; a reader
that restated a default would keep the old value and fail here.
"""

from types import MappingProxyType

import pytest

from srv6pm.collector import config as collector_config
from srv6pm.collector import desired, flowmon
from srv6pm.exporter import config as exporter_config
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.stamp import protocol
from srv6pm.stamp.reflector import ReflectorConfig
from srv6pm.stamp.sender import SenderConfig

COLLECTOR = """
nodes:
  - {name: r1, grpc: "127.0.0.1:50051", pm_address: "fcff:1::2", sids: [{sid: "fcff:1::1", behavior: End}]}
  - {name: r2, grpc: "127.0.0.1:50052", sids: [{sid: "fcff:2::1", behavior: End}]}
  - {name: r4, grpc: "127.0.0.1:50054", pm_address: "fcff:4::2",
     sids: [{sid: "fcff:4::1", behavior: End}, {sid: "fcff:4::100", behavior: End.DT6}]}
stamp:
  - {name: s1, from: r1, to: r4, via: [r2], return_via: [r2], rate: 10%s}
"""

EXPORTER = """
node: r1
period: 2
stamp:
  reflector: {bind: "fcff:1::2"}
  sessions:
    - {name: s1, dest: "fcff:4::2", source: "fcff:1::2", segments: ["fcff:2::1"], return_segments: ["fcff:2::1"],
       rate: 10, reflector: r4%s}
"""


def readings(extra: str = ""):
    """The collector's and the exporter's message for the same session (``extra``: more YAML fields)."""
    c = collector_config.parse(COLLECTOR % extra, "c.yaml")
    (collector,) = [m for m in desired.desired_state(c)["r1"].values() if isinstance(m, pb.StampSession)]
    e = exporter_config.parse(EXPORTER % extra, "e.yaml")
    (exporter,) = e.sessions
    return collector, exporter, c, e


@pytest.mark.parametrize("extra", ["", ", timeout: 0.5", ", liveness: true", ", liveness: {up_after: 5}"])
def test_the_collector_and_the_exporter_read_one_session_as_one_message(extra):
    collector, exporter, _, _ = readings(extra)
    assert collector == exporter
    assert validate.stamp_session(collector) == collector  # already the normal form


def test_defaults_come_from_the_one_table_only(monkeypatch):
    changed = {kind: dict(fields) for kind, fields in validate.DEFAULTS.items()}
    changed["StampSession"].update(port=9862, timeout_s=4.5, liveness_down_after=7, liveness_up_after=9)
    changed["StampReflector"].update(port=9863)
    changed["LocalSid"].update(device="dummy0", table=100)
    monkeypatch.setattr(validate, "DEFAULTS", MappingProxyType({k: MappingProxyType(v) for k, v in changed.items()}))

    collector, exporter, c, e = readings(", liveness: true")
    for session in (collector, exporter):
        assert (session.port, session.timeout_s, session.liveness_down_after, session.liveness_up_after) == (
            9862, 4.5, 7, 9)
    assert e.reflector.port == 9863
    (reflector,) = [m for m in desired.desired_state(c)["r4"].values() if isinstance(m, pb.StampReflector)]
    assert reflector.port == 9863
    assert {(s.device, s.table) for s in c.node("r4").sids} == {("dummy0", 0), ("dummy0", 100)}

    sender = SenderConfig.from_session(collector)  # built straight from the message: nothing defaulted on the way
    assert (sender.port, sender.timeout, sender.liveness.down_after, sender.liveness.up_after) == (9862, 4.5, 7, 9)
    assert ReflectorConfig.from_message(reflector).port == 9863


def test_the_stamp_tools_own_defaults_are_the_tables():
    table = validate.DEFAULTS["StampSession"]
    assert (table["port"], table["timeout_s"]) == (protocol.STAMP_PORT, protocol.DEFAULT_TIMEOUT_S)
    sender = SenderConfig(dest="::1")
    assert (sender.port, sender.timeout) == (table["port"], table["timeout_s"])
    assert ReflectorConfig().port == validate.DEFAULTS["StampReflector"]["port"]


def test_a_sender_refuses_a_message_that_was_not_normalised():
    with pytest.raises(ValueError, match="port 0"):
        SenderConfig.from_session(pb.StampSession(name="s1", destination="::1", rate=1))


def test_the_files_report_the_rule_s_verdict_on_their_own_field():
    with pytest.raises(collector_config.ConfigError, match=r"^c.yaml: stamp\[0\].timeout: 99 not in 0.01..60$"):
        collector_config.parse(COLLECTOR % ", timeout: 99", "c.yaml")
    with pytest.raises(exporter_config.ConfigError,
                       match=r"^e.yaml: stamp.sessions\[0\].timeout: 99 not in 0.01..60$"):
        exporter_config.parse(EXPORTER % ", timeout: 99", "e.yaml")


def test_the_collector_and_the_exporter_read_one_flow_as_one_message():
    c = collector_config.parse("""
dataplane: nftables
nodes:
  - {name: r1, grpc: "127.0.0.1:50051", sids: [{sid: "fcff:1::1", behavior: End}]}
  - {name: r4, grpc: "127.0.0.1:50054", sids: [{sid: "FCFF:4:0::100", behavior: End.DT6}]}
flows:
  - {name: f1, from: r1, to: r4, source: "FD01:1::2", destination: "fd01:4:0::101/128"}
""", "c.yaml")
    wanted = desired.desired_state(flowmon.assign(c, flowmon.Allocator(None)))
    (ingress,) = [m for m in wanted["r1"].values() if isinstance(m, pb.FlowMonitor)]
    (egress,) = [m for m in wanted["r4"].values() if isinstance(m, pb.FlowMonitor)]
    e = exporter_config.parse("""
node: r1
period: 2
dataplane: nftables
flows:
  - {name: f1, role: ingress, src: "fd01:1::2/128", dst: "FD01:4::101", flowmon_id: 1}
  - {name: f1, role: egress, src: "FD01:1::2", dst: "fd01:4::101/128", flowmon_id: 1, position: 1}
""", "e.yaml")
    assert list(e.flows) == [ingress, egress]
    assert [validate.request(m) for m in e.flows] == list(e.flows)


def test_a_value_of_the_wrong_type_is_the_file_s_error_a_value_out_of_range_the_rule_s():
    with pytest.raises(collector_config.ConfigError,
                       match=r"^c.yaml: stamp\[0\].dscp: must be a whole number \(0 or more\), got text 'ef'$"):
        collector_config.parse(COLLECTOR % ", dscp: ef", "c.yaml")
    with pytest.raises(collector_config.ConfigError, match=r"^c.yaml: stamp\[0\].dscp: 64 is not a DSCP \(0..63\)$"):
        collector_config.parse(COLLECTOR % ", dscp: 64", "c.yaml")
    with pytest.raises(exporter_config.ConfigError,
                       match=r"^e.yaml: stamp.sessions\[0\].port: must be a whole number \(0 or more\), got int -1$"):
        exporter_config.parse(EXPORTER % ", port: -1", "e.yaml")
    with pytest.raises(exporter_config.ConfigError, match=r"^e.yaml: stamp.sessions\[0\].port: 70000 not in 1..65535$"):
        exporter_config.parse(EXPORTER % ", port: 70000", "e.yaml")


def test_a_file_that_says_0_where_a_message_s_0_is_the_default_is_refused():
    with pytest.raises(collector_config.ConfigError, match=r"^c.yaml: stamp\[0\].timeout: 0 not in 0.01..60$"):
        collector_config.parse(COLLECTOR % ", timeout: 0", "c.yaml")
    with pytest.raises(exporter_config.ConfigError, match=r"^e.yaml: stamp.sessions\[0\].timeout: 0 not in 0.01..60$"):
        exporter_config.parse(EXPORTER % ", timeout: 0", "e.yaml")
    with pytest.raises(exporter_config.ConfigError, match=r"^e.yaml: stamp.sessions\[0\].port: 0 not in 1..65535$"):
        exporter_config.parse(EXPORTER % ", port: 0", "e.yaml")
    with pytest.raises(exporter_config.ConfigError, match=r"^e.yaml: stamp.reflector.port: 0 not in 1..65535$"):
        exporter_config.parse(EXPORTER.replace('bind: "fcff:1::2"', 'bind: "fcff:1::2", port: 0') % "", "e.yaml")
