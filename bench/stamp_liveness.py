"""Benchmark: how soon after its last good reply is a dead STAMP path reported?

Two network namespaces with random names, S (the sender's node) - R (the
reflector's node), joined by a veth. R runs srv6pm's socket Session-Reflector;
S runs the exporter's STAMP probes (``srv6pm.exporter.probes.Probes``, the
code the node exporter runs) with one session of ``--rate`` test packets per
second (default 100: every 10 ms) that watches its path (liveness, default
down after 3 misses, up after 3 replies), publishing to an embedded broker.

The path is cut ``--cuts`` times (default 20): an nftables table at R drops
the test packets on input; once the liveness alarm with ``raised`` true has
been read from ``srv6pm.alarms``, the table is deleted and the run waits for
``raised`` false; then a random pause of 0.2-0.5 s (so that each cut falls at
another point of the probe interval), and the next cut.

For each cut it measures, on the one clock of the machine:

* **declared**: the alarm's ``time_ns - last_reply_ns``, from the arrival of
  the last good reply to the sender's declaration;
* **on the broker**: from that last reply until a consumer read the alarm
  from ``srv6pm.alarms`` (what another tool sees);
* **recovery**: from deleting the table until the sender declared the path up.

Prints min / p50 / p99 / max of each in ms, beside the baseline: the probe
interval, and the design bound ``(down_after + 3) x interval`` (the last
good reply's packet, then ``down_after`` unanswered ones, the last of them a
miss 3 intervals after its send). The goal is under 100 ms on the broker at
10 ms probes. Asserts nothing. Needs root. About 20 s.

    python bench/stamp_liveness.py [--rate 100] [--cuts 20] [--down-after 3] [--up-after 3]
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import subprocess
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from srv6pm import netns as nsutil
from srv6pm import decode, records
from srv6pm.nft import Nft
from srv6pm.exporter.probes import Probes
from srv6pm.kafka import ensure_topics
from srv6pm.lab.emulators.broker import EmbeddedBroker
from srv6pm.ports import free_port
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.stamp.liveness import TIMEOUT_INTERVALS
from srv6pm.stamp.protocol import STAMP_PORT
from srv6pm.stamp.reflector import Reflector, ReflectorConfig

S_ADDR, R_ADDR = "fd7c:1::1", "fd7c:1::2"
PORT = STAMP_PORT
TABLE = "benchcut"
GUARD_S = 30


class Network:
    """S - R with random namespace names; :meth:`remove` deletes them."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.s, self.r = f"ls{tag}", f"lr{tag}"
        self.s_if, self.r_if = f"vs{tag}", f"vr{tag}"

    @staticmethod
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def build(self) -> None:
        for ns in (self.s, self.r):
            self.ip("netns", "add", ns)
            self.ip("-n", ns, "link", "set", "lo", "up")
        self.ip("link", "add", self.s_if, "netns", self.s, "type", "veth", "peer", "name", self.r_if, "netns", self.r)
        for ns, dev, addr in ((self.s, self.s_if, S_ADDR), (self.r, self.r_if, R_ADDR)):
            self.ip("-n", ns, "link", "set", dev, "up")
            self.ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")

    def remove(self) -> None:
        for ns in (self.s, self.r):
            if nsutil.exists(ns):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def cut(nft: Nft) -> None:
    nft.run([
        {"add": {"table": {"family": "ip6", "name": TABLE}}},
        {"add": {"chain": {"family": "ip6", "table": TABLE, "name": "in", "type": "filter", "hook": "input",
                           "prio": 0, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip6", "table": TABLE, "chain": "in", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": PORT}},
            {"drop": None}]}}},
    ])


def restore(nft: Nft) -> None:
    nft.run([{"delete": {"table": {"family": "ip6", "name": TABLE}}}])


