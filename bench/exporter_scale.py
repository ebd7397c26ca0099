"""Benchmark: the node exporter at 100 to 100,000 flows, per data plane (root; the embedded broker).

For each data plane (``nftables``, ``ebpf``) and each flow count N, a child
process runs a real :class:`~srv6pm.exporter.service.Exporter` (its API on a
free port, its data plane in a network namespace of its own, publishing to
the embedded Kafka-compatible broker) and measures:

* ``install_s``: N ingress flows applied through the API, ``ApplyBatch`` calls
  of 1,000;
* ``add_one_ms``: one more flow through ``StartFlowMonitoring`` (median of 5),
  and ``add_ratio``: that over the same figure at the smallest N of the run
  (the baseline: 1.0 means it does not grow with the flow count);
* ``guard_read_ms``: one guard read of one colour (every flow's counters);
* ``guard_publish_ms``: a whole guard time with N records to publish: the
  read, the blocks, the records encoded and published in record batches by
  the exporter's outbox, the broker's acknowledgement of every record, the
  baselines saved (one record per flow);
  measured at the second guard with records (as every period after it;
  ``first_guard_publish_ms``: the first, whose records are each flow's
  first; their constant fields are formatted when the flow is installed); ``uncompressed_ms``: the same with the record
  batches not compressed (the baseline of the exporter's compression);
* ``producer_ms``, the baseline: the same N records sent with kafka-python's
  ``KafkaProducer`` one ``send()`` each, then ``flush()`` (what the exporter
  did before), and ``publish_ratio``: ``guard_publish_ms`` over it;
* ``colour_ms``: one colour switch;
* ``rss_mib``: the child's resident memory with N flows applied, and
  ``rss_per_flow_b`` over the same figure at the smallest N.

``--profile``: after those, three more guards with each stage's CPU and
wall time, every thread's CPU time (the guard's, the outbox's, the client's)
and the garbage collections measured, then three more profiled with cProfile
(the guard, the outbox's publish call, the record batches' framing), the
profiles' top functions by own time printed.

Prints a table (``--json``: one object per line); asserts nothing about times.
Everything it builds (namespaces, pinned maps) is removed at the end.

    python bench/exporter_scale.py [--flows 100,1000,10000,100000] [--dataplanes nftables,ebpf] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from ns_exporter import rss_mib as _rss_mib
from threads import GcTimer, thread_cpu


def flow(i: int, ebpf: bool):
    from srv6pm.southbound.v1 import southbound_pb2 as pb
    return pb.FlowMonitor(flow=f"f{i}", role=pb.ROLE_INGRESS, source_prefix="fd01::1",
                          destination_prefix=f"fd00:{i // 65536:x}:{i % 65536:x}::/64",
                          flowmon_id=i + 1 if ebpf else 0)


def one(dataplane: str, n: int, broker: str, profile: bool = False) -> dict:
    """Measure one data plane at ``n`` flows in this process (the child)."""
    import grpc
    from ns_exporter import exporter as ns_exporter
    from srv6pm.southbound import validate
    from srv6pm.southbound.v1 import southbound_pb2 as pb
    from srv6pm.southbound.v1 import southbound_pb2_grpc as rpc

    with ns_exporter("bx", broker, dataplane=dataplane) as exporter:
        rss0 = _rss_mib()
        stub = rpc.NodeExporterStub(grpc.insecure_channel(f"127.0.0.1:{exporter._server.port}"))
        ebpf = dataplane == "ebpf"
        t0 = time.perf_counter()
        for start in range(0, n, 1000):
            items = [validate.batch_item(flow(i, ebpf)) for i in range(start, min(n, start + 1000))]
            results = stub.ApplyBatch(pb.Batch(items=items), timeout=600).results
            assert all(r.code == 0 for r in results), [r.error for r in results if r.code][:3]
        install = time.perf_counter() - t0
        adds = []
        for j in range(5):
            t0 = time.perf_counter()
            assert stub.StartFlowMonitoring(flow(n + j, ebpf), timeout=60).changed
            adds.append(time.perf_counter() - t0)
        rss = _rss_mib()
        clock = exporter.clock
        k = clock.period_at(time.time_ns())
        t0 = time.perf_counter()
        with exporter.lock:
            exporter._table.read_all(clock.colour(k))
        read = time.perf_counter() - t0
        exporter._guard(k - 2, clock.start_ns(k - 1))  # the baseline reading
        assert exporter.outbox.wait(600)
        t0 = time.perf_counter()
        exporter._guard(k, clock.start_ns(k + 1))  # n + 5 records, each flow's first
        assert exporter.outbox.wait(600)  # every record acknowledged
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        exporter._guard(k + 2, clock.start_ns(k + 3))  # the same again, as every later period
        assert exporter.outbox.wait(600)
        publish = time.perf_counter() - t0
        exporter.outbox._publisher.compression = None  # the same again, record batches uncompressed (as before)
        t0 = time.perf_counter()
        exporter._guard(k + 4, clock.start_ns(k + 5))
        assert exporter.outbox.wait(600)
        uncompressed = time.perf_counter() - t0
        if profile:
            _profile(exporter, k + 6)  # before the producer's baseline (in this process, its threads would remain)
        producer = _producer_baseline(broker, n + 5)
        t0 = time.perf_counter()
        with exporter.lock:
            exporter._table.set_colour(1 - clock.colour(k))
        colour = time.perf_counter() - t0
        return {"dataplane": dataplane, "flows": n, "install_s": round(install, 3),
                "add_one_ms": round(statistics.median(adds) * 1000, 2), "guard_read_ms": round(read * 1000, 1),
                "guard_publish_ms": round(publish * 1000, 1), "first_guard_publish_ms": round(first * 1000, 1),
                "uncompressed_ms": round(uncompressed * 1000, 1),
                "producer_ms": round(producer * 1000, 1),
                "publish_ratio": round(publish / producer, 3), "colour_ms": round(colour * 1000, 2),
                "rss_mib": round(rss, 1), "rss_flows_mib": round(rss - rss0, 1)}


def _profile(exporter, k: int, guards: int = 3) -> None:
    """``guards`` guards (periods k, k+2, ...) with each stage's CPU and wall time and every thread's CPU time, then
    ``guards`` more under cProfile (the guard, the outbox's publish, the record batches' framing, each in its own
    thread); printed to stderr."""
    import cProfile
    import io
    import pstats

    from srv6pm import publish
    from srv6pm.exporter import service
    clock = exporter.clock
    publisher, table, baselines, encoder = (exporter.outbox._publisher, exporter._table, exporter._baselines,
                                            exporter._encoder)
    publisher.compression = service.COMPRESSION  # the uncompressed measure above turned it off
    stages: dict[str, list[float]] = {}

    def timed(name, fn):
        def call(*args, **kwargs):
            c0, t0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total = stages.setdefault(name, [0.0, 0.0])
                total[0] += time.thread_time() - c0
                total[1] += time.perf_counter() - t0
        return call

    profiles = {"guard": cProfile.Profile(), "outbox publish": cProfile.Profile(), "framing": cProfile.Profile()}

    def profiled(name, fn):
        def call(*args, **kwargs):
            prof = profiles[name]
            prof.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                prof.disable()
        return call

    wrapped = [(table, "read_all"), (baselines, "advance"), (encoder, "encode_keyed"), (exporter.outbox, "put"),
               (baselines, "save"), (publisher, "publish"), (publisher, "_rounds")]
    real = {(id(obj), name): getattr(obj, name) for obj, name in wrapped}
    real_encode = publish.encode_batch
    try:
        for obj, name in wrapped:
            setattr(obj, name, timed(name, real[id(obj), name]))
        publish.encode_batch = timed("encode_batch (framing, zstd)", real_encode)
        walls, cpus = [], []
        with GcTimer() as timer:
            for g in range(guards):
                before = thread_cpu()
                t0 = time.perf_counter()
                exporter._guard(k + 2 * g, clock.start_ns(k + 2 * g + 1))
                assert exporter.outbox.wait(600)
                walls.append(time.perf_counter() - t0)
                after = thread_cpu()
                cpus.append({name: after[name] - before.get(name, 0.0) for name in after
                             if after[name] - before.get(name, 0.0) > 0})
        collections = timer.each  # (thread, generation, seconds) of each collection
        print(f"guards: {', '.join(f'{w:.3f} s' for w in walls)}", file=sys.stderr)
        slow = [f"{name} gen {gen} {sec * 1000:.0f} ms" for name, gen, sec in collections if sec > 0.005]
        print(f"  garbage collections: {len(collections)}, {sum(c[2] for c in collections):.3f} s in all; over 5 ms: "
              f"{', '.join(slow) or 'none'}", file=sys.stderr)
        for cpu in cpus:
            print("  CPU per thread: " + ", ".join(f"{name} {s:.2f} s" for name, s in sorted(cpu.items())),
                  file=sys.stderr)
        print("  per guard, CPU / wall (publish: the outbox thread's call, waiting for the client's thread included):",
              file=sys.stderr)
        for name, (cpu_s, wall_s) in stages.items():
            print(f"    {name:32} {cpu_s / guards:.3f} s / {wall_s / guards:.3f} s", file=sys.stderr)
        for obj, name in wrapped:
            setattr(obj, name, real[id(obj), name])
        publisher.publish = profiled("outbox publish", real[id(publisher), "publish"])
        publish.encode_batch = profiled("framing", real_encode)
        for g in range(guards, 2 * guards):
            profiled("guard", exporter._guard)(k + 2 * g, clock.start_ns(k + 2 * g + 1))
            assert exporter.outbox.wait(600)
    finally:
        for obj, name in wrapped:
            if name in vars(obj):
                delattr(obj, name)
        publish.encode_batch = real_encode
    for name, prof in profiles.items():
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(14)
        lines = text.getvalue().splitlines()
        start = next((i for i, line in enumerate(lines) if "function calls" in line), 0)
        print(f"--- cProfile: {name} ({guards} guards)\n" + "\n".join(line for line in lines[start:] if line.strip()),
              file=sys.stderr)


def _producer_baseline(broker: str, n: int) -> float:
    """Seconds for kafka-python's producer to send ``n`` counter-sized records one by one and flush them."""
    from kafka import KafkaProducer

    from srv6pm import records
    encoder = records.CounterEncoder("bx-baseline", 10)
    values = [(f"f{i}".encode(), encoder.encode(f"f{i}", "ingress", 1, 1, 1000, 100000, 1, i + 1, 0))
              for i in range(n)]
    producer = KafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=20)
    try:
        producer.send(records.COUNTERS, key=b"warm-up", value=values[0][1]).get(timeout=30)
        t0 = time.perf_counter()
        for key, value in values:
            producer.send(records.COUNTERS, key=key, value=value)
        producer.flush()
        return time.perf_counter() - t0
    finally:
        producer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", default="100,1000,10000,100000")
    parser.add_argument("--dataplanes", default="nftables,ebpf")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="three more guards per row, profiled (CPU per thread, cProfile), printed to stderr")
    parser.add_argument("--one", nargs=3, metavar=("DATAPLANE", "N", "BROKER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.profile)), flush=True)
        return 0
    from srv6pm import records
    from srv6pm.kafka import ensure_topics
    from srv6pm.lab.emulators.broker import EmbeddedBroker
    from srv6pm.ports import free_port
    counts = [int(x) for x in args.flows.split(",")]
    with EmbeddedBroker(port=free_port()) as broker:
        ensure_topics(broker.bootstrap, {records.COUNTERS: 4})
        for dataplane in args.dataplanes.split(","):
            base = None
            for n in counts:
                out = subprocess.run([sys.executable, __file__, "--one", dataplane, str(n), broker.bootstrap,
                                      *(["--profile"] if args.profile else [])], capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return 1
                row = json.loads(out.stdout.strip().splitlines()[-1])
                if args.profile:
                    print(f"{dataplane} {n} flows: profile\n" + "\n".join(
                        line for line in out.stderr.splitlines() if not line.startswith("{")), flush=True)
                base = base or row
                row["add_ratio"] = round(row["add_one_ms"] / base["add_one_ms"], 2)
                row["rss_per_flow_b"] = round((row["rss_flows_mib"] - base["rss_flows_mib"]) * 2**20
                                              / max(1, n - base["flows"])) if n > base["flows"] else None
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    per_flow = ("" if row["rss_per_flow_b"] is None  # (the smallest size: nothing to compare with)
                                else f" ({row['rss_per_flow_b']} B/flow over {base['flows']} flows)")
                    print(f"{dataplane:8} {n:>7} flows  install {row['install_s']:8.2f} s  add one "
                          f"{row['add_one_ms']:7.2f} ms (x{row['add_ratio']})  guard read {row['guard_read_ms']:8.1f} ms"
                          f"  guard+publish {row['guard_publish_ms']:8.1f} ms (uncompressed {row['uncompressed_ms']:.1f} ms; "
                          f"x{row['publish_ratio']} of producer "
                          f"{row['producer_ms']:.1f} ms)  colour {row['colour_ms']:6.2f} ms  "
                          f"RSS {row['rss_mib']:7.1f} MiB{per_flow}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
