"""Benchmark: does the per-packet cost of counting grow with the number of monitored flows?

Builds a three-router SRv6 lab network (random namespace names; root needed),
sends one flow's UDP packets as fast as one Python sender can through it for a
few seconds, and measures the packets per second forwarded through the egress
router, whose forward hook runs the counting classifier, in three set-ups:

* ``none``     no counting table at all (the baseline: the cost of the path itself);
* ``sets``     srv6pm's CountingTable: three rules, flows in sets with per-element
               counters, one hash lookup per packet, N flows installed;
* ``rules``    the design the research warns against: one rule per flow and
               colour (``ip6 dscp X ip6 saddr S ip6 daddr D counter``), N flows.

The measured flow is installed last, so with per-flow rules every packet is
compared with all the others first. Prints a table of forwarded packets per
second and each set-up's ratio to the baseline measured in the same run;
asserts nothing about times.

    python bench/classifier.py [--flows 1,100,1000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
import uuid

from flood import arrived, flood

from srv6pm.exporter.dataplane import CountingTable, FlowMatch
from srv6pm.nft import Nft
from srv6pm.lab import network, topology
from srv6pm.lab.scenario import parse

DSCP = 11  # colour 0


def synthetic_flows(n: int) -> list[FlowMatch]:
    base = int(ipaddress.IPv6Address("fd99::"))
    return [FlowMatch(f"x{i}", f"{ipaddress.IPv6Address(base + 2 * i)}/128",
                      f"{ipaddress.IPv6Address(base + 2 * i + 1)}/128") for i in range(n)]


def rule_per_flow(nft: Nft, flows: list[FlowMatch]) -> None:
    table = {"family": "ip6", "name": "bench"}
    cmds = [{"add": {"table": table}},
            {"add": {"chain": {**{"family": "ip6", "table": "bench"}, "name": "count", "type": "filter",
                               "hook": "forward", "prio": 0, "policy": "accept"}}}]
    for colour_dscp in (DSCP, 15):
        for f in flows:
            src, dst = (ipaddress.IPv6Network(p) for p in (f.src, f.dst))
            cmds.append({"add": {"rule": {"family": "ip6", "table": "bench", "chain": "count", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "dscp"}}, "right": colour_dscp}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                           "right": str(src.network_address)}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                           "right": str(dst.network_address)}},
                {"counter": None}]}}})
    nft.run(cmds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", default="1,100,1000", help="flow counts to measure (default 1,100,1000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of traffic per measurement")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/classifier.py needs root (network namespaces)", file=sys.stderr)
        return 2
    counts = [int(x) for x in args.flows.split(",")]
    p = "b" + uuid.uuid4().hex[:5]
    scenario = parse(f"""
period: 10
nodes: [{p}a, {p}b, {p}c]
links: [[{p}a, {p}b], [{p}b, {p}c]]
flows: [{{name: m, from: {p}a, to: {p}c, via: [{p}b], rate: 1}}]
""", "bench")
    plan = topology.plan(scenario)
    flow = plan.flow("m")
    network.build(plan)
    try:
        egress = Nft(flow.egress)
        sink = Nft(flow.dst_netns)
        measured = FlowMatch("m", *plan.flow_match("m"))
        rows = []

        def measure(label: str, n: int | None) -> None:
            before = arrived(sink)
            sent = flood(flow.src_netns, flow.dst_addr, args.seconds, dscp=DSCP, src=flow.src_addr)
            time.sleep(0.2)
            got = arrived(sink) - before
            rows.append((label, n, sent / args.seconds, got / args.seconds))
            print(f"  {label:6} flows={n if n is not None else '-':>5}  sent {sent / args.seconds:10.0f}/s  "
                  f"forwarded {got / args.seconds:10.0f}/s", file=sys.stderr, flush=True)

        measure("none", None)
        for n in counts:
            table = CountingTable(egress)
            table.install([], synthetic_flows(n - 1) + [measured], colour=0)
            measure("sets", n)
            table.remove()
            rule_per_flow(egress, synthetic_flows(n - 1) + [measured])
            measure("rules", n)
            egress.run([{"delete": {"table": {"family": "ip6", "name": "bench"}}}])
        baseline = rows[0][3]
        print(f"\n{'set-up':8} {'flows':>6} {'forwarded pkt/s':>16} {'vs none':>8}")
        for label, n, _sent, fwd in rows:
            print(f"{label:8} {('-' if n is None else n):>6} {fwd:16.0f} {fwd / baseline:8.2f}")
        sets = {n: f for label, n, _s, f in rows if label == "sets"}
        rules = {n: f for label, n, _s, f in rows if label == "rules"}
        lo, hi = min(counts), max(counts)
        print(f"\nsets:  {hi} flows vs {lo}: {sets[hi] / sets[lo]:.2f}x the rate")
        print(f"rules: {hi} flows vs {lo}: {rules[hi] / rules[lo]:.2f}x the rate")
        egress.close()
        sink.close()
    finally:
        network.teardown(plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
