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
take many minutes); it prints the time, the calls, the refusals (each is
retried in a later round), the CPU time and memory of the collector and of
each exporter.

Graph: a period's N loss results stored in the in-memory graph with one
``update_many`` (what the results consumer does per poll: the records
decoded from their JSON, time included, and stored as decoded) and, as the
baseline, one ``update_loss`` each (up to 2,000 flows: it is quadratic, each
result rewriting the link documents that hold every flow's segments); it
counts the backend writes, which are HTTP requests with ArangoDB.

Asserts nothing about times.

With ``--profile`` (real exporters) it also prints where the time of the
10,000-flow reconciliation goes: the collector's stages (configuration,
polls, diffs, each step's wall time and the ApplyBatch calls' client-side
work) and the 15 functions with the most cumulative time, in the collector
(all its threads) and in each exporter's ``ApplyBatch`` and ``GetState``.

    python bench/collector_scale.py [--flows 1000,10000] [--exporters standin|real] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import functools
import io
import os
import pstats
import shutil
import tempfile
import threading
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from collector_standin import CallLog, StandIn  # noqa: E402
from ns_exporter import rss_mib  # noqa: E402

import grpc  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from srv6pm import metrics as metrics_mod  # noqa: E402
from srv6pm import decode, records  # noqa: E402
from srv6pm.collector import config, desired, flowmon  # noqa: E402
from srv6pm.collector import graph as g  # noqa: E402
from srv6pm.collector.events import Events  # noqa: E402
from srv6pm.collector.reconcile import Backoff, Engine  # noqa: E402
from srv6pm.southbound.client import ExporterClient, SouthboundError  # noqa: E402

NODES = ("r1", "r2", "r3", "r4")


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
                "rss_mib": round(rss_mib(), 1)}
    finally:
        engine.close()
        for s in standins.values():
            s.stop()


class _Profile:
    """Wall time by stage and a cProfile of wrapped functions, in whatever thread they run.

    :meth:`wrap` replaces ``owner.name`` by a wrapper that adds the call to the stage ``label`` (count, first
    start, last end: ``time.perf_counter()``, the same clock in every process here; total seconds) and, when it is the outermost wrapped call of its
    thread, profiles it (one cProfile per call, merged by :meth:`top`). :meth:`restore` undoes the wrapping.
    """

    def __init__(self):
        self.profiling = os.environ.get("SRV6PM_BENCH_CPROFILE", "1") != "0"
        self.stages: dict[str, list[float]] = {}
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, label: str | None = None, *, by_arg: bool = False) -> None:
        fn = getattr(owner, name)
        label = label or name

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            outer = self.profiling and not getattr(self._local, "on", False)
            profile = cProfile.Profile() if outer else None
            t0 = time.perf_counter()
            if profile is not None:
                self._local.on = True
                profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                if profile is not None:
                    profile.disable()
                    self._local.on = False
                key = f"{label} {getattr(args[1], 'name', '')}".strip() if by_arg else label
                with self._lock:
                    if profile is not None:
                        self.profiles.append(profile)
                    row = self.stages.setdefault(key, [0, t0, 0.0, 0.0])
                    row[0] += 1
                    row[2] = t1
                    row[3] += t1 - t0
        self._undo.append((owner, name, owner.__dict__[name] if name in vars(owner) else fn))
        setattr(owner, name, wrapper)

    def restore(self) -> None:
        for owner, name, fn in reversed(self._undo):
            setattr(owner, name, fn)
        self._undo.clear()

    def dump(self, path: str) -> None:
        """Write the stages to ``path`` (JSON) and the merged profile to ``path`` + ``.prof`` (see :func:`_shown`)."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.stages, fh)
        if self.profiles:
            stats = pstats.Stats(self.profiles[0])
            for p in self.profiles[1:]:
                stats.add(p)
            stats.dump_stats(path + ".prof")


def _profile_exporter() -> _Profile:
    """The stages of one exporter's ApplyBatch and GetState (in the child, with ``--profile``)."""
    from srv6pm.exporter import api, batch, intent, routes, service
    from srv6pm.southbound import validate
    prof = _Profile()
    prof.wrap(api.Node, "batch", "ApplyBatch")
    prof.wrap(api.Node, "state", "GetState")
    prof.wrap(batch, "_validated", "validate (flows, policies)")
    prof.wrap(validate, "batch_object", "validate.batch_object")
    prof.wrap(routes.Routes, "apply_policies", "routes.apply_policies")
    prof.wrap(service.Exporter, "change_flows", "change_flows")
    prof.wrap(api.Node, "recorded", "recorded (intent.put)")
    prof.wrap(intent.Intent, "put", "intent.put")
    prof.wrap(intent.Intent, "get", "intent.get")
    return prof


