"""Benchmark: the whole lab at many flows -- start time, memory, rates reached (root; fixed lab ports).

Runs ``srv6pm lab run SCENARIO --json --duration S`` for a square of four
routers (``m1``..``m4``, no delay links) with N flows of ``--rate`` packets/s
each, spread evenly over the four source hosts (one traffic generator each),
first at the baseline flow count, then at each count of ``--flows``, and
measures per run:

* ``start_s``: from the command's start to its "running" line (namespaces,
  broker, InfluxDB, exporters, processor, collector converged, traffic on);
* ``rss_mib``: the resident memory of the lab's whole process tree
  (Pss from ``/proc/PID/smaps_rollup``, so shared pages are counted once),
  sampled mid-run, and ``traffic_mib`` that of the traffic generators alone;
* ``per_flow_kib``: (rss at N - rss at the baseline) / (N - baseline flows),
  the lab's memory per added flow, and the same for the generators;
* ``below_rate``: flows whose traffic stayed below the configured rate (the
  summary record), and ``periods``/``lost``: complete loss periods and their
  lost packets over all flows.

Prints a table (``--json``: one object per line); asserts nothing. Noisy on a
shared machine: give the figures with the run's conditions. Run under the
netns lock (the lab's fixed names and ports) and the bench lock:

    flock /tmp/srv6pm-netns.lock flock /tmp/srv6pm-bench.lock nice -n 5 \\
        python bench/lab_scale.py [--flows 1000] [--baseline 10] [--rate 10] [--seconds 30] [--json]

``--write-scenario N FILE`` only writes the N-flow scenario (how
``scenarios/flows-1000.yaml`` was made).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from srv6pm import srv6

NODES = ["m1", "m2", "m3", "m4"]
ROOT = Path(__file__).resolve().parent.parent


def scenario(flows: int, rate: float, period: float = 2.0) -> str:
    """A square m1-m2-m3-m4-m1; flow i starts at node i mod 4 and goes two hops round the square."""
    lines = [f"# {flows} flows of {rate:g} packets/s on a square of four routers (bench/lab_scale.py wrote this).",
             f"period: {period:g}", f"nodes: [{', '.join(NODES)}]",
             "links: [[m1, m2], [m2, m3], [m3, m4], [m4, m1]]", "flows:"]
    for i in range(flows):
        a = i % 4
        lines.append(f"  - {{name: f{i + 1:04d}, from: {NODES[a]}, to: {NODES[(a + 2) % 4]}, "
                     f"via: [{NODES[(a + 1) % 4]}], rate: {rate:g}}}")
    return "\n".join(lines) + "\n"


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return out


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _is_traffic(pid: int) -> bool:
    try:
        return b"srv6pm.lab.traffic" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def run(flows: int, rate: float, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="srv6pm-bench-lab-") as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(scenario(flows, rate))
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "srv6pm", "lab", "run", str(path), "--json",
                                 "--duration", str(seconds)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lines: list[dict] = []
        reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in proc.stdout), daemon=True)
        reader.start()
        start_s = None
        while start_s is None:
            if proc.poll() is not None:
                raise SystemExit(f"lab failed: {proc.stderr.read()[-2000:]}")
            if select.select([proc.stderr], [], [], 1)[0] and proc.stderr.readline().startswith("srv6pm lab: running"):
                start_s = time.monotonic() - started
        time.sleep(seconds / 2)
        pids = _tree(proc.pid)
        rss = sum(_pss_kib(p) for p in pids)
        traffic = sum(_pss_kib(p) for p in pids if _is_traffic(p))
        generators = sum(1 for p in pids if _is_traffic(p))
        proc.stderr.read()
        proc.wait()
        reader.join(timeout=30)
    (summary,) = [r for r in lines if r.get("record") == "summary"] or [{}]
    totals = (summary.get("flows") or {}).values()
    return {"flows": flows, "rate": rate, "start_s": round(start_s, 1), "rss_mib": round(rss / 1024, 1),
            "traffic_mib": round(traffic / 1024, 1), "generators": generators,
            "below_rate": len(summary.get("traffic_below_rate") or ()),
            "periods": sum(t["periods"] for t in totals), "lost": sum(t["lost_packets"] for t in totals),
            "status": proc.returncode}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flows", default="1000", help="flow counts, comma-separated (default 1000)")
    p.add_argument("--baseline", type=int, default=10, help="the baseline flow count (default 10)")
    p.add_argument("--rate", type=float, default=10.0, help="packets/s per flow (default 10)")
    p.add_argument("--seconds", type=float, default=30.0, help="--duration of each run (default 30)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--write-scenario", nargs=2, metavar=("N", "FILE"), help="only write the N-flow scenario")
    args = p.parse_args()
    if args.write_scenario:
        Path(args.write_scenario[1]).write_text(scenario(int(args.write_scenario[0]), args.rate))
        return 0
    no_srv6 = srv6.missing()
    if no_srv6 is not None:  # every run is a lab, and a lab's flows are SRv6 routes
        print(f"bench/lab_scale.py: {no_srv6}", file=sys.stderr)
        return 1
    base = run(args.baseline, args.rate, args.seconds)
    rows = [base]
    for n in (int(x) for x in args.flows.split(",")):
        row = run(n, args.rate, args.seconds)
        added = n - args.baseline
        row["per_flow_kib"] = round((row["rss_mib"] - base["rss_mib"]) * 1024 / added, 1) if added else None
        row["traffic_per_flow_kib"] = (round((row["traffic_mib"] - base["traffic_mib"]) * 1024 / added, 1)
                                       if added else None)
        row["start_ratio"] = round(row["start_s"] / base["start_s"], 2)
        rows.append(row)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print("  ".join(f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
