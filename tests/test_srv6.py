"""srv6pm.srv6: whether the kernel can make SRv6 routes, asked of the real kernel, and the wording where it
cannot, in the places that make SRv6 routes (the exporter's routes, the lab). Needs root (the probe adds
routes in a network namespace of its own)."""

from __future__ import annotations

import errno
import gzip
import os
import secrets
import tempfile
from pathlib import Path

import pytest

from srv6pm import srv6

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the probe adds routes: needs root")
NO_SRV6 = f"{srv6.NO_SRV6} (the kernel answered: Operation not supported)"  # what such a kernel makes of it


def _config() -> dict[str, str] | None:
    """The running kernel's build options (/proc/config.gz), or None where the kernel does not show them."""
    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq:
            out[name] = value
    return out


@needs_root
def test_the_probe_agrees_with_the_kernel_s_build_options():
    config = _config()
    if config is None:
        pytest.skip("the kernel does not show its build options (/proc/config.gz)")
    built = config.get("CONFIG_IPV6_SEG6_LWTUNNEL") == "y"
    reason = srv6.missing()
    if built:  # the probe made both routes (not: it could not ask)
        assert srv6._asked() == ("present", None) and reason is None
    else:
        assert reason == NO_SRV6
        assert srv6._asked() == ("missing", reason)
    assert srv6.missing() is reason  # asked once


@needs_root
def test_only_the_kernel_s_eopnotsupp_is_explained_as_missing_srv6():
    assert srv6.explain(errno.EOPNOTSUPP) == srv6.missing()
    assert srv6.explain(errno.ENETDOWN) is None and srv6.explain(errno.EEXIST) is None


@needs_root
def test_check_raises_the_reason_where_srv6_is_missing():
    if srv6.missing() is None:
        srv6.check()  # nothing to say
        return
    with pytest.raises(srv6.Srv6Unavailable) as info:
        srv6.check()
    assert str(info.value) == srv6.missing()


@pytest.fixture
def no_srv6(monkeypatch):
    """This process takes the kernel for one without SRv6 (the probe's answer, replaced)."""
    monkeypatch.setattr(srv6, "_answer", [("missing", NO_SRV6)])
    return NO_SRV6


@needs_root
def test_a_lab_on_a_kernel_without_srv6_stops_before_it_builds_anything(no_srv6, tmp_path):
    from srv6pm.lab import scenario as scenario_mod
    from srv6pm.lab.runner import Lab
    from srv6pm.netns import exists
    a, b = "s" + secrets.token_hex(3), "t" + secrets.token_hex(3)
    path = tmp_path / "lab.yaml"
    path.write_text(f"period: 1\nnodes: [{a}, {b}]\nlinks: [[{a}, {b}]]\n"
                    f"flows:\n  - {{name: f1, from: {a}, to: {b}, rate: 5}}\n")
    folders = set(Path(tempfile.gettempdir()).glob("srv6pm-*"))
    lab = Lab(scenario_mod.load(path))
    with pytest.raises(srv6.Srv6Unavailable) as info:
        lab.start()
    assert str(info.value) == no_srv6
    assert not exists(a) and not exists(b)
    assert lab.workdir is None and set(Path(tempfile.gettempdir()).glob("srv6pm-*")) == folders  # no lab folder


@needs_root
@pytest.mark.skipif(srv6.missing() is None, reason="the kernel makes SRv6 routes: no refusal to explain")
def test_the_exporter_s_routes_name_the_missing_kernel_option():
    """On a kernel without SRv6 (this test runs only there), a local SID and a policy the exporter is asked to
    apply fail with the reason, not with a bare "Operation not supported"."""
    from pyroute2 import IPRoute
    from pyroute2 import netns as pr_netns

    from srv6pm.exporter.routes import RouteError, Routes
    from srv6pm.netns import NetnsThread
    from srv6pm.southbound import validate
    from srv6pm.southbound.v1 import southbound_pb2 as pb
    ns = "sr" + secrets.token_hex(4)
    pr_netns.create(ns)
    try:
        def up():
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                ipr.addr("add", index=1, address="fc00:1::1", prefixlen=64, flags=0x02)
        with NetnsThread(ns) as t:
            t.call(up)
        with Routes(ns) as routes:
            with pytest.raises(RouteError) as info:
                routes.apply_local_sid(validate.local_sid(pb.LocalSid(sid="fcff:1::1", behavior=pb.SID_BEHAVIOR_END)))
            assert str(info.value) == f"local SID fcff:1::1 (End dev lo): {srv6.missing()}"
            answers = routes.apply_policies([validate.policy(pb.Policy(
                name="p1", destination="fd00:4::/64", segments=["fc00:1::9"]))])
            assert isinstance(answers[0], RouteError) and str(answers[0]).endswith(f": {srv6.missing()}")
    finally:
        pr_netns.remove(ns)


@needs_root
@pytest.mark.parametrize("kernel", ["without SRv6", "as it is"])
def test_an_exporter_says_at_start_that_the_kernel_makes_no_srv6_routes(kernel, monkeypatch, tmp_path, caplog):
    """An exporter still counts and publishes on such a kernel, so it starts; its first words say that every
    local SID and policy will be refused, and why. Where the kernel has SRv6, it says nothing of it."""
    import logging

    from pyroute2 import netns as pr_netns

    from srv6pm.config import KafkaSettings
    from srv6pm.exporter.config import parse
    from srv6pm.exporter.service import Exporter
    from srv6pm.ports import free_port
    if kernel == "without SRv6":
        monkeypatch.setattr(srv6, "_answer", [("missing", NO_SRV6)])
    ns = "ex" + secrets.token_hex(4)
    pr_netns.create(ns)
    try:
        config = parse(f"node: n1\nnetns: {ns}\nperiod: 1\ndataplane: nftables\nstate_file: {tmp_path}/state.json\n")
        exporter = Exporter(config, KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}"), publish_timeout_ms=500)
        with caplog.at_level(logging.WARNING, logger="srv6pm.exporter"):
            try:
                exporter.start()
            finally:
                exporter.close()
        said = [r for r in caplog.records if "SRv6" in r.getMessage()]
        if srv6.missing() is None:
            assert said == []
        else:
            assert [(r.getMessage(), r.node, r.reason) for r in said] == [  # type: ignore[attr-defined]
                ("this kernel makes no SRv6 routes: every local SID and policy will be refused", "n1",
                 srv6.missing())]
    finally:
        pr_netns.remove(ns)
