"""When the node exporter begins marking, and how its colour switches follow: its first ingress flow is marked
with the colour of the period it is installed in, whatever the data plane's colour was, and that beginning
counts as the period's switch for the late-switch rule (on time, or made at the install when an earlier
run's marking went on until then).

A stale colour is not harmless: packets marked with the previous period's
colour after the other counting points' guard read of it are in the ingress
baseline only, so the next block of that colour shows more received than
sent. The ways to one checked here: a table open that outlasts the start of
a period, a node that counted only as the egress of flows (no switch has
touched its colour since) getting its first ingress flow, a predecessor's
marking taken over, and a start that outlasted the start of a period. That
the eBPF install sets the colour before its first match is checked on the
program itself (test_altmark_program.py).

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
    before = time.time_ns()
    second.change_flows(add=[INGRESS])
    period, at = second._switched
    assert at >= before and at != clock.start_ns(period)  # now, not the period's start
    assert marked_colour(second) == clock.colour(period)
    deadline = clock.start_ns(period) + 3 * (clock.guard_ns(period - 1) - clock.start_ns(period)) // 4
    assert second._late_switch(period - 1) == (at > deadline)


def test_an_earlier_run_s_marking_is_remembered_across_a_refused_install(exporters):
    """A first install that the data plane refuses (two flows with one match) may have ended the earlier run's
    matches already: the install that follows finds none, and still counts as a switch made now."""
    first = exporters()
    first.change_flows(add=[INGRESS])
    first.close()
    second = exporters()
    twin = pb.FlowMonitor()
    twin.CopyFrom(INGRESS)
    twin.flow, twin.flowmon_id = "f3", 23
    with pytest.raises(ValueError):
        second.change_flows(add=[INGRESS, twin])
    before = time.time_ns()
    second.change_flows(add=[INGRESS])
    period, at = second._switched
    assert at >= before and at != second.clock.start_ns(period)


def test_a_start_that_outlasted_the_start_of_a_period_switches_at_once(exporter, monkeypatch):
    """The flows were installed (here by a direct call, as a start re-applies its state) in one period and the
    loop began in a later one: the switching thread marks that period's colour at once, not from the period
    after (a whole period of the previous colour, read at its guard while still being marked)."""
    clock = exporter.clock
    entered: list[int] = []  # the period in which the switching thread began
    switching = exporter._switching

    def recording(boundary):
        entered.append(clock.period_at(time.time_ns()))
        switching(boundary)
    monkeypatch.setattr(exporter, "_switching", recording)
    exporter.change_flows(add=[INGRESS])
    installed = clock.period_at(time.time_ns())
    time.sleep((clock.start_ns(installed + 1) + 100_000_000 - time.time_ns()) / 1e9)
    thread = threading.Thread(target=exporter.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not entered and time.monotonic() < deadline:
            time.sleep(0.01)
        (began,) = entered
        while exporter._switched[0] < began and time.monotonic() < deadline:
            time.sleep(0.01)
        period, at = exporter._switched
        assert period == began and at < clock.start_ns(began + 1)  # switched in that period, not at the next
        assert marked_colour(exporter) == clock.colour(clock.period_at(time.time_ns()))
    finally:
        exporter.stop()
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_a_switch_made_at_the_beginning_of_marking_is_not_made_again(exporter):
    """Marking began in this period (on time: nothing was marked before); the switching thread, started in the
    same period, leaves that record as it is (a second switch, made later, could wrongly look late)."""
    clock = exporter.clock
    k = clock.period_at(time.time_ns()) + 1
    time.sleep((clock.start_ns(k) + 50_000_000 - time.time_ns()) / 1e9)
    exporter.change_flows(add=[INGRESS])
    assert exporter._switched == (k, clock.start_ns(k))
    thread = threading.Thread(target=exporter._switching, args=(k,), daemon=True)
    thread.start()
    time.sleep(0.2)
    exporter.stop()
    thread.join(timeout=5)
    assert clock.period_at(time.time_ns()) == k
    assert exporter._switched == (k, clock.start_ns(k))
