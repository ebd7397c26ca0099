"""srv6pm.exporter.routes against the real kernel: SRv6 routes in a network namespace of the test's own.

Needs root. The namespace has a random name and is deleted at the end.
"""

from __future__ import annotations

import ipaddress
import secrets
import time

import pytest
from netns_support import skip_reason
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from srv6pm.exporter import routes as routes_mod
from srv6pm.exporter.routes import RTPROT_SRV6PM, RouteError, Routes
from srv6pm.netns import NetnsThread
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

pytestmark = [pytest.mark.netns, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


def _setup(ns: str) -> None:
    """lo up; veth v0 (fc00:1::1/64, up) with its peer v1 (up); veth d0/d1 left down."""
    def build():
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="v0", kind="veth", peer="v1")
            ipr.link("add", ifname="d0", kind="veth", peer="d1")
            for name in ("v0", "v1"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            ipr.addr("add", index=ipr.link_lookup(ifname="v0")[0], address="fc00:1::1", prefixlen=64, flags=0x02)
            for _ in range(50):  # wait until the connected route is usable
                if any(r.get("dst") == "fc00:1::" for r in ipr.route("dump", family=10)):
                    return
                time.sleep(0.02)
    with NetnsThread(ns) as t:
        t.call(build)


@pytest.fixture
def ns():
    name = "rt" + secrets.token_hex(4)
    pr_netns.create(name)
    try:
        _setup(name)
        yield name
    finally:
        pr_netns.remove(name)


@pytest.fixture
def routes(ns):
    with Routes(ns) as r:
        yield r


def kernel_routes(ns: str) -> list[tuple]:
    """Every IPv6 route of table main as plain data (what the kernel holds, not only srv6pm's)."""
    def dump():
        with IPRoute() as ipr:
            return sorted(repr((r.get("dst"), r["dst_len"], r["proto"], r.get("oif"), r.get("encap_type"),
                                r.get("encap"))) for r in ipr.route("dump", family=10) if r.get("table") == 254)
    with NetnsThread(ns) as t:
        return t.call(dump)


def sid(**kw) -> pb.LocalSid:
    return validate.local_sid(pb.LocalSid(**kw))


def policy(**kw) -> pb.Policy:
    return validate.policy(pb.Policy(**kw))


SIDS = [
    sid(sid="fcff:1::1", behavior=pb.SID_BEHAVIOR_END),
    sid(sid="fcff:1::2", behavior=pb.SID_BEHAVIOR_END_X, nexthop="fc00:1::2", device="v0"),
    sid(sid="fcff:1::3", behavior=pb.SID_BEHAVIOR_END_DT6),
    sid(sid="fcff:1::4", behavior=pb.SID_BEHAVIOR_END_DX6, nexthop="fc00:1::2", device="v0"),
]


@pytest.mark.srv6
def test_local_sids_of_each_behaviour_are_applied_idempotently_and_removed(ns, routes):
    for s in SIDS:
        assert routes.apply_local_sid(s) is True
    got = {r["dst"]: (r["device"], r["encap"]) for r in routes.dump()}
    assert got == {
        "fcff:1::1/128": ("lo", {"type": "seg6local", "action": "End"}),
        "fcff:1::2/128": ("v0", {"type": "seg6local", "action": "End.X", "nh6": "fc00:1::2"}),
        "fcff:1::3/128": ("lo", {"type": "seg6local", "action": "End.DT6", "table": 254}),
        "fcff:1::4/128": ("v0", {"type": "seg6local", "action": "End.DX6", "nh6": "fc00:1::2"}),
    }
    before = kernel_routes(ns)
    assert sum(1 for line in before if f", 128, {RTPROT_SRV6PM}, " in line) == len(SIDS)
    for s in SIDS:
        assert routes.apply_local_sid(s) is False
    assert kernel_routes(ns) == before
    for s in SIDS:
        assert routes.remove_local_sid(s.sid) is True
        assert routes.remove_local_sid(s.sid) is False
    assert routes.dump() == []


@pytest.mark.srv6
def test_policy_segments_are_in_path_order_and_the_device_is_looked_up(routes):
    p = policy(name="p1", destination="fd00:4::/64", segments=["fcff:2::1", "fcff:3::1", "fc00:1::9"])
    with pytest.raises(RouteError, match="route lookup towards fcff:2::1: Network is unreachable"):
        routes.apply_policy(p)  # no route towards the first segment yet
    p = policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9", "fcff:3::1"])
    assert routes.apply_policy(p) is True
    assert routes.policy_route("fd00:4::/64") == {
        "oif": routes.policy_route("fd00:4::/64")["oif"], "device": "v0",
        "encap": {"type": "seg6", "mode": "encap", "segs": ["fc00:1::9", "fcff:3::1"]}}
    assert routes.apply_policy(p) is False
    inline = policy(name="p2", destination="fd00:5::1", segments=["fc00:1::9", "fcff:4::1"],
                    mode=pb.ENCAP_MODE_INLINE, device="v0")
    assert routes.apply_policy(inline) is True
    assert routes.policy_route("fd00:5::1/128")["encap"] == {
        "type": "seg6", "mode": "inline", "segs": ["fc00:1::9", "fcff:4::1"]}
    assert routes.apply_policy(inline) is False
    assert routes.remove_policy("fd00:5::1/128") is True
    assert routes.remove_policy("fd00:5::1/128") is False


def kernel_srh(ns: str, dst: str) -> bytes:
    """The SRH of the kernel's route to ``dst`` as the kernel gives it back (the attribute's raw octets)."""
    def srh():
        with IPRoute() as ipr:
            (route,) = [r for r in ipr.route("dump", family=10) if r.get("dst") == dst.split("/")[0]]
            (attr,) = [a for name, a in route.get("encap")["attrs"] if name == "SEG6_IPTUNNEL_SRH"]
            return bytes(attr.data[attr.offset + 8:attr.offset + attr.length])
    with NetnsThread(ns) as t:
        return t.call(srh)


@pytest.mark.srv6
def test_reserved_policies_end_their_srh_in_the_padn_and_switching_replaces_them(ns):
    """With ``reserve`` (the eBPF data plane) an encap policy's SRH ends in 8 octets of padding, two PadN TLVs (RFC 8754 2.1.1),
    Hdr Ext Len counting it; it is part of the route read back, so applying again changes nothing, and the same
    policy applied without ``reserve`` (or with it again) replaces the route. Inline policies never get it."""
    p = policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9", "fcff:3::1"])
    inline = policy(name="p2", destination="fd00:5::1", segments=["fc00:1::9", "fcff:4::1"],
                    mode=pb.ENCAP_MODE_INLINE, device="v0")
    segs = ipaddress.IPv6Address("fcff:3::1").packed + ipaddress.IPv6Address("fc00:1::9").packed
    with Routes(ns, reserve=True) as routes:
        assert routes.apply_policy(p) is True and routes.apply_policies([inline]) == [True]
        assert kernel_srh(ns, "fd00:4::/64") == bytes([0, 5, 4, 1, 1, 0, 0, 0]) + segs + bytes([4, 2, 0, 0]) * 2
        assert routes.policy_route("fd00:4::/64")["encap"] == {
            "type": "seg6", "mode": "encap", "segs": ["fc00:1::9", "fcff:3::1"], "tlvs": "0402000004020000"}
        assert routes.policy_route("fd00:5::1/128")["encap"] == {
            "type": "seg6", "mode": "inline", "segs": ["fc00:1::9", "fcff:4::1"]}
        assert routes.apply_policy(p) is False and routes.apply_policies([p, inline]) == [False, False]
    with Routes(ns) as routes:
        assert routes.apply_policies([p, inline]) == [True, False]
        assert kernel_srh(ns, "fd00:4::/64") == bytes([0, 4, 4, 1, 1, 0, 0, 0]) + segs
        assert "tlvs" not in routes.policy_route("fd00:4::/64")["encap"]
        assert routes.apply_policy(p) is False
    with Routes(ns, reserve=True) as routes:
        assert routes.apply_policy(p) is True
        assert routes.policy_route("fd00:4::/64")["encap"]["tlvs"] == "0402000004020000"


@pytest.mark.srv6
def test_a_changed_policy_replaces_its_route_in_one_request(ns, routes):
    """The kernel announces one RTM_NEWROUTE for the replace and no RTM_DELROUTE: never neither route."""
    p = policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9", "fcff:3::1"])
    assert routes.apply_policy(p) is True
    changed = policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9", "fcff:7::1", "fcff:8::1"],
                     mode=pb.ENCAP_MODE_INLINE, device="v0")

    def listen():
        ipr = IPRoute()
        ipr.bind()  # all rtnetlink groups of the namespace
        return ipr
    with NetnsThread(ns) as t:
        monitor = t.call(listen)
        try:
            assert routes.apply_policy(changed) is True
            events = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(e["event"] == "RTM_NEWROUTE" for e in events):
                events += [m for m in t.call(monitor.get) if m.get("dst") == "fd00:4::"]
        finally:
            t.call(monitor.close)
    assert [e["event"] for e in events] == ["RTM_NEWROUTE"]
    assert routes.policy_route("fd00:4::/64")["encap"] == {
        "type": "seg6", "mode": "inline", "segs": ["fc00:1::9", "fcff:7::1", "fcff:8::1"]}
    assert [r["dst"] for r in routes.dump()] == ["fd00:4::/64"]


