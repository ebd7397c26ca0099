"""A real node exporter riding out a stopped broker: every period it counted arrives once, in order.

Needs root (a network namespace of its own, the nftables data plane). The
embedded broker (Tansu) is stopped with SIGSTOP for longer than the
exporter's client timeouts (1.5 s here) while the exporter goes on counting
1 s periods, then resumed; srv6pm.counters must then hold each flow's
record of every period exactly once, in period order, the outage's ones
included.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time

import pytest
from kafka import KafkaConsumer, TopicPartition
from netns_support import skip_reason
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from srv6pm import metrics, records
from srv6pm.config import KafkaSettings
from srv6pm.exporter.config import parse
from srv6pm.exporter.service import Exporter
from srv6pm.kafka import ensure_topics
from srv6pm.lab.emulators.broker import EmbeddedBroker
from srv6pm.netns import NetnsThread
from srv6pm.ports import free_port

pytestmark = [pytest.mark.netns, pytest.mark.services,
              pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

FLOWS = """flows:
  - {name: f1, role: ingress, src: "fd01:1::2/128", dst: "fd01:4::101/128"}
  - {name: f2, role: ingress, src: "fd01:1::2/128", dst: "fd01:4::102/128"}
"""


@pytest.fixture
def ns():
    name = "out" + secrets.token_hex(4)
    pr_netns.create(name)

    def links():
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="v0", kind="veth", peer="v1")
            for link in ("v0", "v1"):
                ipr.link("set", index=ipr.link_lookup(ifname=link)[0], state="up")
    try:
        with NetnsThread(name) as t:
            t.call(links)
        yield name
    finally:
        pr_netns.remove(name)


@pytest.fixture
def broker():
    with EmbeddedBroker(port=free_port()) as running:
        ensure_topics(running.bootstrap, {records.COUNTERS: 2, records.STAMP: 1})
        yield running
        os.kill(running._process.pid, signal.SIGCONT)  # never leave it stopped for the teardown


def counters(bootstrap: str) -> dict[str, list[int]]:
    """Per flow, the periods of its srv6pm.counters records in their partition's order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(records.COUNTERS, p) for p in range(2)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[str, list[int]] = {}
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=300).values():
                for m in messages:
                    record = json.loads(m.value)
                    out.setdefault(record["flow"], []).append(record["period"])
        return out
    finally:
        consumer.close()


def test_periods_counted_while_the_broker_is_stopped_arrive_once_and_in_order(ns, broker, tmp_path):
    node = "outage-" + secrets.token_hex(3)
    config = parse(f"node: {node}\nnetns: {ns}\nperiod: 1\ndataplane: nftables\n"
                   f"state_file: {tmp_path}/state.json\n" + FLOWS)
    exporter = Exporter(config, KafkaSettings(bootstrap=broker.bootstrap), publish_timeout_ms=1500)
    thread = threading.Thread(target=exporter.run, daemon=True)
    thread.start()
    buffered = metrics.get().buffered.labels("exporter", node)
    misses = metrics.get().guard_misses.labels("exporter", node)
    most = 0
    try:
        time.sleep(4)  # a baseline, then records of a few periods
        os.kill(broker._process.pid, signal.SIGSTOP)
        stop_until = time.monotonic() + 6  # four times the client timeout: about six periods counted meanwhile
        while time.monotonic() < stop_until:
            most = max(most, buffered._value.get())
            time.sleep(0.1)
        os.kill(broker._process.pid, signal.SIGCONT)
        time.sleep(4)
    finally:
        exporter.stop()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert most > 0  # records of the outage waited on disk
    assert misses._value.get() == 0  # the outage never stalled a guard read
    assert len(list((tmp_path / "state.json.buffer").glob("*.seg"))) == 0  # all published at the end
    got = counters(broker.bootstrap)
    assert set(got) == {"f1", "f2"}
    for periods in got.values():
        assert len(periods) >= 12
        assert periods == list(range(periods[0], periods[0] + len(periods)))  # no gap, no repeat, in order
