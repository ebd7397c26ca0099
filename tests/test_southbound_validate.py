"""srv6pm.southbound.validate: normal forms, errors naming the field, idempotence."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srv6pm.southbound import InvalidArgument, key_of, pb
from srv6pm.southbound import validate as v

# ---------------------------------------------------------------- good input, normal forms


def test_local_sid_end_dt6_defaults():
    given_ = pb.LocalSid(sid="FC00:0002:0000::0100", behavior=pb.SID_BEHAVIOR_END_DT6)
    out = v.local_sid(given_)
    assert out == pb.LocalSid(sid="fc00:2::100", behavior=pb.SID_BEHAVIOR_END_DT6, table=254, device="lo")
    assert given_.sid == "FC00:0002:0000::0100" and given_.table == 0 and given_.device == ""  # not modified


def test_local_sid_keeps_explicit_table_and_device():
    out = v.local_sid(pb.LocalSid(sid="fc00::1", behavior=pb.SID_BEHAVIOR_END_DT6, table=100, device="eth0"))
    assert (out.table, out.device) == (100, "eth0")


@pytest.mark.parametrize("behavior", [pb.SID_BEHAVIOR_END_X, pb.SID_BEHAVIOR_END_DX6])
def test_local_sid_nexthop_normalised(behavior):
    out = v.local_sid(pb.LocalSid(sid="fc00::1", behavior=behavior, nexthop="FD00:0::0001"))
    assert out.nexthop == "fd00::1" and out.table == 0 and out.device == "lo"


def test_local_sid_end():
    assert v.local_sid(pb.LocalSid(sid="fc00::1", behavior=pb.SID_BEHAVIOR_END)) == pb.LocalSid(
        sid="fc00::1", behavior=pb.SID_BEHAVIOR_END, device="lo")


def test_policy_normalised():
    given_ = pb.Policy(name="p-1.a_b", destination="FD00:4:0::/64", segments=["FC00:2::0001", "fc00:3::1"])
    out = v.policy(given_)
    assert out == pb.Policy(name="p-1.a_b", destination="fd00:4::/64", segments=["fc00:2::1", "fc00:3::1"],
                            mode=pb.ENCAP_MODE_ENCAP)
    assert list(given_.segments) == ["FC00:2::0001", "fc00:3::1"] and given_.mode == 0


def test_policy_bare_address_is_a_host_prefix_and_inline_kept():
    out = v.policy(pb.Policy(name="p", destination="fd00::1", segments=["fc00::1"] * 16,
                             mode=pb.ENCAP_MODE_INLINE, device="veth0"))
    assert (out.destination, out.mode, out.device, len(out.segments)) == ("fd00::1/128", pb.ENCAP_MODE_INLINE,
                                                                         "veth0", 16)


def test_flow_monitor_normalised():
    out = v.flow_monitor(pb.FlowMonitor(flow="f1", role=pb.ROLE_INGRESS, source_prefix="FD00:1::/64",
                                        destination_prefix="fd00:4:0:0::/64"))
    assert (out.source_prefix, out.destination_prefix) == ("fd00:1::/64", "fd00:4::/64")


def test_stamp_session_defaults():
    out = v.stamp_session(pb.StampSession(name="s1", destination="FC00:4::1", rate=10,
                                          return_segments=["FC00:3::1"]))
    assert out == pb.StampSession(name="s1", destination="fc00:4::1", port=862, rate=10.0, timeout_s=2.0,
                                  return_segments=["fc00:3::1"])


def test_stamp_session_ipv4_and_explicit_values():
    out = v.stamp_session(pb.StampSession(name="s", destination="10.0.0.4", source="10.0.0.1", port=8620,
                                          rate=0.01, timeout_s=60, reflector_node="r4",
                                          auth_key_file="/etc/srv6pm/k"))
    assert (out.destination, out.source, out.port, out.rate, out.timeout_s) == ("10.0.0.4", "10.0.0.1", 8620,
                                                                                0.01, 60.0)
    assert (out.reflector_node, out.auth_key_file) == ("r4", "/etc/srv6pm/k")


def test_stamp_session_liveness_defaults_and_values():
    off = v.stamp_session(pb.StampSession(name="s", destination="fc00::4", rate=100))
    assert (off.liveness, off.liveness_down_after, off.liveness_up_after) == (False, 0, 0)
    on = v.stamp_session(pb.StampSession(name="s", destination="fc00::4", rate=100, liveness=True))
    assert (on.liveness_down_after, on.liveness_up_after) == (3, 3)
    mine = v.stamp_session(pb.StampSession(name="s", destination="fc00::4", rate=100, liveness=True,
                                           liveness_down_after=1, liveness_up_after=1000))
    assert (mine.liveness_down_after, mine.liveness_up_after) == (1, 1000)


def test_stamp_session_rfc8972_settings():
    out = v.stamp_session(pb.StampSession(name="s", destination="fc00:4::1", rate=1, direct_measurement=True,
                                          dscp=0, ssid=65535, stop_if_ssid_ignored=True))
    assert out.direct_measurement and out.HasField("dscp") and out.dscp == 0
    assert (out.ssid, out.stop_if_ssid_ignored) == (65535, True)
    assert not v.stamp_session(pb.StampSession(name="s", destination="fc00:4::1", rate=1)).HasField("dscp")


def test_stamp_reflector_defaults():
    out = v.stamp_reflector(pb.StampReflector(bind="0:0::0", stateful=True))
    assert out == pb.StampReflector(bind="::", port=862, stateful=True)
    assert out.backend == ""  # the exporter's default, not made explicit here
    assert v.stamp_reflector(pb.StampReflector(bind="0.0.0.0", port=9000)).port == 9000
    for backend in ("ebpf", "socket"):
        assert v.stamp_reflector(pb.StampReflector(bind="::", backend=backend)).backend == backend


def test_refs():
    assert v.local_sid_ref(pb.LocalSidRef(sid="FC00::01")).sid == "fc00::1"
    assert v.policy_ref(pb.PolicyRef(name="p1")).name == "p1"
    assert v.flow_monitor_ref(pb.FlowMonitorRef(flow="f1", role=pb.ROLE_EGRESS)).role == pb.ROLE_EGRESS
    assert v.stamp_session_ref(pb.StampSessionRef(name="s1")).name == "s1"
    assert v.stamp_reflector_ref(pb.StampReflectorRef()) == pb.StampReflectorRef()


def test_request_dispatches_by_type_and_refuses_others():
    assert v.request(pb.LocalSidRef(sid="FC00::1")).sid == "fc00::1"
    with pytest.raises(TypeError):
        v.request(pb.NodeInfo())
    with pytest.raises(TypeError):
        v.policy(pb.PolicyRef(name="p"))


def test_unknown_fields_are_dropped():
    # a newer peer's field 99 (string "x") appended to a valid Policy
    wire = pb.Policy(name="p", destination="fd00::/64", segments=["fc00::1"]).SerializeToString() + b"\x9a\x06\x01x"
    assert pb.Policy.FromString(wire).SerializeToString() == wire  # the parsed input keeps field 99
    out = v.policy(pb.Policy.FromString(wire))
    assert out.SerializeToString() == v.policy(pb.Policy.FromString(wire[:-4])).SerializeToString()


def test_key_of():
    assert key_of(pb.LocalSid(sid="fc00::1")) == key_of(pb.LocalSidRef(sid="fc00::1")) == "fc00::1"
    assert key_of(pb.Policy(name="p")) == key_of(pb.PolicyRef(name="p")) == "p"
    assert key_of(pb.FlowMonitor(flow="f", role=pb.ROLE_EGRESS)) == ("f", pb.ROLE_EGRESS)
    assert key_of(pb.FlowMonitorRef(flow="f", role=pb.ROLE_EGRESS)) == ("f", pb.ROLE_EGRESS)
    assert key_of(pb.StampSession(name="s")) == key_of(pb.StampSessionRef(name="s")) == "s"
    assert key_of(pb.StampReflector(bind="::")) == key_of(pb.StampReflectorRef()) == "reflector"
    with pytest.raises(TypeError):
        key_of(pb.NodeInfo())


def test_error_text_is_field_then_message():
    err = InvalidArgument("segments[1]", "'fcff::zz' is not an IPv6 address")
    assert isinstance(err, ValueError)
    assert str(err) == "segments[1]: 'fcff::zz' is not an IPv6 address"


# Each validator is told about every field of its message; a new field in the proto fails here
# until the validator (and its docstring) say what is valid for it.
KNOWN_FIELDS = {
    "LocalSid": {"sid", "behavior", "nexthop", "table", "device"},
    "LocalSidRef": {"sid"},
    "Policy": {"name", "destination", "segments", "mode", "device"},
    "PolicyRef": {"name"},
    "FlowMonitor": {"flow", "role", "source_prefix", "destination_prefix", "flowmon_id", "position"},
    "FlowMonitorRef": {"flow", "role"},
    "StampSession": {"name", "destination", "source", "port", "segments", "return_segments", "rate", "timeout_s",
                     "reflector_node", "auth_key_file", "liveness", "liveness_down_after", "liveness_up_after",
                     "direct_measurement", "dscp", "ssid", "stop_if_ssid_ignored"},
    "StampSessionRef": {"name"},
    "StampReflector": {"bind", "port", "stateful", "auth_key_file", "backend"},
    "StampReflectorRef": set(),
}


@pytest.mark.parametrize("name", sorted(KNOWN_FIELDS))
def test_validators_know_every_field(name):
    assert {f.name for f in pb.DESCRIPTOR.message_types_by_name[name].fields} == KNOWN_FIELDS[name]


# ---------------------------------------------------------------- errors name the field

SID_OK = dict(sid="fc00::1", behavior=pb.SID_BEHAVIOR_END)
POLICY_OK = dict(name="p1", destination="fd00::/64", segments=["fc00::1"])
FLOW_OK = dict(flow="f1", role=pb.ROLE_INGRESS, source_prefix="fd00:1::/64", destination_prefix="fd00:4::/64")
SESSION_OK = dict(name="s1", destination="fc00::4", rate=1.0)
REFLECTOR_OK = dict(bind="::")

BAD = [
    # local SIDs
    (pb.LocalSid, SID_OK, dict(sid=""), "sid", "missing"),
    (pb.LocalSid, SID_OK, dict(sid="fc00::zz"), "sid", "not an IPv6 address"),
    (pb.LocalSid, SID_OK, dict(sid="10.0.0.1"), "sid", "not an IPv6 address"),
    (pb.LocalSid, SID_OK, dict(sid="fc00::/64"), "sid", "not an IPv6 address"),
    (pb.LocalSid, SID_OK, dict(sid="fe80::1%eth0"), "sid", "scoped"),
    (pb.LocalSid, SID_OK, dict(sid=" fc00::1"), "sid", "not an IPv6 address"),
    (pb.LocalSid, SID_OK, dict(behavior=pb.SID_BEHAVIOR_UNSPECIFIED), "behavior", "missing"),
    (pb.LocalSid, SID_OK, dict(behavior=42), "behavior", "unknown value 42"),
    (pb.LocalSid, SID_OK, dict(behavior=pb.SID_BEHAVIOR_END_DX6), "nexthop", "missing"),
    (pb.LocalSid, SID_OK, dict(behavior=pb.SID_BEHAVIOR_END_X), "nexthop", "missing"),
    (pb.LocalSid, SID_OK, dict(behavior=pb.SID_BEHAVIOR_END_X, nexthop="fe80::zz"), "nexthop", "not an IPv6"),
    (pb.LocalSid, SID_OK, dict(nexthop="fd00::1"), "nexthop", "only End.X and End.DX6"),
    (pb.LocalSid, SID_OK, dict(behavior=pb.SID_BEHAVIOR_END_DT6, nexthop="fd00::1"), "nexthop", "only"),
    (pb.LocalSid, SID_OK, dict(table=254), "table", "only End.DT6"),
    (pb.LocalSid, SID_OK, dict(device="a/b"), "device", "not a valid interface name"),
    (pb.LocalSid, SID_OK, dict(device="a b"), "device", "not a valid interface name"),
    (pb.LocalSid, SID_OK, dict(device="eth0:1"), "device", "not a valid interface name"),
    (pb.LocalSid, SID_OK, dict(device="x" * 16), "device", "not a valid interface name"),
    (pb.LocalSid, SID_OK, dict(device="é" * 8), "device", "not a valid interface name"),  # 16 bytes
    (pb.LocalSid, SID_OK, dict(device="."), "device", "not a valid interface name"),
    (pb.LocalSid, SID_OK, dict(device=".."), "device", "not a valid interface name"),
    # policies
    (pb.Policy, POLICY_OK, dict(name=""), "name", "missing"),
    (pb.Policy, POLICY_OK, dict(name="-p"), "name", "not a valid name"),
    (pb.Policy, POLICY_OK, dict(name="p/1"), "name", "not a valid name"),
    (pb.Policy, POLICY_OK, dict(name="p\n"), "name", "not a valid name"),
    (pb.Policy, POLICY_OK, dict(name="p" * 65), "name", "not a valid name"),
    (pb.Policy, POLICY_OK, dict(destination=""), "destination", "missing"),
    (pb.Policy, POLICY_OK, dict(destination="fd00::1/64"), "destination", "host bits set"),
    (pb.Policy, POLICY_OK, dict(destination="fd00::/129"), "destination", "not an IPv6 prefix"),
    (pb.Policy, POLICY_OK, dict(destination="10.0.0.0/8"), "destination", "not an IPv6 prefix"),
    (pb.Policy, POLICY_OK, dict(segments=[]), "segments", "missing"),
    (pb.Policy, POLICY_OK, dict(segments=["fc00::1", "fcff::zz"]), "segments[1]", "'fcff::zz' is not an IPv6"),
    (pb.Policy, POLICY_OK, dict(segments=["fc00::1", ""]), "segments[1]", "missing"),
    (pb.Policy, POLICY_OK, dict(segments=["fc00::1"] * 17), "segments", "17 segments, at most 16"),
    (pb.Policy, POLICY_OK, dict(mode=7), "mode", "unknown value 7"),
    (pb.Policy, POLICY_OK, dict(device="bad/dev"), "device", "not a valid interface name"),
    # flows
    (pb.FlowMonitor, FLOW_OK, dict(flow="f 1"), "flow", "not a valid name"),
    (pb.LocalSid, dict(sid="fc00::1", behavior=pb.SID_BEHAVIOR_END), dict(sid="::"), "sid",
     "'::' is the unspecified address, which cannot be a SID"),
    (pb.LocalSid, dict(sid="fc00::1", behavior=pb.SID_BEHAVIOR_END), dict(sid="ff02::1"), "sid", "multicast"),
    (pb.LocalSid, dict(sid="fc00::1", behavior=pb.SID_BEHAVIOR_END), dict(sid="fe80::1"), "sid", "link-local"),
    (pb.LocalSid, dict(sid="fc00::1", behavior=pb.SID_BEHAVIOR_END), dict(sid="::1"), "sid", "loopback"),
    (pb.Policy, dict(name="p", destination="fd00::/64", segments=["fc00::1"]), dict(segments=["fc00::1", "ff05::2"]),
     "segments[1]", "multicast"),
    (pb.FlowMonitor, FLOW_OK, dict(role=pb.ROLE_UNSPECIFIED), "role", "missing"),
    (pb.FlowMonitor, FLOW_OK, dict(role=4), "role", "unknown value 4"),
    (pb.FlowMonitor, FLOW_OK, dict(flowmon_id=1 << 20), "flowmon_id", "not in 0..1048575"),
    (pb.FlowMonitor, FLOW_OK, dict(role=pb.ROLE_TRANSIT, position=1), "flowmon_id", "missing"),
    (pb.FlowMonitor, FLOW_OK, dict(role=pb.ROLE_INGRESS, position=2), "position", "the ingress is position 0"),
    (pb.FlowMonitor, FLOW_OK, dict(role=pb.ROLE_EGRESS, flowmon_id=7), "position", "0 is the ingress"),
    (pb.FlowMonitor, FLOW_OK, dict(position=256), "position", "not in 0..255"),
    (pb.FlowMonitor, FLOW_OK, dict(source_prefix=""), "source_prefix", "missing"),
    (pb.FlowMonitor, FLOW_OK, dict(source_prefix="fd00:1::1/64"), "source_prefix", "host bits set"),
    (pb.FlowMonitor, FLOW_OK, dict(destination_prefix="x/64"), "destination_prefix", "not an IPv6 prefix"),
    # STAMP sessions
    (pb.StampSession, SESSION_OK, dict(name=""), "name", "missing"),
    (pb.StampSession, SESSION_OK, dict(destination=""), "destination", "missing"),
    (pb.StampSession, SESSION_OK, dict(destination="r4"), "destination", "not an IPv6 or IPv4 address"),
    (pb.StampSession, SESSION_OK, dict(source="10.0.0.1"), "source", "IP version"),
    (pb.StampSession, SESSION_OK, dict(source="fc00::zz"), "source", "not an IPv6 or IPv4 address"),
    (pb.StampSession, SESSION_OK, dict(port=65536), "port", "not in 1..65535"),
    (pb.StampSession, SESSION_OK, dict(segments=["fc00::1"] * 17), "segments", "at most 16"),
    (pb.StampSession, SESSION_OK, dict(return_segments=["fc00::1", "10.0.0.1"]), "return_segments[1]",
     "not an IPv6 address"),
    (pb.StampSession, SESSION_OK, dict(destination="10.0.0.4", segments=["fc00::1"]), "segments", "IPv6 destination"),
    (pb.StampSession, SESSION_OK, dict(rate=0.0), "rate", "not in 0.01..1000"),
    (pb.StampSession, SESSION_OK, dict(rate=0.009), "rate", "not in 0.01..1000"),
    (pb.StampSession, SESSION_OK, dict(rate=1000.5), "rate", "not in 0.01..1000"),
    (pb.StampSession, SESSION_OK, dict(rate=float("nan")), "rate", "not in"),
    (pb.StampSession, SESSION_OK, dict(rate=float("inf")), "rate", "not in"),
    (pb.StampSession, SESSION_OK, dict(timeout_s=-1), "timeout_s", "not in 0.01..60"),
    (pb.StampSession, SESSION_OK, dict(timeout_s=61), "timeout_s", "not in 0.01..60"),
    (pb.StampSession, SESSION_OK, dict(reflector_node="r 4"), "reflector_node", "not a valid name"),
    (pb.StampSession, SESSION_OK, dict(auth_key_file="keys/k"), "auth_key_file", "not an absolute path"),
    (pb.StampSession, SESSION_OK, dict(liveness_down_after=3), "liveness_down_after", "only with liveness"),
    (pb.StampSession, SESSION_OK, dict(liveness_up_after=2), "liveness_up_after", "only with liveness"),
    (pb.StampSession, SESSION_OK, dict(liveness=True, liveness_down_after=1001), "liveness_down_after",
     "not in 1..1000"),
    (pb.StampSession, SESSION_OK, dict(liveness=True, liveness_up_after=5000), "liveness_up_after", "not in 1..1000"),
    (pb.StampSession, SESSION_OK, dict(dscp=64), "dscp", "not a DSCP (0..63)"),
    (pb.StampSession, SESSION_OK, dict(ssid=65536), "ssid", "not an SSID"),
    (pb.StampSession, SESSION_OK, dict(stop_if_ssid_ignored=True), "stop_if_ssid_ignored", "needs an ssid"),
    # STAMP reflector
    (pb.StampReflector, REFLECTOR_OK, dict(bind=""), "bind", "missing"),
    (pb.StampReflector, REFLECTOR_OK, dict(bind="localhost"), "bind", "not an IPv6 or IPv4 address"),
    (pb.StampReflector, REFLECTOR_OK, dict(port=70000), "port", "not in 1..65535"),
    (pb.StampReflector, REFLECTOR_OK, dict(auth_key_file="k"), "auth_key_file", "not an absolute path"),
    (pb.StampReflector, REFLECTOR_OK, dict(backend="xdp"), "backend", "'xdp' is not one of ebpf, socket"),
    (pb.StampReflector, REFLECTOR_OK, dict(backend="EBPF"), "backend", "is not one of"),
    # refs
    (pb.LocalSidRef, dict(sid="fc00::1"), dict(sid="fc00::x"), "sid", "not an IPv6 address"),
    (pb.PolicyRef, dict(name="p"), dict(name=""), "name", "missing"),
    (pb.FlowMonitorRef, dict(flow="f", role=pb.ROLE_EGRESS), dict(role=0), "role", "missing"),
    (pb.FlowMonitorRef, dict(flow="f", role=pb.ROLE_EGRESS), dict(flow="?"), "flow", "not a valid name"),
    (pb.StampSessionRef, dict(name="s"), dict(name="s s"), "name", "not a valid name"),
]


@pytest.mark.parametrize("kind, good, change, field, text", BAD,
                         ids=[f"{k.__name__}-{f}-{i}" for i, (k, _, _, f, _) in enumerate(BAD)])
def test_bad_field_is_named(kind, good, change, field, text):
    assert v.request(kind(**good)) is not None  # the base is valid: only the change is wrong
    with pytest.raises(InvalidArgument) as info:
        v.request(kind(**{**good, **change}))
    assert info.value.field == field
    assert text in info.value.message
    assert str(info.value).startswith(f"{field}: ")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- idempotence (hypothesis)

def _spellings(address: ipaddress.IPv6Address):
    """Several texts of one address: compressed, exploded, upper case."""
    return st.sampled_from([str(address), address.exploded, address.exploded.upper(), str(address).upper()])


ipv6 = st.ip_addresses(v=6).flatmap(_spellings)
ip_any = st.one_of(ipv6, st.ip_addresses(v=4).map(str))
prefix = st.builds(lambda a, n: ipaddress.IPv6Network((int(a) >> (128 - n) << (128 - n) if n else 0, n)),
                   st.ip_addresses(v=6), st.integers(0, 128)).flatmap(
    lambda net: st.sampled_from([str(net), f"{net.network_address.exploded}/{net.prefixlen}"]))
name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
ifname = st.one_of(st.just(""), st.from_regex(r"[a-z][a-z0-9_-]{0,14}", fullmatch=True))
def _can_be_sid(text: str) -> bool:
    a = ipaddress.IPv6Address(text)
    return not (a.is_unspecified or a.is_loopback or a.is_multicast or a.is_link_local)


sid = ipv6.filter(_can_be_sid)
segments = st.lists(sid, max_size=16)


@st.composite
def local_sids(draw):
    behavior = draw(st.sampled_from([1, 2, 3, 4]))
    return pb.LocalSid(sid=draw(sid), behavior=behavior,
                       nexthop=draw(ipv6) if behavior in (2, 4) else "",
                       table=draw(st.integers(0, 2**32 - 1)) if behavior == 3 else 0,
                       device=draw(ifname))


@st.composite
def stamp_sessions(draw):
    destination = draw(ip_any)
    v6 = ":" in destination
    return pb.StampSession(
        name=draw(name), destination=destination,
        source=draw(st.one_of(st.just(""), ipv6 if v6 else st.ip_addresses(v=4).map(str))),
        port=draw(st.integers(0, 65535)), segments=draw(segments) if v6 else [],
        return_segments=draw(segments) if v6 else [],
        rate=draw(st.floats(0.01, 1000)), timeout_s=draw(st.one_of(st.just(0.0), st.floats(0.01, 60))),
        reflector_node=draw(st.one_of(st.just(""), name)),
        auth_key_file=draw(st.sampled_from(["", "/etc/srv6pm/stamp.key"])),
        **draw(st.one_of(st.just({}), st.fixed_dictionaries({
            "liveness": st.just(True), "liveness_down_after": st.integers(0, 1000),
            "liveness_up_after": st.integers(0, 1000)}))))


messages = st.one_of(
    local_sids(),
    st.builds(pb.LocalSidRef, sid=ipv6),
    st.builds(pb.Policy, name=name, destination=prefix, segments=st.lists(sid, min_size=1, max_size=16),
              mode=st.sampled_from([0, 1, 2]), device=ifname),
    st.builds(pb.PolicyRef, name=name),
    st.builds(pb.FlowMonitor, flow=name, role=st.sampled_from([1, 2]), source_prefix=prefix,
              destination_prefix=prefix),
    st.builds(pb.FlowMonitorRef, flow=name, role=st.sampled_from([1, 2])),
    stamp_sessions(),
    st.builds(pb.StampSessionRef, name=name),
    st.builds(pb.StampReflector, bind=ip_any, port=st.integers(0, 65535), stateful=st.booleans(),
              auth_key_file=st.sampled_from(["", "/k"]), backend=st.sampled_from(["", "ebpf", "socket"])),
    st.just(pb.StampReflectorRef()),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_normalising_is_idempotent(message):
    before = message.SerializeToString()
    once = v.request(message)
    twice = v.request(once)
    assert twice == once
    assert twice.SerializeToString() == once.SerializeToString()
    assert message.SerializeToString() == before  # the argument is never modified
    assert key_of(twice) == key_of(once)
