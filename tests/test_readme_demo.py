"""The README's "To see loss" demo, followed literally: its own commands (read from README.md, so the test
fails when the README drifts) against a real ``srv6pm lab run scenarios/example.yaml --json``; f1's lost
packets over the run equal the drop rule's named counter, and nothing else lost a packet. Every JSON line the
lab printed passes the published lab-output schema. Needs root; run under the netns lock (the example's
namespace names, the embedded services' fixed ports)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lab_schema import lab_output_validator

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PERIOD_S = yaml.safe_load((ROOT / "scenarios/example.yaml").read_text())["period"]
pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")]


def demo_commands() -> tuple[list[list[str]], list[list[str]]]:
    """The demo block's commands as argument lists: those before the "# ... watch" line, and those after."""
    section = README[README.index("To see loss"):]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    before, after, phase = [], [], None
    for line in block.splitlines():
        if line.startswith("# ..."):
            phase = after
            continue
        argv = shlex.split(line, comments=True)
        if argv:
            (before if phase is None else after).append(argv)
    return before, after


def test_the_demo_block_is_found_and_is_commands_only():
    before, after = demo_commands()
    assert before and after
    assert all(argv[:3] == ["ip", "netns", "exec"] for argv in before + after)


def test_the_readme_names_no_file_outside_the_repository():
    assert "../" not in README and "DESIGN.md" not in README


class Lines:
    """The lab's stdout, read on a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for line in proc.stdout:
            self.raw.append(line)
            self.lines.append(json.loads(line))

    def join(self):
        self._thread.join(timeout=60)


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


@pytest.mark.srv6
def test_the_demo_s_lost_packets_equal_the_drop_counter():
    before, after = demo_commands()
    proc = subprocess.Popen([sys.executable, "-m", "srv6pm", "lab", "run", "scenarios/example.yaml", "--json",
                             "--duration", "60"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Lines(proc)
    try:
        deadline = time.monotonic() + 120
        while not any(r.get("flow") == "f1" and r.get("complete") for r in out.lines):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.5)
        demo_period = int(time.time() // PERIOD_S)  # the period in which the demo's commands begin
        for argv in before:
            _run(argv)
        time.sleep(12)  # six periods of drops
        for argv in after[:-1]:
            _run(argv)
        listing = _run(after[-1])
        assert proc.wait(timeout=180) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
    out.join()
    dropped = int(re.search(r"packets (\d+)", listing).group(1))
    assert dropped > 0
    validator = lab_output_validator()
    for line in out.lines:
        validator.validate(line)
    losses = [r for r in out.lines if "record" not in r and "flow" in r and "kind" not in r]
    f1 = [r for r in losses if r["flow"] == "f1"]
    # f1 lost exactly what the rule dropped (an incomplete period holding drops would make it less), all on
    # the segment r2→r3; nothing else lost anything.
    assert sum(r["lost_packets"] for r in f1 if r["complete"]) == dropped
    lost_on = {}
    for r in f1:
        for s in r.get("segments") or ():
            if s["complete"] and s["lost_packets"]:
                lost_on[f"{s['from']}→{s['to']}"] = lost_on.get(f"{s['from']}→{s['to']}", 0) + s["lost_packets"]
    assert lost_on == {"r2→r3": dropped}
    assert all(r["lost_packets"] == 0 for r in losses if r["flow"] != "f1" and r["complete"])
    # The STAMP session crossing r2 lost nothing from the period before the demo on (its start-up, before the
    # demo, is not the demo's business).
    delays = [r for r in out.lines if "samples" in r and "record" not in r and r["period"] >= demo_period - 1]
    assert len(delays) > 3 * 10
    assert [(r["period"], r["direction"], r["lost"]) for r in delays if r["lost"]] == [], \
        [(r["period"], r["direction"], r["samples"], r["lost"]) for r in delays]
    # What the generators really sent: a record per flow at the end, every flow at its rate.
    final = {r["flow"]: r for r in out.lines if r.get("record") == "traffic"}
    assert sorted(final) == ["f1", "f2"] and all(r["reached"] and r["sent"] > 0 for r in final.values())
    (summary,) = [r for r in out.lines if r.get("record") == "summary"]
    assert summary["traffic_below_rate"] == [] and out.lines[-1] is summary
