"""An ingress exporter that stalls across a period start switches colour late: its blocks of that period are
left out (the period is incomplete), never loss.

The lab's ingress router a runs both flows' ingress. Its exporter is stopped (SIGSTOP) from just before a period
start until 0.7 period after it, so the colour switch comes after the other counting points' on-time guard reads
of the period before; without the check that made up about 60 lost packets of f1 in that period and -60 in the
next one of the same colour, with each data plane.

Needs root. Node names are random so that the test never touches a lab that is running.
"""

import os
import signal
import time

import pytest

from srv6pm.clock import PeriodClock

from test_lab_e2e import PERIOD, by_flow_period, collect, complete_periods
from test_lab_e2e import lab  # noqa: F401  (the running-lab fixture)

pytestmark = [
    pytest.mark.srv6,
    pytest.mark.netns,
    pytest.mark.services,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, SRv6, nftables)"),
]

STALL = 0.7  # periods: past the guard time of the period before, short of the next use of its colour


@pytest.mark.parametrize("lab", ["ebpf", "nftables"], indirect=True)
def test_an_ingress_stalled_across_a_period_start_never_invents_loss(lab):  # noqa: F811 (the fixture)
    a, b, c, d = lab.nodes
    clock = PeriodClock(PERIOD)
    collect(lab, lambda rs: all(len(complete_periods(rs, f)) >= 2 for f in ("f1", "f2")))
    first = max(complete_periods(lab.seen, f)[0] for f in ("f1", "f2"))
    pid = lab.children[f"exporter-{a}"].pid
    stalled = []
    for _ in range(2):
        k = clock.current() + 1
        while time.time_ns() < clock.start_ns(k) - 50_000_000:
            time.sleep(0.005)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(STALL * PERIOD)
        finally:
            os.kill(pid, signal.SIGCONT)
        stalled.append(k - 1)  # the period whose colour a went on marking into k
        time.sleep(3 * PERIOD)
    last = clock.current() + 2
    collect(lab, lambda rs: all(max(complete_periods(rs, f)) >= last for f in ("f1", "f2")))
    results = by_flow_period(lab.seen)
    window = {key: r for key, r in results.items() if key[1] >= first}
    invented = [(f, k, r["tx_packets"], r["rx_packets"], r["lost_packets"]) for (f, k), r in sorted(window.items())
                if r["complete"] and r["lost_packets"] != 0]
    assert not invented, invented
    for k in stalled:
        assert not any(window[(f, k)]["complete"] for f in ("f1", "f2")), [window[(f, k)] for f in ("f1", "f2")]
    assert all(window[(f, k)]["complete"] for f in ("f1", "f2") for k in range(last - 1, last + 1))  # and back
