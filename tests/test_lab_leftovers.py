"""What a killed lab leaves (temporary folders, namespaces, eBPF pins) is removed by the next lab and by
``lab clean``; what a running lab owns is not. Real namespaces and real ``srv6pm lab run`` processes killed
with SIGKILL; run under the netns lock (fixed names of the embedded services' ports, namespaces)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from srv6pm.lab import leftovers
from srv6pm.lab.emulators.launcher import start_time

ROOT = Path(__file__).resolve().parent.parent
SRV6PM = [sys.executable, "-m", "srv6pm"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _mark(root: Path, prefix: str, owner: dict) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    (folder / leftovers.OWNER_FILE).write_text(json.dumps(owner))
    (folder / "data").mkdir()
    (folder / "data" / "x").write_text("x")
    return folder


def test_a_dead_owner_s_folders_go_a_live_owner_s_and_unmarked_ones_stay(tmp_path):
    dead = _mark(tmp_path, "srv6pm-lab-", {"pid": _dead_pid(), "start": None, "namespaces": [], "nodes": []})
    dead_influx = _mark(tmp_path, "srv6pm-influxdb-", {"pid": _dead_pid(), "start": None})
    mine = leftovers.owned_tempdir("srv6pm-lab-", ["n1"], ["n1"], root=tmp_path)
    unmarked = Path(tempfile.mkdtemp(prefix="srv6pm-lab-", dir=tmp_path))
    other = Path(tempfile.mkdtemp(prefix="srv6pm-bench-", dir=tmp_path))
    assert sorted(leftovers.sweep(tmp_path)) == sorted([dead, dead_influx])
    assert not dead.exists() and not dead_influx.exists()
    assert mine.exists() and unmarked.exists() and other.exists()
    assert leftovers.live_namespaces(tmp_path) == {"n1": os.getpid()}


def test_a_reused_pid_is_not_the_owner(tmp_path):
    """The marker's start time must match too: our pid with another start time is a dead owner."""
    stale = _mark(tmp_path, "srv6pm-lab-", {"pid": os.getpid(), "start": 1, "namespaces": [], "nodes": []})
    assert leftovers.sweep(tmp_path) == [stale]


