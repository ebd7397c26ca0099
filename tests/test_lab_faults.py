"""The lab through an InfluxDB outage, and through a broker outage, while drops are active: every
period once, loss = the drop counter.

The lab's own InfluxDB engine, or its broker, is suspended (SIGSTOP) for ``OUTAGE_S`` and resumed
(a suspended broker keeps its memory storage: a killed one would lose its topics). The processor's
``--max-poll-interval-ms`` is lowered to ``MAX_POLL_MS`` so that the outage lasts twice as long as
that interval in a test of reasonable length: a processor that stopped polling while its results
cannot be stored would be removed from its group (the failure this guards against).

Needs root; run under ``flock /tmp/srv6pm-netns.lock``.
"""

import os
import signal
import time

import pytest

from srv6pm.clock import PeriodClock
from srv6pm.influx import influxql
from srv6pm.lab.runner import LabError
from srv6pm.netns import exists

from test_lab_e2e import PERIOD, collect, drop_window, have_through, running_lab, start_drops

pytestmark = [
    pytest.mark.srv6,
    pytest.mark.netns,
    pytest.mark.services,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, SRv6, nftables)"),
]

OUTAGE_S = 30.0
MAX_POLL_MS = 15_000


@pytest.fixture
def lab(free_port):
    with running_lab(free_port, processor_args=("--max-poll-interval-ms", str(MAX_POLL_MS))) as running:
        yield running


def test_influxdb_stopped_during_drops_every_period_once_in_influxdb_and_on_kafka(lab):
    clock = PeriodClock(PERIOD)
    first, drop = start_drops(lab)
    lab.embedded_influxdb.freeze()
    try:
        t_stop = clock.current()
        during = []
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            during += lab.reader.poll(0.5)
            lab.check_children()  # the processor is still running
        lab.seen += during
    finally:
        lab.embedded_influxdb.thaw()
    dropped = drop.stop()
    t_del = clock.current()
    last = t_del + 3
    collect(lab, have_through(last), timeout=120)
    lab.check_children()

    f1, f2 = drop_window(lab, first, last, dropped)  # also: nothing published twice
    # Results are stored before they are published: none of a period that ended during the outage came out.
    assert all(r["period"] <= t_stop for r in during if "flow" in r), sorted(r["period"] for r in during)

    # InfluxDB holds every period of the window exactly once, with the numbers published.
    start, end = clock.start_ns(first), clock.start_ns(last)
    for flow, rows in (("f1", f1), ("f2", f2)):
        res = influxql(lab.influx, f"SELECT tx_packets, rx_packets, lost_packets, complete FROM loss "
                                   f"WHERE flow = '{flow}' AND time >= {start} AND time <= {end}")
        series = res[0]["series"][0]
        stored = [dict(zip(series["columns"], row)) for row in series["values"]]
        assert [(s["time"], s["tx_packets"], s["rx_packets"], s["lost_packets"], s["complete"]) for s in stored] == \
            [(clock.start_ns(r["period"]), r["tx_packets"], r["rx_packets"], r["lost_packets"], True) for r in rows]


def test_the_embedded_broker_dying_stops_the_lab_saying_its_records_are_gone(free_port):
    labs = []
    with pytest.raises(LabError, match="embedded Kafka broker exited: .* every record of this run is gone"):
        with running_lab(free_port) as lab:
            labs.append(lab)
            os.kill(lab.embedded_broker.pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                lab.check_children()
                time.sleep(0.2)
    (lab,) = labs
    assert not any(exists(ns) for ns in lab.plan.namespaces), "namespaces left behind"


def test_broker_unreachable_during_drops_every_counted_period_paired_once(free_port):
    """The lab's broker suspended (SIGSTOP) for ``OUTAGE_S`` while drops are active, then resumed: the
    exporters keep what they could not publish and publish it in order, the processor waits, and
    every period of the window comes out once, complete, with f1's losses adding up to the drop
    counter (nothing counted during the outage is lost or doubled, and no gap shows as loss). It also
    guards the exporters' period loop: a guard that waited for the broker into the next colour switch
    made f2, which nothing drops, show loss on one segment and a surplus on the next."""
    with running_lab(free_port, processor_args=("--max-poll-interval-ms", str(MAX_POLL_MS))) as lab:
        clock = PeriodClock(PERIOD)
        first, drop = start_drops(lab)
        lab.embedded_broker.freeze()
        try:
            deadline = time.monotonic() + OUTAGE_S
            while time.monotonic() < deadline:
                time.sleep(0.5)
                lab.check_children()  # nobody exits while the broker is away
        finally:
            lab.embedded_broker.thaw()
        time.sleep(2 * PERIOD)
        dropped = drop.stop()
        last = clock.current() + 3
        collect(lab, have_through(last), timeout=180)
        lab.check_children()
        drop_window(lab, first, last, dropped)
