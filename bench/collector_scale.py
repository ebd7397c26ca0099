"""Benchmark: the collector reconciling exporters that need thousands of new flows, and a period's graph update.

Reconciliation: the collector's :class:`~srv6pm.collector.reconcile.Engine`
drives stand-in exporters (``tests/collector_standin.py``: real gRPC servers
over an in-memory state, no kernel) from empty to a configuration of N flows
r1 -> r4 via r2, r3 (every node gets N objects or more), with ``ApplyBatch``
and, as the baseline in the same run, with stand-ins that refuse it (one call
per object, as before). It prints the time to convergence, the calls made
and the collector's resident memory.

Graph: a period's N loss results stored in the in-memory graph with one
``update_many`` (what the results consumer does per poll) and, as the
baseline, one ``update_loss`` each (up to 2,000 flows: it is quadratic, each
result rewriting the link documents that hold every flow's segments); it
counts the backend writes, which are HTTP requests with ArangoDB.

Asserts nothing about times.

    python bench/collector_scale.py [--flows 1000,10000] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from collector_standin import CallLog, StandIn  # noqa: E402

from srv6pm import records  # noqa: E402
from srv6pm.collector import config, flowmon  # noqa: E402
from srv6pm.collector import graph as g  # noqa: E402
from srv6pm.collector.events import Events  # noqa: E402
from srv6pm.collector.reconcile import Backoff, Engine  # noqa: E402

NODES = ("r1", "r2", "r3", "r4")


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def make_config(n: int, addresses: dict[str, str]) -> config.Config:
    doc = {"dataplane": "ebpf", "tls": {"plaintext": True},
           "nodes": [{"name": name, "grpc": addresses[name],
                      "sids": [{"sid": f"fcff:{i + 1}::1", "behavior": "End"}, {"sid": f"fcff:{i + 1}::100",
                                                                               "behavior": "End.DT6"}]}
                     for i, name in enumerate(NODES)],
           "flows": [{"name": f"f{i}", "from": "r1", "to": "r4", "via": ["r2", "r3"], "source": "fd01:1::2/128",
                      "destination": f"fd01:4:{i // 65536:x}:{i % 65536:x}::/64"} for i in range(n)]}
    return flowmon.assign(config.parse(json.dumps(doc), source="bench"), flowmon.Allocator(None))


def reconcile(n: int, batch: bool) -> dict:
    log = CallLog()
    standins = {name: StandIn(name, log).start() for name in NODES}
    engine = Engine(Events(None), interval=0.1, backoff=Backoff(0.2, 0.4), timeout=30.0)
    try:
        for s in standins.values():
            s.no_batch = not batch
        engine.load(make_config(n, {k: s.address for k, s in standins.items()}), 1)
        t0 = time.perf_counter()
        rounds = 0
        while not engine.round().converged:
            rounds += 1
            if rounds > 50:
                raise SystemExit("did not converge")
        seconds = time.perf_counter() - t0
        held = sum(len(s.objects) for s in standins.values())
        return {"bench": "reconcile", "flows": n, "mode": "batch" if batch else "single", "seconds": round(seconds, 2),
                "objects": held, "calls": sum(len(s.batches) for s in standins.values()) if batch else len(log.calls),
                "rss_mib": round(_rss_mib(), 1)}
    finally:
        engine.close()
        for s in standins.values():
            s.stop()


class _Counting(g.MemoryGraph):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def _put(self, collection, doc):
        self.writes += 1
        super()._put(collection, doc)

    def _put_many(self, collection, docs):
        self.writes += 1 if docs else 0  # one bulk request with ArangoDB
        for doc in docs:
            g.MemoryGraph._put(self, collection, doc)


def graph(n: int, batch: bool) -> dict:
    store = _Counting()
    store.ensure()
    nodes = tuple(g.NodeSpec(name) for name in NODES)
    links = tuple(g.LinkSpec(a, b) for a, b in zip(NODES, NODES[1:]))
    store.sync_topology(g.Topology(nodes, links, tuple(g.PathSpec("flow", f"f{i}", "r1", "r4", ("r2", "r3"))
                                                       for i in range(n))))
    segs = [{"from": a, "to": b, "tx_packets": 10, "rx_packets": 10, "lost_packets": 0, "complete": True}
            for a, b in zip(NODES, NODES[1:])]
    results = [(records.LOSS, records.LossResult(
        flow=f"f{i}", period=100, period_start="2025-11-24T16:00:00Z", period_s=10.0, ingress="r1", egress="r4",
        tx_packets=10, rx_packets=10, tx_bytes=1000, rx_bytes=1000, lost_packets=0, loss_ratio=0.0, complete=True,
        missing=None).to_dict() | {"segments": copy.deepcopy(segs)}) for i in range(n)]
    store.writes = 0
    t0 = time.perf_counter()
    if batch:
        store.update_many(results)
    else:
        for _, r in results:
            store.update_loss(r)
    return {"bench": "graph", "flows": n, "mode": "batch" if batch else "single",
            "seconds": round(time.perf_counter() - t0, 3), "writes": store.writes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", default="1000,10000")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for n in (int(x) for x in args.flows.split(",")):
        for bench in (reconcile, graph):
            # one update_loss per result rewrites each link's document, which holds every flow's segment there:
            # quadratic, so its baseline is measured only up to 2,000 flows
            baseline = n <= 2000 or bench is reconcile
            rows = [bench(n, batch) for batch in ((False, True) if baseline else (True,))]
            for row in rows:
                row["vs_single"] = round(row["seconds"] / rows[0]["seconds"], 3) if baseline else None
                print(json.dumps(row) if args.json else "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