def _profile_collector() -> _Profile:
    from srv6pm.collector import reconcile as reconcile_mod
    from srv6pm.southbound import client as client_mod
    prof = _Profile()
    prof.wrap(Engine, "round", "round")
    prof.wrap(Engine, "_take_config", "desired state (_take_config)")
    prof.wrap(Engine, "_poll", "poll (GetState all nodes)")
    prof.wrap(Engine, "_get_state", "GetState", by_arg=True)
    prof.wrap(reconcile_mod, "_actual", "normalise actual (_actual)")
    prof.wrap(desired, "diff", "diff")
    prof.wrap(Engine, "_act", "act", by_arg=True)
    prof.wrap(client_mod.ExporterClient, "apply_batch", "client.apply_batch")
    prof.wrap(client_mod.ExporterClient, "_call", "RPC (stub call)")
    prof.wrap(Engine, "_answered", "answers (_answered)")
    return prof


def _shown(title: str, stages: dict, prof_path: str, t0: float) -> None:
    """Print the stages (times from ``t0``, by first start) and the profile's top 15 (cumulative)."""
    print(f"{title}:")
    for label, (n, a, b, total) in sorted(stages.items(), key=lambda kv: kv[1][1]):
        print(f"  {label:<34} calls {int(n):>6}  from {a - t0:7.2f}  to {b - t0:7.2f}  in it {total:7.2f} s")
    if os.path.exists(prof_path):
        out = io.StringIO()
        pstats.Stats(prof_path, stream=out).sort_stats("cumulative").print_stats(30)
        lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
        start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
        print("\n".join("  " + ln for ln in lines[start:]))


def exporter_child(name: str, broker: str) -> int:
    """One real exporter (the child process): its namespace, its API on a free port; the port on stdout, then
    its resident memory (MiB) for every line read from stdin; at end of input it closes and cleans up."""
    import secrets

    from ns_exporter import exporter, rss_mib
    where = os.environ.get("SRV6PM_BENCH_PROFILE")
    prof = _profile_exporter() if where else None
    with exporter("cs", broker, node=f"cs{secrets.token_hex(2)}{name}") as started:
        print(f"port {started._server.port}", flush=True)
        for _ in sys.stdin:
            print(f"rss {round(rss_mib(), 1)} {time.process_time()}", flush=True)
        if prof is not None:
            prof.dump(os.path.join(where, name))
    return 0