# An owner (a lab, as far as the sweep can tell) that starts, through ChildProcess, a child that starts a
# grandchild the same way (its marker names the child) and one by plain Popen (its marker, inherited, names
# the owner); all three ignore the SIGTERM they get when their parent dies. It prints the three pids.
_STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(600)"
_CHILD = f"""
import signal, subprocess, sys, time
from srv6pm.lab.emulators.launcher import ChildProcess
signal.signal(signal.SIGTERM, signal.SIG_IGN)
kid = ChildProcess("kid", [sys.executable, "-c", {_STUBBORN!r}])
kid.start()
plain = subprocess.Popen([sys.executable, "-c", {_STUBBORN!r}], stdout=subprocess.PIPE)
plain.stdout.readline()
while not kid.output_tail():
    time.sleep(0.01)
print(kid.pid, plain.pid, flush=True)
time.sleep(600)
"""
_OWNER = f"""
import sys, time
from srv6pm.lab.emulators.launcher import ChildProcess
child = ChildProcess("stubborn", [sys.executable, "-c", {_CHILD!r}])
child.start()
while not child.output_tail():
    time.sleep(0.01)
print(child.pid, child.output_tail(), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    return start_time(pid) is not None  # a zombie has ended


def test_processes_a_dead_lab_left_running_are_killed_a_live_lab_s_are_not(tmp_path):
    """A child that outlives its owner (ignores the PDEATHSIG SIGTERM) is killed by the sweep, and so are the
    children it started: the one whose marker names the owner at once, the one whose marker names the child
    once the child is gone (later in the same scan, or in the next round). While the owner runs, the sweep leaves all three alone.
    (The sweep looks at the whole machine: the assertions are on this test's processes only.)"""
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert owner.stdout is not None
        ready, _, _ = select.select([owner.stdout], [], [], 30)
        assert ready, "the owner did not start its child"
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 3 and all(map(_running, pids))
        assert not set(leftovers.stop_strays()) & set(pids) and all(map(_running, pids))  # their owner runs
        leftovers.sweep(tmp_path)
        assert all(map(_running, pids))

        owner.kill()
        owner.wait()
        time.sleep(0.5)
        assert all(map(_running, pids)), "all three ignore SIGTERM: they outlive their owner"
        killed = leftovers.stop_strays()
        assert set(pids) <= set(killed) and len(killed) == len(set(killed))  # each once
        assert not any(map(_running, pids))
        leftovers.sweep(tmp_path)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_process_without_a_well_formed_marker_is_never_killed(tmp_path):
    """Only ``SRV6PM_LAB_OWNER=PID:START`` names an owner: a process whose marker is anything else is left alone,
    even when its PID part names a dead process."""
    dead = _dead_pid()
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                              env={**os.environ, "SRV6PM_LAB_OWNER": value})
             for value in (f"{dead}", f"{dead}:", f"{dead}:x", f"x:{dead}", "")]
    marked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                              env={**os.environ, "SRV6PM_LAB_OWNER": f"{dead}:1"})
    try:
        time.sleep(0.3)  # each has exec'd python (its environment is the one given)
        killed = leftovers.stop_strays()
        assert marked.pid in killed and not {p.pid for p in procs} & set(killed)
        assert marked.wait(5) == -signal.SIGKILL
        assert all(p.poll() is None for p in procs)
    finally:
        for p in [*procs, marked]:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_a_process_name_that_is_not_utf_8_is_read_all_the_same():
    """/proc/PID/stat holds the name as bytes, cut at 15 of them (here in the middle of a character)."""
    proc = subprocess.Popen([sys.executable, "-c", "import ctypes, sys, time; "
                             "ctypes.CDLL(None).prctl(15, b'abcdefghijklmn\\xc3', 0, 0, 0); print(1, flush=True); "
                             "time.sleep(600)"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"1\n"
        assert Path(f"/proc/{proc.pid}/comm").read_bytes() == b"abcdefghijklmn\xc3\n"
        assert isinstance(start_time(proc.pid), int)
        assert proc.pid not in leftovers.stop_strays()
    finally:
        proc.kill()
        proc.wait()


@needs_root
def test_a_process_of_another_pid_namespace_is_never_killed():
    """A marker's pid and start time name a process of the marked one's own pid namespace (a lab in a
    container is its own): seen from outside, its owner's pid is another process or none, so such a process
    is left alone, however dead its owner looks from here."""
    dead = _dead_pid()
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "env", f"SRV6PM_LAB_OWNER={dead}:1", sys.executable,
                              "-c", "import time; print(1, flush=True); time.sleep(600)"], stdout=subprocess.PIPE)
    inner = None
    try:
        assert outer.stdout is not None and outer.stdout.readline() == b"1\n"
        inner = int(Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()[0])
        assert os.stat(f"/proc/{inner}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        assert inner not in leftovers.stop_strays()
        assert _running(inner)
    finally:
        outer.kill()
        outer.wait()
        if inner is not None and _running(inner):
            os.kill(inner, signal.SIGKILL)


@pytest.mark.netns
@needs_root
def test_a_dead_owner_s_namespaces_go_with_its_folder(tmp_path):
    from pyroute2 import netns as pr_netns

    from srv6pm.netns import exists
    dead_ns, live_ns = "s" + uuid.uuid4().hex[:6], "s" + uuid.uuid4().hex[:6]
    for ns in (dead_ns, live_ns):
        pr_netns.create(ns)
    try:
        # A live lab owning live_ns; a dead one that named both (as after a clean and a new lab of the same names).
        leftovers.owned_tempdir("srv6pm-lab-", [live_ns], [], root=tmp_path)
        dead = _mark(tmp_path, "srv6pm-lab-", {"pid": _dead_pid(), "start": None,
                                                "namespaces": [dead_ns, live_ns], "nodes": [dead_ns]})
        assert leftovers.sweep(tmp_path) == [dead]
        assert not exists(dead_ns) and exists(live_ns)
    finally:
        for ns in (dead_ns, live_ns):
            if exists(ns):
                pr_netns.remove(ns)


# -- real labs killed with SIGKILL -----------------------------------------------------------------------------


def _ports_free(*ports: int, timeout: float = 60) -> None:
    """Wait until nothing listens on the ports (the killed lab's broker and InfluxDB have ended)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    break
            assert time.monotonic() < deadline, f"port {port} still taken"
            time.sleep(0.2)


def _owned_by(pid: int) -> list[Path]:
    out = []
    for prefix in leftovers.PREFIXES:
        for folder in Path(tempfile.gettempdir()).glob(prefix + "*"):
            try:
                if json.loads((folder / leftovers.OWNER_FILE).read_text())["pid"] == pid:
                    out.append(folder)
            except (OSError, ValueError, KeyError):
                pass
    return sorted(out)


def _start_and_kill(scenario: Path) -> list[Path]:
    """Start ``srv6pm lab run`` (embedded broker and InfluxDB), SIGKILL it once it runs; what it left."""
    proc = subprocess.Popen([*SRV6PM, "lab", "run", str(scenario)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        lines = []
        while not any(line.startswith("srv6pm lab: running") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            if select.select([proc.stderr], [], [], 1)[0]:
                lines.append(proc.stderr.readline())
        left = _owned_by(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _ports_free(9092, 8086)
    return left


@pytest.mark.srv6
@pytest.mark.netns
@needs_root
def test_what_a_killed_lab_leaves_is_removed_by_the_next_lab_and_by_lab_clean(tmp_path):
    from srv6pm.exporter import ebpf
    from srv6pm.netns import exists
    prefix = "k" + uuid.uuid4().hex[:5]
    a, b = prefix + "a", prefix + "b"
    namespaces = [a, b, a + "-host", b + "-host"]
    scenario = tmp_path / "lab.yaml"
    scenario.write_text(f"period: 1\nnodes: [{a}, {b}]\nlinks: [[{a}, {b}]]\n"
                        f"flows:\n  - {{name: f1, from: {a}, to: {b}, rate: 50}}\n")
    try:
        left = _start_and_kill(scenario)
        assert [p.name.rsplit("-", 1)[0] for p in left] == ["srv6pm-influxdb", "srv6pm-lab"]
        assert all(folder.exists() for folder in left) and all(exists(ns) for ns in namespaces)
        assert ebpf.pin_dir(a).exists()

        # The next lab removes them (it would refuse to build on existing namespaces), then ends cleanly.
        run = subprocess.run([*SRV6PM, "lab", "run", str(scenario), "--duration", "3"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert not any(folder.exists() for folder in left)
        assert not any(exists(ns) for ns in namespaces) and not ebpf.pin_dir(a).exists()

        left = _start_and_kill(scenario)
        assert len(left) == 2 and all(exists(ns) for ns in namespaces)
        clean = subprocess.run([*SRV6PM, "lab", "clean", str(scenario)], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
        assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")
        assert not any(folder.exists() for folder in left)
        assert not any(exists(ns) for ns in namespaces) and not ebpf.pin_dir(a).exists()
    finally:
        subprocess.run([*SRV6PM, "lab", "clean", str(scenario)], cwd=ROOT, capture_output=True, timeout=120)


@pytest.mark.netns
@needs_root
def test_lab_clean_refuses_the_namespaces_of_a_running_lab(tmp_path):
    from pyroute2 import netns as pr_netns

    from srv6pm.netns import exists
    node, other = "c" + uuid.uuid4().hex[:5], "d" + uuid.uuid4().hex[:5]
    scenario = tmp_path / "lab.yaml"
    scenario.write_text(f"period: 1\nnodes: [{node}, {other}]\nlinks: [[{node}, {other}]]\n"
                        f"flows:\n  - {{name: f1, from: {node}, to: {other}, rate: 5}}\n")
    folder = leftovers.owned_tempdir("srv6pm-lab-", [node], [node])  # this test process is the running lab
    pr_netns.create(node)
    try:
        clean = subprocess.run([*SRV6PM, "lab", "clean", str(scenario)], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
        assert clean.returncode == 1
        assert clean.stderr == (f"srv6pm: error: namespace(s) of a running lab, not removed: {node} "
                                f"(pid {os.getpid()}); stop that lab instead\n")
        assert exists(node) and folder.exists()
    finally:
        pr_netns.remove(node)
        shutil.rmtree(folder)
