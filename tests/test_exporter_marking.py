"""When the node exporter begins marking: its first ingress flow is marked with the colour of the period it is
installed in, whatever the data plane's colour was, and that beginning counts as the period's switch.

A stale colour is not harmless: packets marked with the previous period's
colour after the other counting points' guard read of it are in the ingress
baseline only, so the next block of that colour shows more received than
sent. Two ways to a stale colour are checked: loading the data plane outlasts
the start of a period (made certain here by a table open that sleeps past
it), and a node that counted only as the egress of flows, whose colour no
switch has touched since, gets its first ingress flow.

Needs root (a real namespace, the nftables table or the eBPF programs). The
exporter is driven by direct calls, mostly without its loop: the colour
switching thread does not run then, so only the beginning of marking sets
the colour.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

import pytest
from netns_support import skip_reason
from test_exporter_api import ns  # noqa: F401  (the namespace fixture)

from srv6pm import bpf
from srv6pm.config import KafkaSettings
from srv6pm.exporter import ebpf
from srv6pm.exporter.config import parse
from srv6pm.exporter.dataplane import INGRESS_CHAIN
from srv6pm.exporter.service import Exporter
from srv6pm.southbound.v1 import southbound_pb2 as pb

pytestmark = [pytest.mark.netns, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

INGRESS = pb.FlowMonitor(flow="f1", role=pb.ROLE_INGRESS, flowmon_id=21, source_prefix="fd00:1::2/128",
                         destination_prefix="fd00:4::100/128")
EGRESS = pb.FlowMonitor(flow="f2", role=pb.ROLE_EGRESS, flowmon_id=22, position=2, source_prefix="fd00:4::2/128",
                        destination_prefix="fd00:1::100/128")


@pytest.fixture(params=["nftables", "ebpf"])
def exporters(request, ns, tmp_path):  # noqa: F811
    """Makes exporters of one node with 1 s periods in ``ns``, never started (no broker is asked for anything);
    a second one takes over what the first left in the kernel, as after a restart."""
    if request.param == "ebpf" and not ebpf.OBJECT.exists():
        pytest.skip(f"{ebpf.OBJECT} is not built (./setup.sh)")
    node = "mk" + secrets.token_hex(3)
    config = parse(f"node: {node}\nnetns: {ns}\nperiod: 1\ndataplane: {request.param}\n"
                   f"state_file: {tmp_path}/state.json\n")
    made: list[Exporter] = []

    def make() -> Exporter:
        made.append(Exporter(config, KafkaSettings(bootstrap="127.0.0.1:9")))
        return made[-1]
    yield make
    for exporter in made:
        exporter.close()
    if request.param == "ebpf":
        bpf.unpin(ebpf.pin_dir(node))


@pytest.fixture
def exporter(exporters):
    return exporters()


def marked_colour(exporter: Exporter) -> int:
    """The colour the node's data plane marks now, read from the kernel (the eBPF colour map, or the set that the
    nftables marking rule matches)."""
    if exporter.config.dataplane == "ebpf":
        m = bpf.pinned_map(ebpf.pin_dir(exporter.config.node) / "colour")
        try:
            return int.from_bytes(m.lookup((0).to_bytes(4, "little")), "little")
        finally:
            os.close(m.fd)
    (rule,) = [o["rule"] for o in exporter._nft.run([{"list": {"chain": {
        "family": "ip6", "table": "srv6pm", "name": INGRESS_CHAIN}}}]) if "rule" in o]
    (match,) = [e["match"]["right"] for e in rule["expr"] if "match" in e]
    return int(match.removeprefix("@ingress_c"))


def wait_for_colour(exporter: Exporter, colour: int) -> int:
    """Sleep into the next period whose colour is ``colour``, 0.1 s past its start; return it."""
    clock = exporter.clock
    k = clock.period_at(time.time_ns()) + 1
    if clock.colour(k) != colour:
        k += 1
    time.sleep(max(0, clock.start_ns(k) + 100_000_000 - time.time_ns()) / 1e9)
    return k


def test_an_install_that_outlasts_the_start_of_a_period_marks_the_new_period_s_colour(exporter, monkeypatch):
    clock = exporter.clock
    opened = exporter._open_table

    def slow_open():
        table = opened()
        k = clock.period_at(time.time_ns())
        time.sleep((clock.start_ns(k + 1) + 100_000_000 - time.time_ns()) / 1e9)  # into the next period
        return table

    monkeypatch.setattr(exporter, "_open_table", slow_open)
    started = clock.period_at(time.time_ns())
    exporter.change_flows(add=[INGRESS])
    now = clock.period_at(time.time_ns())
    assert now > started
    assert marked_colour(exporter) == clock.colour(now)
    # The beginning was this period's switch, on time: the previous period's ingress block may be read, this
    # period's only once the switch away from its colour came (none will: the switching thread is not running).
    assert not exporter._late_switch(now - 1)
    assert exporter._late_switch(now)


def test_the_first_ingress_flow_of_a_node_that_was_only_an_egress_marks_the_current_colour(exporter):
    exporter.change_flows(add=[EGRESS])
    installed = marked_colour(exporter)
    k = wait_for_colour(exporter, 1 - installed)  # no switch since: the table still holds the old colour
    assert marked_colour(exporter) == installed
    exporter.change_flows(add=[INGRESS])
    assert exporter.clock.period_at(time.time_ns()) == k
    assert marked_colour(exporter) == 1 - installed
    assert exporter._late_switch(k) and not exporter._late_switch(k - 1)



def test_an_earlier_run_s_marking_taken_over_is_a_switch_made_at_the_install(exporters):
    """Until a restarted exporter installs its flows, its predecessor's marking goes on in the colour it left: the
    install is the switch, made then, so the previous period's ingress block is read only if that came on time."""
    first = exporters()
    first.change_flows(add=[INGRESS])
    first.close()  # the marking stays in the kernel, as a crash leaves it
    clock = first.clock
    k = clock.period_at(time.time_ns()) + 1
    time.sleep((clock.start_ns(k) + 450_000_000 - time.time_ns()) / 1e9)  # past the deadline (0.375 s) of k-1's
    second = exporters()
    second.change_flows(add=[INGRESS])
    assert clock.period_at(time.time_ns()) == k
    assert marked_colour(second) == clock.colour(k)
    assert second._late_switch(k - 1) and second._late_switch(k)


def test_a_start_that_outlasted_the_start_of_a_period_switches_at_once(exporter):
    """The flows were installed (here by a direct call, as a start re-applies its state) in one period and the
    loop began in the next: its colour is marked at once, not from the period after (a whole period of the
    previous colour, read at its guard while still being marked)."""
    clock = exporter.clock
    exporter.change_flows(add=[INGRESS])
    installed = clock.period_at(time.time_ns())
    time.sleep((clock.start_ns(installed + 1) + 100_000_000 - time.time_ns()) / 1e9)
    thread = threading.Thread(target=exporter.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 0.5
        while marked_colour(exporter) != clock.colour(installed + 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert clock.period_at(time.time_ns()) == installed + 1
        assert marked_colour(exporter) == clock.colour(installed + 1)
    finally:
        exporter.stop()
        thread.join(timeout=20)
    assert not thread.is_alive()