class _Exporters:
    """The four real exporters, each in a child process (see :func:`exporter_child`)."""

    def __init__(self, broker: str, profile: str | None = None):
        import subprocess
        env = {**os.environ, **({"SRV6PM_BENCH_PROFILE": profile} if profile else {})}
        self.children = {name: subprocess.Popen([sys.executable, __file__, "--exporter-child", name, broker],
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                         for name in NODES}
        self.addresses = {}
        for name, child in self.children.items():
            port = self._answer(child, "port")
            if port is None:
                self.close()
                raise SystemExit(f"exporter {name} did not start")
            self.addresses[name] = f"127.0.0.1:{port}"

    @staticmethod
    def _answer(child, word: str, at: int = 1) -> str | None:
        """Value ``at`` of the child's next ``<word> <value>...`` line (other lines are its log); None at its end."""
        for line in child.stdout:
            if line.startswith(word + " "):
                return line.split()[at]
        return None

    def usage(self) -> dict[str, tuple[float, float]]:
        """Each exporter's (resident memory in MiB, CPU seconds so far)."""
        out = {}
        for name, child in self.children.items():
            child.stdin.write("rss\n")
            child.stdin.flush()
            for line in child.stdout:
                if line.startswith("rss "):
                    out[name] = (float(line.split()[1]), float(line.split()[2]))
                    break
        return out

    def close(self) -> None:
        for child in self.children.values():
            child.stdin.close()
        for child in self.children.values():
            child.wait(timeout=120)


class _Refusals(Events):
    """Events, keeping every refusal (``apply_failed``: node, object, detail), which the history may have lost."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refused: list[str] = []

    def emit(self, kind, **fields):
        if kind == "apply_failed":
            self.refused.append(f"{fields.get('node')}: {fields.get('object')}: {fields.get('detail')}")
        return super().emit(kind, **fields)


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


def reconcile_real(n: int, batch: bool, broker: str, profile: bool = False) -> dict:
    """Converge four real exporters from empty to ``n`` flows; the time, calls and memory (``profile``: and
    where the time goes, printed)."""
    where = tempfile.mkdtemp(prefix="srv6pm-bench-profile-") if profile else None
    exporters = _Exporters(broker, where)
    prof = _profile_collector() if profile else None
    t0 = time.perf_counter()
    client = type("Client", (_Client,), {"single": not batch, "batches": 0, "seconds": {}})
    registry = metrics_mod.get(CollectorRegistry())
    events = _Refusals(None)
    engine = Engine(events, interval=0.1, backoff=Backoff(0.2, 0.4), timeout=120.0, client_factory=client,
                    metrics=registry)
    try:
        engine.load(make_config(n, exporters.addresses, device="v0"), 1)
        cpu0 = exporters.usage()
        t0, collector_cpu = time.perf_counter(), time.process_time()
        rounds = 0
        while not engine.round().converged:
            rounds += 1
            if rounds > 50:
                raise SystemExit("did not converge")
        seconds, collector_cpu = time.perf_counter() - t0, time.process_time() - collector_cpu
        usage = exporters.usage()
        if prof is not None:
            prof.restore()
        held = sum(len(desired.actual_state(s.state)) for s in engine.nodes.values())
        singles = sum(v for (labels, v) in _api_calls(registry) if labels[1] not in ("GetState", "ApplyBatch"))
        return {"bench": "reconcile", "exporters": "real", "flows": n, "mode": "batch" if batch else "single",
                "seconds": round(seconds, 2), "rounds": rounds + 1, "objects": held,
                "calls": client.batches if batch else int(singles), "collector_cpu_s": round(collector_cpu, 2),
                "exporter_cpu_s": {name: round(usage[name][1] - cpu0[name][1], 2) for name in NODES},
                "collector_rss_mib": round(rss_mib(), 1), "exporter_rss_mib": {name: usage[name][0] for name in NODES},
                "refused": len(events.refused), "first_refused": events.refused[:2],
                "batch_s": {name: round(client.seconds.get(address, 0.0), 2)
                            for name, address in exporters.addresses.items()} if batch else None}
    finally:
        if prof is not None:
            prof.restore()
        engine.close()
        exporters.close()
        if prof is not None and where is not None:
            with contextlib.redirect_stdout(sys.stderr):
                _shown(f"collector ({n} flows; times in s from the start of reconciliation)", prof.stages,
                       "", t0)
                prof.dump(os.path.join(where, "collector"))
                _shown("collector, its profile", {}, os.path.join(where, "collector.prof"), t0)
                for name in NODES:
                    with contextlib.suppress(FileNotFoundError):
                        with open(os.path.join(where, name), encoding="utf-8") as fh:
                            _shown(f"exporter {name}", json.load(fh), os.path.join(where, name + ".prof"), t0)
            shutil.rmtree(where, ignore_errors=True)


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
    links = tuple(g.LinkSpec(a, b) for a, b in zip(NODES, NODES[1:], strict=False))
    store.sync_topology(g.Topology(nodes, links, tuple(g.PathSpec("flow", f"f{i}", "r1", "r4", ("r2", "r3"))
                                                       for i in range(n))))
    segs = [{"from": a, "to": b, "tx_packets": 10, "rx_packets": 10, "lost_packets": 0, "complete": True}
            for a, b in zip(NODES, NODES[1:], strict=False)]
    results = [(records.LOSS, records.LossResult(
        flow=f"f{i}", period=100, period_start="2025-11-24T16:00:00Z", period_s=10.0, ingress="r1", egress="r4",
        tx_packets=10, rx_packets=10, tx_bytes=1000, rx_bytes=1000, lost_packets=0, loss_ratio=0.0, complete=True,
        missing=None).to_dict() | {"segments": copy.deepcopy(segs)}) for i in range(n)]
    store.writes = 0
    t0 = time.perf_counter()
    if batch:  # as the results consumer does: the records it decoded (their JSON form before update_many took them)
        given = (lambda record: record) if hasattr(g, "Decoded") else (lambda record: record.to_dict())
        store.update_many([(topic, given(decode.decode(topic, records.encode(r)))) for topic, r in results])
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
    parser.add_argument("--profile", action="store_true",
                        help="with real exporters: print where the time goes (stages, profiles) on stderr")
    parser.add_argument("--exporter-child", nargs=2, metavar=("NODE", "BROKER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.exporter_child:
        return exporter_child(*args.exporter_child)
    if args.exporters == "real":
        return main_real([int(x) for x in args.flows.split(",")], args.json, args.profile)
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


def main_real(counts: list[int], as_json: bool, profile: bool = False) -> int:
    from srv6pm.kafka import ensure_topics
    from srv6pm.lab.emulators.broker import EmbeddedBroker
    from srv6pm.ports import free_port
    with EmbeddedBroker(port=free_port()) as broker:
        ensure_topics(broker.bootstrap, {records.COUNTERS: 4})
        for n in counts:
            rows = [reconcile_real(n, True, broker.bootstrap, profile)]
            if n <= 1000:  # the baseline: one call per object
                rows.append(reconcile_real(n, False, broker.bootstrap))
            for row in rows:
                row["per_object_ms"] = round(row["seconds"] * 1000 / max(1, row["objects"]), 3)
                row["vs_single"] = round(row["seconds"] / rows[-1]["seconds"], 3) if len(rows) > 1 else None
                print(json.dumps(row) if as_json else "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
