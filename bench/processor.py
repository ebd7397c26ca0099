"""Processor throughput against a bare kafka-python consumer on the same topic, in the same run.

Starts the embedded broker (Tansu) and InfluxDB on free loopback ports (each in
a process of its own), fills
``srv6pm.counters`` with FLOWS x PERIODS flow-periods (an ingress and an
egress block each), then drains it:

1. a bare kafka-python consumer group member (poll, nothing else);
2. one processor (``srv6pm.processor.service.Processor``): decoding and
   validating every record, pairing, InfluxDB, ``srv6pm.loss``, alarms,
   ledger, offsets committed after store and publish;
3. the bare consumer again (the machine's load drifts; the ratio is against
   the mean of the two bare runs).

Each rate is flow-periods per second from the first record received to the
last one drained (bare) or the last result stored, published and finished
(processor), by the wall clock and by this process's CPU time (all its
threads; the broker and InfluxDB run in processes of their own). On a machine
shared with other work the wall-clock figures move with its load; the CPU
ones much less: they are what the process would do with a core to itself. ``--profile`` adds a cProfile summary of the processor's loop
thread. Prints figures and ratios; asserts nothing.

``--input stamp`` measures the delay path the same way: ``srv6pm.stamp``
filled with SESSIONS x PERIODS x SAMPLES STAMP samples (``--flows`` sessions,
``--samples`` per session and period), the rate in samples per second; the
processor's clock stops when every period that a later sample closes (by event
time, lateness 0) has its three results out.

    .venv/bin/python bench/processor.py [--input counters|stamp] [--flows 10000] [--periods 10]
                                        [--samples 10] [--partitions 4] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import socket
import sys
import time
import uuid

from kafka import KafkaConsumer
from kafka.record import util as kafka_record_util

from srv6pm import records
from srv6pm.config import InfluxSettings, KafkaSettings
from srv6pm.influx import influxql
from srv6pm.kafka import ensure_topics
from srv6pm.lab.emulators.broker import EmbeddedBroker
from srv6pm.lab.emulators.influxdb import InfluxDBProcess
from srv6pm.processor.service import Processor, ProcessorOptions, tune_gc
from srv6pm.publish import Publisher, Send
from srv6pm.records import CounterRecord, StampSample
from threads import GcTimer, thread_cpu

BASE_PERIOD = 880_000_000
PERIOD_S = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fill(bootstrap: str, flows: int, periods: int) -> int:
    """Publish the counter blocks, period by period (as exporters do); returns how many."""
    publisher = Publisher({"bootstrap_servers": bootstrap}, "bench-fill")
    count = 0
    try:
        for k in range(BASE_PERIOD, BASE_PERIOD + periods):
            sends = []
            for f in range(flows):
                flow = f"flow-{f:05d}"
                for role, node, packets in (("ingress", "r1", 1000), ("egress", "r4", 1000 - f % 3)):
                    block = CounterRecord(node, flow, role, k, PERIOD_S, k % 2, packets, packets * 100,
                                          read_ns=(k + 1) * 2_000_000_000 + 1_000_000_000)
                    sends.append(Send(records.COUNTERS, None, flow.encode(), block.to_json()))
            failed = publisher.publish(sends)
            if failed:
                raise RuntimeError(f"could not fill the topic: {failed[0][1]}")
            count += len(sends)
    finally:
        publisher.close()
    return count


def fill_stamp(bootstrap: str, sessions: int, periods: int, samples: int) -> int:
    """Publish the STAMP samples, period by period, each session's in sequence; returns how many."""
    publisher = Publisher({"bootstrap_servers": bootstrap}, "bench-fill")
    period_ns = round(PERIOD_S * 1e9)
    count = 0
    try:
        for k in range(BASE_PERIOD, BASE_PERIOD + periods):
            sends = []
            for s in range(sessions):
                session = f"session-{s:05d}"
                for j in range(samples):
                    t1 = k * period_ns + j * (period_ns // samples) + 1
                    t2 = t1 + 50_000 + (s * 7 + j * 13) % 5_000
                    sample = StampSample(session, (k - BASE_PERIOD) * samples + j, PERIOD_S, t1, t2, t2 + 10_000,
                                         t2 + 70_000, False, sender="r1", reflector="r4")
                    sends.append(Send(records.STAMP, None, session.encode(), sample.to_json()))
            failed = publisher.publish(sends)
            if failed:
                raise RuntimeError(f"could not fill the topic: {failed[0][1]}")
            count += len(sends)
    finally:
        publisher.close()
    return count


def bare(bootstrap: str, total: int, topic: str = records.COUNTERS, per_unit: int = 2) -> tuple[float, float]:
    """Flow-periods (``per_unit`` records each) per second of a consumer that only polls, and per second of
    this process's CPU time (all its threads)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bare-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                             heartbeat_interval_ms=500)
    try:
        got, start, cpu = 0, None, None
        while got < total:
            batch = consumer.poll(timeout_ms=500)
            if batch and start is None:
                start, cpu = time.perf_counter(), time.process_time()
            got += sum(len(m) for m in batch.values())
        return total / per_unit / (time.perf_counter() - start), total / per_unit / (time.process_time() - cpu)
    finally:
        consumer.close()


def processor(bootstrap: str, influx: InfluxSettings, total: int, max_records: int,
              profile: bool, results: int | None = None, per_unit: int = 2) -> tuple[float, float, dict, str]:
    """Flow-periods (``per_unit`` records each) per second of one processor and per second of this process's CPU
    time (all its threads: the loop, the writer, kafka-python's), its stats, and the profile summary (or "");
    done when ``results`` results are out (default: one per flow-period)."""
    results = total // 2 if results is None else results
    options = ProcessorOptions(group=f"bench-{uuid.uuid4().hex[:8]}", client_id="bench-processor",
                               session_timeout_ms=6000, heartbeat_interval_ms=500, poll_ms=200,
                               max_records=max_records, pair_wait_s=30.0, delay_lateness_s=0.0)
    proc = Processor(KafkaSettings(bootstrap=bootstrap), influx, options)
    tune_gc()  # as `srv6pm processor run` does
    profiler = cProfile.Profile()
    try:
        while proc.stats["records"] == 0:  # joining the group; then the clock starts after a first batch
            proc.step()
        first = proc.stats["records"]
        start, cpu, threads = time.perf_counter(), time.process_time(), thread_cpu()
        if profile:
            profiler.enable()
        with GcTimer() as collecting:
            while proc.stats["results"] < results or proc.stats["records"] < total:
                proc.step()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        profiler.disable()
        threads = {name: t - threads.get(name, 0.0) for name, t in thread_cpu().items()}
    finally:
        proc.close()
    split = sorted(threads.items(), key=lambda item: -item[1])
    summary = "processor CPU by thread: " + ", ".join(f"{name} {t:.2f} s" for name, t in split if t >= 0.01) \
        + f" (all threads {cpu:.2f} s); {collecting}\n"
    if profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        summary += out.getvalue()
    # The first batch was processed before the clock started: count the flow-periods after it.
    return (total - first) / per_unit / elapsed, (total - first) / per_unit / cpu, dict(proc.stats), summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", choices=("counters", "stamp"), default="counters")
    parser.add_argument("--flows", type=int, default=10_000, help="flows (counters) or sessions (stamp)")
    parser.add_argument("--samples", type=int, default=10, help="STAMP samples per session and period")
    parser.add_argument("--periods", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-records", type=int, default=ProcessorOptions.max_records)
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary of the processor's loop")
    args = parser.parse_args(argv)

    native = kafka_record_util.crc32c_c is not None
    print(f"kafka-python CRC32C: {'native (crc32c package)' if native else 'pure Python'}")
    stamp = args.input == "stamp"
    topic, per_unit, unit = (records.STAMP, 1, "samples/s") if stamp else (records.COUNTERS, 2, "flow-periods/s")
    # The embedded InfluxDB in a process of its own: in this one the front's thread would take the processor's
    # interpreter lock, and the benchmark measures the processor, not the lab's front.
    with EmbeddedBroker(port=free_port()) as broker, InfluxDBProcess(port=0) as influxdb:
        influx_url = influxdb.url
        ensure_topics(broker.bootstrap, {topic: args.partitions, records.LOSS: args.partitions,
                                         records.DELAY: args.partitions, records.ALARMS: args.partitions,
                                         records.DEADLETTER: 1})
        influxql(InfluxSettings(url=influx_url), 'CREATE DATABASE "bench"', database="_internal")
        influx = InfluxSettings(url=influx_url, bucket="bench")
        if stamp:
            total = fill_stamp(broker.bootstrap, args.flows, args.periods, args.samples)
            print(f"{total} samples: {args.flows} sessions x {args.periods} periods x {args.samples}, "
                  f"{args.partitions} partitions")
            results = args.flows * (args.periods - 1) * 3  # the last period closes by wall time only
        else:
            total = fill(broker.bootstrap, args.flows, args.periods)
            print(f"{total} records: {args.flows} flows x {args.periods} periods, {args.partitions} partitions")
            results = None
        before = bare(broker.bootstrap, total, topic, per_unit)
        rate, cpu_rate, stats, summary = processor(broker.bootstrap, influx, total, args.max_records, args.profile,
                                                   results, per_unit)
        after = bare(broker.bootstrap, total, topic, per_unit)
    baseline, cpu_baseline = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    print()
    print(f"| | {unit} | vs bare consumer | {unit} of CPU time | vs bare consumer |")
    print("|---|---:|---:|---:|---:|")
    print(f"| bare kafka-python consumer (before, after) | {before[0]:,.0f}, {after[0]:,.0f} | 1.00 "
          f"| {before[1]:,.0f}, {after[1]:,.0f} | 1.00 |")
    print(f"| processor | {rate:,.0f} | {rate / baseline:.2f} | {cpu_rate:,.0f} | {cpu_rate / cpu_baseline:.2f} |")
    print()
    print(f"processor stats: {stats}")
    if summary:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