@pytest.mark.srv6
def test_a_changed_sid_is_replaced(routes):
    assert routes.apply_local_sid(sid(sid="fcff:1::4", behavior=pb.SID_BEHAVIOR_END)) is True
    assert routes.apply_local_sid(SIDS[3]) is True
    assert routes.local_sid_route("fcff:1::4")["encap"]["action"] == "End.DX6"
    assert len(routes.dump()) == 1


@pytest.mark.srv6
def test_kernel_refusal_carries_the_kernels_reason_and_changes_nothing(ns, routes):
    """d0 exists but is down: the kernel refuses routes through it (ENETDOWN); that is not our validation."""
    assert routes.apply_local_sid(SIDS[3]) is True
    p = policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9"])
    assert routes.apply_policy(p) is True
    before = kernel_routes(ns)
    on_down = sid(sid="fcff:1::4", behavior=pb.SID_BEHAVIOR_END_DX6, nexthop="fc00:1::3", device="d0")
    with pytest.raises(RouteError) as info:
        routes.apply_local_sid(on_down)
    assert info.value.reason == "Network is down" and info.value.object is on_down
    assert str(info.value).startswith("local SID fcff:1::4 (End.DX6 nh6 fc00:1::3 dev d0): Network is down")
    with pytest.raises(RouteError, match="Network is down"):
        routes.apply_policy(policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9"], device="d0"))
    with pytest.raises(RouteError, match="Network is down"):
        routes.apply_local_sid(sid(sid="fcff:1::9", behavior=pb.SID_BEHAVIOR_END, device="d0"))
    with pytest.raises(RouteError, match="device 'nosuch0': No such device"):
        routes.apply_local_sid(sid(sid="fcff:1::9", behavior=pb.SID_BEHAVIOR_END, device="nosuch0"))
    assert kernel_routes(ns) == before


def test_routes_of_others_are_never_replaced(ns, routes):
    """The connected route fc00:1::/64 (protocol kernel) is not srv6pm's to replace."""
    before = kernel_routes(ns)
    with pytest.raises(RouteError, match="srv6pm did not make"):
        routes.apply_policy(policy(name="p1", destination="fc00:1::/64", segments=["fc00:1::9"]))
    assert routes.remove_policy("fc00:1::/64") is False
    assert kernel_routes(ns) == before


def _in_ns(ns: str, fn):
    def run():
        with IPRoute() as ipr:
            return fn(ipr, ipr.link_lookup(ifname="v0")[0])
    with NetnsThread(ns) as t:
        return t.call(run)


@pytest.mark.srv6
def test_only_routes_to_exactly_the_prefix_in_table_main_count_among_many_others(ns, routes):
    """Thousands of unrelated routes (a dump of several parts), a more specific route, the same prefix in
    another table: none of them is taken for the policy's route, and none blocks it."""
    def populate(ipr, v0):
        for i in range(3000):
            ipr.route("add", dst=f"2001:db8:{i // 256:x}:{i % 256:x}::/64", oif=v0, proto=4)
        ipr.route("add", dst="fd00:4::/80", oif=v0, proto=4)                # more specific
        ipr.route("add", dst="fd00:4::/64", oif=v0, proto=4, table=100)     # same prefix, other table
        ipr.route("add", dst="fd00::/16", oif=v0, proto=4)                  # less specific
    _in_ns(ns, populate)
    p = policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9", "fcff:3::1"])
    assert routes.apply_policy(p) is True
    before = kernel_routes(ns)
    assert routes.apply_policy(p) is False
    assert kernel_routes(ns) == before
    assert routes.policy_route("fd00:4::/64")["encap"]["segs"] == ["fc00:1::9", "fcff:3::1"]
    assert [r["dst"] for r in routes.dump()] == ["fd00:4::/64"]
    assert routes.policy_route("fd00:4::/80") is None
    assert routes.remove_policy("fd00:4::/80") is False  # the proto 4 route there is not srv6pm's
    assert routes.remove_policy("fd00:4::/64") is True
    assert routes.dump() == []


@pytest.mark.srv6
def test_a_route_of_others_with_another_metric_to_the_same_prefix_is_seen(ns, routes):
    """The kernel keeps routes to one prefix with different metrics side by side; srv6pm's (metric 1024)
    comes first in a lookup, yet the other one still blocks changing or re-applying the policy."""
    p = policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9"])
    assert routes.apply_policy(p) is True
    _in_ns(ns, lambda ipr, v0: ipr.route("add", dst="fd00:4::/64", oif=v0, proto=4, priority=2048))
    before = kernel_routes(ns)
    for attempt in (p, policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9", "fcff:3::1"])):
        with pytest.raises(RouteError, match=r"route to fd00:4::/64 that srv6pm did not make \(protocol 4\)"):
            routes.apply_policy(attempt)
    assert kernel_routes(ns) == before
    assert routes.policy_route("fd00:4::/64")["encap"]["segs"] == ["fc00:1::9"]  # srv6pm's is still read


@pytest.mark.srv6
def test_a_batch_reads_table_main_once_and_answers_as_one_call_each(ns, routes):
    """Within Routes.batch(): 300 new policies among 3,000 unrelated routes read table main once (not once each:
    quadratic at 10,000 policies); a prefix changed in the batch is asked of the kernel again, so applying it
    again is unchanged; another protocol's route to a prefix still refuses it; outside, every call reads again."""
    def populate(ipr, v0):
        for i in range(3000):
            ipr.route("add", dst=f"2001:db8:{i // 256:x}:{i % 256:x}::/64", oif=v0, proto=4)
        ipr.route("add", dst="fd00:ffff::/64", oif=v0, proto=4)
    _in_ns(ns, populate)
    reads = []
    read, whole = routes._main.routes, routes._main.by_prefix
    routes._main.routes = lambda dst, protocol=0: reads.append(dst) or read(dst, protocol)
    routes._main.by_prefix = lambda: reads.append("table") or whole()
    wanted = [policy(name=f"p{i}", destination=f"fd00:{i:x}::/64", segments=["fc00:1::9"]) for i in range(300)]
    with routes.batch():
        assert [routes.apply_policy(p) for p in wanted] == [True] * 300
        assert reads == ["table"]
        assert routes.apply_policy(wanted[7]) is False
        with pytest.raises(RouteError, match="srv6pm did not make"):
            routes.apply_policy(policy(name="x", destination="fd00:ffff::/64", segments=["fc00:1::9"]))
        assert routes.remove_policy("fd00:1::/64") is True
        assert routes.remove_policy("fd00:1::/64") is False
    assert reads == ["table", "fd00:7::/64", "fd00:1::/64", "fd00:1::/64"]
    assert sorted(r["dst"] for r in routes.dump()) == sorted(
        str(ipaddress.IPv6Network(f"fd00:{i:x}::/64")) for i in range(300) if i != 1)
    assert routes.apply_policy(wanted[2]) is False
    assert reads[-2:] == [None, "fd00:2::/64"]  # outside a batch: dump()'s read, then the prefix's own


def test_the_bulk_route_requests_are_the_bytes_pyroute2_sends():
    """:func:`_policy_request` frames what ``IPRoute.route("add"|"replace", ...)`` would send (sequence and port
    left 0), for both modes, one segment and several."""
    import struct

    from pyroute2.iproute.linux import IPBatch
    compiler = IPBatch()
    try:
        for mode in ("encap", "inline"):
            for replace in (False, True):
                for segments in (["fcff:3::1"], ["fcff:2::1", "fcff:3::1", "fcff:4::100"]):
                    compiler.reset()
                    compiler.route("replace" if replace else "add", dst="fd01:4:0:7::/64", oif=3, table=254,
                                   proto=RTPROT_SRV6PM, encap={"type": "seg6", "mode": mode,
                                                               "segs": list(reversed(segments))})
                    theirs = bytearray(compiler.batch)
                    struct.pack_into("=II", theirs, 8, 0, 0)
                    assert routes_mod._policy_request("fd01:4:0:7::/64", 3, mode, segments,
                                                      replace=replace) == bytes(theirs), (mode, replace, segments)
    finally:
        compiler.close()


@pytest.mark.srv6
def test_policies_applied_in_bulk_answer_each_as_one_call_would(ns, routes):
    """apply_policies: 300 new policies go in sends of _BULK requests, not one each; every policy gets the answer
    apply_policy gives (True, False, or the RouteError with the kernel's reason), a refused one changes nothing and
    does not stop the next; the routes are those apply_policy makes."""
    existing = policy(name="old", destination="fd00:ff00::/64", segments=["fc00:1::9"])
    changed = policy(name="chg", destination="fd00:ff01::/64", segments=["fc00:1::9"])
    assert routes.apply_policy(existing) is True and routes.apply_policy(changed) is True
    before = {r["dst"]: r for r in routes.dump()}
    wanted = [policy(name=f"p{i}", destination=f"fd00:{i:x}::/64", segments=["fc00:1::9", "fcff:3::1"],
                     **({"device": "v0", "mode": pb.ENCAP_MODE_INLINE} if i % 2 else {})) for i in range(300)]
    odd = [existing,
           policy(name="chg", destination="fd00:ff01::/64", segments=["fc00:1::9", "fcff:9::1"]),
           policy(name="down", destination="fd00:ff02::/64", segments=["fc00:1::9"], device="d0"),
           policy(name="none", destination="fd00:ff03::/64", segments=["fc00:1::9"], device="nosuch0"),
           policy(name="kern", destination="fc00:1::/64", segments=["fc00:1::9"]),
           policy(name="unreach", destination="fd00:ff04::/64", segments=["fcff:99::1"])]
    mixed = wanted[:150] + odd + wanted[150:]
    sends = []
    change = routes._main.change
    routes._main.change = lambda requests: sends.append(len(requests)) or change(requests)
    with routes.batch():
        answers = routes.apply_policies(mixed)
    assert sends == [128, 128, 46]  # 300 new, one changed, one the kernel refuses (its device is down)
    assert answers[:150] == [True] * 150 and answers[156:] == [True] * 150
    assert answers[150:152] == [False, True]
    reasons = [(str(a), a.code, a.object) for a in answers[152:156]]
    assert reasons[0][0].endswith("Network is down") and reasons[0][2] is odd[2]
    assert reasons[1][0].endswith("device 'nosuch0': No such device")
    assert "srv6pm did not make" in reasons[2][0]
    assert reasons[3][0].endswith("Network is unreachable")
    got = {r["dst"]: r for r in routes.dump()}
    assert set(got) == set(before) | {p.destination for p in wanted}
    assert got["fd00:ff00::/64"] == before["fd00:ff00::/64"]
    assert got["fd00:ff01::/64"]["encap"]["segs"] == ["fc00:1::9", "fcff:9::1"]
    for p in wanted:
        assert routes.apply_policy(p) is False  # what one call makes: the same route
    assert got["fd00:1::/64"] == {"dst": "fd00:1::/64", "oif": got["fd00:1::/64"]["oif"], "device": "v0", "encap": {
        "type": "seg6", "mode": "inline", "segs": ["fc00:1::9", "fcff:3::1"]}}


@pytest.mark.srv6
def test_policies_whose_acknowledgements_are_lost_are_answered_from_the_kernel(ns, routes):
    """A receive buffer too small for a send's acknowledgements (ENOBUFS): what the kernel then holds answers for
    the policies whose acknowledgement was dropped, so each is still answered as made."""
    import socket
    routes._thread.call(routes._main._sock.setsockopt, socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the minimum
    outcomes = []
    change = routes._main.change
    routes._main.change = lambda requests: outcomes.extend(change(requests)) or outcomes[-len(requests):]
    wanted = [policy(name=f"p{i}", destination=f"fd00:{i:x}::/64", segments=["fc00:1::9"]) for i in range(128)]
    wanted[5] = policy(name="down", destination="fd00:5::/64", segments=["fc00:1::9"], device="d0")
    answers = routes.apply_policies(wanted)
    assert None in outcomes  # acknowledgements were dropped
    assert [a is True for a in answers] == [i != 5 for i in range(128)]
    assert isinstance(answers[5], RouteError)
    assert len(routes.dump()) == 127


@pytest.mark.srv6
def test_policies_the_kernel_has_no_memory_for_yet_are_sent_again(ns, routes):
    """A burst of seg6 routes can exhaust the per-CPU memory the kernel has ready (ENOMEM until its allocator's
    worker makes more): apply_policies sends those again after a pause, so they are made in the same call; one
    still refused after the last pause is answered with the kernel's reason."""
    import errno
    change, sends = routes._main.change, []

    def short_of_memory(requests):  # the kernel's ENOMEM for some routes of the first two sends (not made)
        sends.append(len(requests))
        refused = {3, 7} if len(sends) == 1 else {0} if len(sends) == 2 else set()
        codes = iter(change([r for i, r in enumerate(requests) if i not in refused]))
        return [errno.ENOMEM if i in refused else next(codes) for i in range(len(requests))]
    routes._main.change = short_of_memory
    wanted = [policy(name=f"p{i}", destination=f"fd00:{i:x}::/64", segments=["fc00:1::9"]) for i in range(10)]
    assert routes.apply_policies(wanted) == [True] * 10
    assert sends == [10, 2, 1]
    assert {r["dst"] for r in routes.dump()} == {p.destination for p in wanted}

    def never(requests):
        return [errno.ENOMEM] * len(requests)
    routes._main.change = never
    late = [policy(name="late", destination="fd00:ff::/64", segments=["fc00:1::9"])]
    answers = routes.apply_policies(late)
    assert isinstance(answers[0], RouteError) and answers[0].code == errno.ENOMEM
    assert "Cannot allocate memory" in str(answers[0])