class AlarmReader:
    """Reads ``srv6pm.alarms`` from its end; each liveness alarm with the wall-clock ns it was read at."""

    def __init__(self, bootstrap: str):
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       fetch_max_wait_ms=10)  # a consumer that wants alarms at once
        tps = [TopicPartition(records.ALARMS, p)
               for p in sorted(self._consumer.partitions_for_topic(records.ALARMS) or {0})]
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:
            self._consumer.position(tp)

    def wait(self, raised: bool) -> tuple[dict, int]:
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline:
            for messages in self._consumer.poll(timeout_ms=20).values():
                read_ns = time.time_ns()
                for m in messages:
                    alarm = decode.decode_alarm(m.value)
                    if alarm.kind == "liveness" and alarm.raised is raised:
                        return alarm.to_dict(), read_ns
        raise SystemExit(f"no liveness alarm with raised={raised} within {GUARD_S} s")

    def close(self) -> None:
        self._consumer.close()


def figures(values_ms: list[float]) -> str:
    ordered = sorted(values_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered) + 0.5) - 1)]  # nearest rank
    return (f"min {ordered[0]:7.1f}  p50 {statistics.median(ordered):7.1f}  p99 {p99:7.1f}  "
            f"max {ordered[-1]:7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="test packets per second (default 100)")
    parser.add_argument("--cuts", type=int, default=20, help="path cuts (default 20)")
    parser.add_argument("--down-after", type=int, default=3, help="misses that declare the path down (default 3)")
    parser.add_argument("--up-after", type=int, default=3, help="replies that declare it up again (default 3)")
    args = parser.parse_args()
    session = validate.stamp_session(pb.StampSession(
        name="bench", destination=R_ADDR, source=S_ADDR, rate=args.rate, reflector_node="R", liveness=True,
        liveness_down_after=args.down_after, liveness_up_after=args.up_after))
    interval_ms = 1000 / session.rate
    net = Network()
    declared, on_broker, recovery = [], [], []
    with EmbeddedBroker(port=free_port()) as broker:
        ensure_topics(broker.bootstrap, {records.ALARMS: 1, records.EVENTS: 1})
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=20)
        reader = AlarmReader(broker.bootstrap)
        try:
            net.build()
            reflector = Reflector(ReflectorConfig(bind=R_ADDR, port=PORT, netns=net.r)).start()
            probes = Probes("S", 2.0, producer, netns=net.s)
            nft = Nft(net.r)
            try:
                probes.start_session(session)
                deadline = time.monotonic() + GUARD_S
                while probes.session_status()[0].received < 20:
                    if time.monotonic() > deadline:
                        raise SystemExit("the session gets no replies")
                    time.sleep(0.05)
                for i in range(args.cuts):
                    time.sleep(random.uniform(0.2, 0.5))
                    cut(nft)
                    down, read_ns = reader.wait(True)
                    restored_ns = time.time_ns()
                    restore(nft)
                    up, _ = reader.wait(False)
                    declared.append((down["time_ns"] - down["last_reply_ns"]) / 1e6)
                    on_broker.append((read_ns - down["last_reply_ns"]) / 1e6)
                    recovery.append((up["time_ns"] - restored_ns) / 1e6)
                    print(f"cut {i + 1:2}: declared {declared[-1]:6.1f} ms, on the broker {on_broker[-1]:6.1f} ms "
                          f"after the last reply; up again {recovery[-1]:6.1f} ms after the restore",
                          file=sys.stderr, flush=True)
            finally:
                probes.stop()
                reflector.close()
                nft.close()
        finally:
            reader.close()
            producer.close()
            net.remove()
    bound = (args.down_after + TIMEOUT_INTERVALS) * interval_ms
    print(f"\nSTAMP path liveness, {args.cuts} path cuts, probes every {interval_ms:g} ms "
          f"(down after {args.down_after} misses, up after {args.up_after} replies; a miss "
          f"{TIMEOUT_INTERVALS} intervals after the send)")
    print(f"baseline: probe interval {interval_ms:7.1f} ms; design bound (down_after + {TIMEOUT_INTERVALS}) x interval "
          f"{bound:.1f} ms")
    print(f"last reply -> declared by the sender:   {figures(declared)}   (p50 {statistics.median(declared) / interval_ms:.1f} intervals)")
    print(f"last reply -> alarm read from broker:   {figures(on_broker)}   (p50 {statistics.median(on_broker) / interval_ms:.1f} intervals)")
    print(f"path restored -> declared up:           {figures(recovery)}")
    print(f"cuts reported on the broker within 100 ms of the last reply: {sum(v < 100 for v in on_broker)} of {args.cuts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
