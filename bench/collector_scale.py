"""Benchmark: the collector reconciling exporters that need thousands of new flows, and a period's graph update.

Reconciliation: the collector's :class:`~srv6pm.collector.reconcile.Engine`
drives stand-in exporters (``tests/collector_standin.py``: real gRPC servers
over an in-memory state, no kernel) from empty to a configuration of N flows
r1 -> r4 via r2, r3 (every node gets N objects or more), with ``ApplyBatch``
and, as the baseline in the same run, with stand-ins that refuse it (one call
per object, as before). It prints the time to convergence, the calls made
and the collector's resident memory.

With ``--exporters real`` (root; run it under the netns lock) the nodes are
real node exporters instead (:class:`~srv6pm.exporter.service.Exporter`, one
process each, the eBPF data plane in a network namespace of its own, the
routes in the kernel, publishing to the embedded broker): the same
configuration reconciled over gRPC with ``ApplyBatch``, and, as the baseline
in the same run, one call per object (up to 1,000 flows: at 10,000 it would
take many minutes); it prints the time, the calls, the collector's memory and
each exporter's.

Graph: a period's N loss results stored in the in-memory graph with one
``update_many`` (what the results consumer does per poll) and, as the
baseline, one ``update_loss`` each (up to 2,000 flows: it is quadratic, each
result rewriting the link documents that hold every flow's segments); it
counts the backend writes, which are HTTP requests with ArangoDB.

Asserts nothing about times.

    python bench/collector_scale.py [--flows 1000,10000] [--exporters standin|real] [--json]
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

import grpc  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from srv6pm import metrics as metrics_mod  # noqa: E402
from srv6pm import records  # noqa: E402
from srv6pm.collector import config, desired, flowmon  # noqa: E402
from srv6pm.collector import graph as g  # noqa: E402
from srv6pm.collector.events import Events  # noqa: E402
from srv6pm.collector.reconcile import Backoff, Engine  # noqa: E402
from srv6pm.southbound.client import ExporterClient, SouthboundError  # noqa: E402

NODES = ("r1", "r2", "r3", "r4")


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def make_config(n: int, addresses: dict[str, str], device: str = "") -> config.Config:
    doc = {"dataplane": "ebpf", "tls": {"plaintext": True},
           "nodes": [{"name": name, "grpc": addresses[name],
                      "sids": [{"sid": f"fcff:{i + 1}::1", "behavior": "End"}, {"sid": f"fcff:{i + 1}::100",
                                                                               "behavior": "End.DT6"}]}
                     for i, name in enumerate(NODES)],
           "flows": [{"name": f"f{i}", "from": "r1", "to": "r4", "via": ["r2", "r3"], "source": "fd01:1::2/128",
                      "destination": f"fd01:4:{i // 65536:x}:{i % 65536:x}::/64", **({"device": device} if device else {})}
                     for i in range(n)]}
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


def exporter_child(name: str, broker: str) -> int:
    """One real exporter (the child process): its namespace, its API on a free port; the port on stdout, then
    its resident memory (MiB) for every line read from stdin; at end of input it closes and cleans up."""
    import secrets
    import tempfile

    from pyroute2 import IPRoute
    from pyroute2 import netns as pr_netns

    from srv6pm import bpf
    from srv6pm.config import KafkaSettings
    from srv6pm.exporter import ebpf as ebpf_mod
    from srv6pm.exporter.api import ServerSettings
    from srv6pm.exporter.config import parse
    from srv6pm.exporter.service import Exporter
    from srv6pm.netns import NetnsThread

    ns, node = "cs" + secrets.token_hex(4), f"cs{secrets.token_hex(2)}{name}"
    pr_netns.create(ns)
    state = tempfile.mkdtemp(prefix="srv6pm-bench-")

    def links():  # a device for the policies' routes; the SIDs go on lo
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="v0", kind="veth", peer="v1")
            for dev in ("v0", "v1"):
                ipr.link("set", index=ipr.link_lookup(ifname=dev)[0], state="up")
    exporter = None
    try:
        with NetnsThread(ns) as t:
            t.call(links)
        exporter = Exporter(parse(f"node: {node}\nnetns: {ns}\nperiod: 10\ndataplane: ebpf\n"
                                  f"state_file: {state}/state.json\n"),
                            KafkaSettings(bootstrap=broker), api=ServerSettings("127.0.0.1:0", None))
        exporter.start()
        print(f"port {exporter._server.port}", flush=True)
        for _ in sys.stdin:
            print(f"rss {round(_rss_mib(), 1)}", flush=True)
    finally:
        if exporter is not None:
            exporter.close()
            bpf.unpin(ebpf_mod.pin_dir(node))
        pr_netns.remove(ns)
    return 0


class _Exporters:
    """The four real exporters, each in a child process (see :func:`exporter_child`)."""

    def __init__(self, broker: str):
        import subprocess
        self.children = {name: subprocess.Popen([sys.executable, __file__, "--exporter-child", name, broker],
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                         for name in NODES}
        self.addresses = {}
        for name, child in self.children.items():
            port = self._answer(child, "port")
            if port is None:
                self.close()
                raise SystemExit(f"exporter {name} did not start")
            self.addresses[name] = f"127.0.0.1:{port}"

    @staticmethod
    def _answer(child, word: str) -> str | None:
        """The value of the child's next ``<word> <value>`` line (other lines are its log); None at its end."""
        for line in child.stdout:
            if line.startswith(word + " "):
                return line.split()[1]
        return None

    def rss_mib(self) -> dict[str, float]:
        out = {}
        for name, child in self.children.items():
            child.stdin.write("rss\n")
            child.stdin.flush()
            out[name] = float(self._answer(child, "rss"))
        return out

    def close(self) -> None:
        for child in self.children.values():
            child.stdin.close()
        for child in self.children.values():
            child.wait(timeout=120)


class _Client(ExporterClient):
    """The collector's client, counting ApplyBatch calls; ``single``: ApplyBatch answered UNIMPLEMENTED, as by
    an exporter without it, so the engine makes one call per object."""

    single = False
    batches = 0
    seconds: dict  # address -> seconds spent in its ApplyBatch calls

    def __init__(self, address, *args, **kwargs):
        super().__init__(address, *args, **kwargs)
        self.address = address

    def apply_batch(self, messages):
        if self.single:
            raise SouthboundError(grpc.StatusCode.UNIMPLEMENTED, "ApplyBatch left out for the baseline")
        type(self).batches += 1
        t0 = time.perf_counter()
        try:
            return super().apply_batch(messages)
        finally:
            self.seconds[self.address] = self.seconds.get(self.address, 0.0) + time.perf_counter() - t0


def reconcile_real(n: int, batch: bool, broker: str) -> dict:
    """Converge four real exporters from empty to ``n`` flows; the time, calls and memory."""
    exporters = _Exporters(broker)
    client = type("Client", (_Client,), {"single": not batch, "batches": 0, "seconds": {}})
    registry = metrics_mod.get(CollectorRegistry())
    events = Events(None)
    engine = Engine(events, interval=0.1, backoff=Backoff(0.2, 0.4), timeout=120.0, client_factory=client,
                    metrics=registry)
    try:
        engine.load(make_config(n, exporters.addresses, device="v0"), 1)
        t0 = time.perf_counter()
        rounds = 0
        while not engine.round().converged:
            rounds += 1
            if rounds > 50:
                raise SystemExit("did not converge")
        seconds = time.perf_counter() - t0
        held = sum(len(desired.actual_state(s.state)) for s in engine.nodes.values())
        singles = sum(v for (labels, v) in _api_calls(registry) if labels[1] not in ("GetState", "ApplyBatch"))
        return {"bench": "reconcile", "exporters": "real", "flows": n, "mode": "batch" if batch else "single",
                "seconds": round(seconds, 2), "rounds": rounds + 1, "objects": held,
                "calls": client.batches if batch else int(singles), "collector_rss_mib": round(_rss_mib(), 1),
                "exporter_rss_mib": exporters.rss_mib(),
                "refused": [f"{e.node}: {e.object}: {e.detail}" for e in events.history if e.kind == "apply_failed"][:3],
                "batch_s": {name: round(client.seconds.get(address, 0.0), 2)
                            for name, address in exporters.addresses.items()} if batch else None}
    finally:
        engine.close()
        exporters.close()


def _api_calls(registry) -> list[tuple[tuple[str, ...], float]]:
    """((component, method, code), count) of srv6pm_api_calls_total in ``registry``."""
    out = []
    for metric in registry.api_calls.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out.append(((sample.labels["component"], sample.labels["method"], sample.labels["code"]),
                            sample.value))
    return out


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
    parser.add_argument("--exporters", choices=("standin", "real"), default="standin",
                        help="stand-ins (in-memory state) or real exporters (root: namespaces, eBPF, routes)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--exporter-child", nargs=2, metavar=("NODE", "BROKER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.exporter_child:
        return exporter_child(*args.exporter_child)
    if args.exporters == "real":
        return main_real([int(x) for x in args.flows.split(",")], args.json)
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


def main_real(counts: list[int], as_json: bool) -> int:
    from srv6pm.kafka import ensure_topics
    from srv6pm.lab.emulators.broker import EmbeddedBroker
    from srv6pm.ports import free_port
    with EmbeddedBroker(port=free_port()) as broker:
        ensure_topics(broker.bootstrap, {records.COUNTERS: 4})
        for n in counts:
            rows = [reconcile_real(n, True, broker.bootstrap)]
            if n <= 1000:  # the baseline: one call per object
                rows.append(reconcile_real(n, False, broker.bootstrap))
            for row in rows:
                row["per_object_ms"] = round(row["seconds"] * 1000 / max(1, row["objects"]), 3)
                row["vs_single"] = round(row["seconds"] / rows[-1]["seconds"], 3) if len(rows) > 1 else None
                print(json.dumps(row) if as_json else "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
