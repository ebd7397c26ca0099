"""How srv6pm commands stop: 130 after SIGINT, 143 after SIGTERM, 141 and no traceback on a closed pipe.

Every test runs the real command as a process; the pipes are real pipes.
"""

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRV6PM = [sys.executable, "-m", "srv6pm"]
ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_CONFIG = 'nodes:\n  - {name: r1, grpc: "127.0.0.1:1", sids: [{sid: "fcff:1::1", behavior: End}]}\n'


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_stderr_line(proc: subprocess.Popen, timeout: float = 20) -> str:
    """The process's first line on stderr: it has started and installed its signal handlers."""
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, "no line on stderr: the command did not start"
    return proc.stderr.readline()


def _long_running(kind: str, tmp_path: Path, broker: str, influx_url: str) -> list[str]:
    """A long-running command that needs no root or peer (closed ports stand in for the peers); the
    processor and the collector get the session's broker and InfluxDB, since they check at start that
    these answer."""
    if kind == "stamp reflector":
        return ["stamp", "reflector", "--backend", "socket", "--bind", "127.0.0.1", "--port", str(_free_udp_port())]
    if kind == "stamp sender":  # --count 0: until stopped; nothing answers, every packet is lost
        return ["stamp", "sender", "--dest", "127.0.0.1", "--port", str(_free_udp_port()), "--count", "0",
                "--interval", "0.2", "--timeout", "0.2", "-v"]
    if kind == "processor run":
        return ["processor", "run", "--kafka", broker, "--influx-url", influx_url,
                "--metrics-port", "0", "-v"]
    if kind == "collector run":
        config = tmp_path / "collector.yaml"
        config.write_text(COLLECTOR_CONFIG)
        return ["collector", "run", "--config", str(config), "--grpc-plaintext", "--kafka", broker,
                "--no-results", "--state-dir", str(tmp_path / "state"), "--metrics-port", "0", "-v"]
    raise AssertionError(kind)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("kind", ["stamp reflector", "stamp sender", "processor run", "collector run"])
def test_long_running_command_stops_cleanly_with_128_plus_the_signal(kind, sig, status, tmp_path, broker, influxdb):
    proc = subprocess.Popen([*SRV6PM, *_long_running(kind, tmp_path, broker, influxdb.url)], cwd=ROOT,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_stderr_line(proc)
        time.sleep(0.5)  # past the start, into the command's own loop
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == status, proc.stderr.read()
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stamp_sender_prints_its_summary_when_terminated():
    port = str(_free_udp_port())
    proc = subprocess.Popen([*SRV6PM, "stamp", "sender", "--dest", "127.0.0.1", "--port", port, "--count", "0",
                             "--interval", "0.1", "--timeout", "0.1", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline()  # the first (lost) sample: running
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert '"summary":true' in out.splitlines()[-1]
    finally:
        if proc.poll() is None:
            proc.kill()


def _to_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """Run srv6pm with stdout on a real pipe whose reading end is already closed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*SRV6PM, *args], cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [["lab", "check", "scenarios/example.yaml"],
                                  ["collector", "check", "--config", "{config}", "--state-dir", "{state}",
                                   "--grpc-plaintext"]])
def test_output_to_a_closed_pipe_exits_141_without_a_word(args, tmp_path):
    config = tmp_path / "collector.yaml"
    config.write_text(COLLECTOR_CONFIG)
    args = [a.format(config=config, state=tmp_path / "state") for a in args]
    out = _to_closed_pipe(*args)
    assert (out.returncode, out.stderr) == (141, "")


def test_python_m_srv6pm_stamp_to_a_closed_pipe_exits_141():
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run([sys.executable, "-m", "srv6pm.stamp", "sender", "--dest", "127.0.0.1", "--port",
                              str(_free_udp_port()), "--count", "2", "--interval", "0.1", "--timeout", "0.1"],
                             cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (out.returncode, out.stderr) == (141, "")


def _big_scenario(path: Path, nodes: int = 60) -> Path:
    """A valid scenario whose plan is far bigger than a pipe's buffer (about 500 kB of JSON)."""
    names = [f"n{i}" for i in range(nodes)]
    lines = ["period: 2", f"nodes: [{', '.join(names)}]", "links:"]
    lines += [f"  - [{a}, {b}]" for a, b in zip(names, names[1:])]
    lines += ["flows:"] + [f"  - {{name: f{i}, from: {a}, to: {b}, rate: 1}}"
                           for i, (a, b) in enumerate(zip(names, names[1:]))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_lab_check_piped_into_head_stops_quietly(tmp_path):
    """The shell's own pipeline: head exits after one line while srv6pm is still writing."""
    scenario = _big_scenario(tmp_path / "big.yaml")
    command = f"{sys.executable} -m srv6pm lab check {scenario} | head -1; echo \"status ${{PIPESTATUS[0]}}\" >&2"
    out = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout == "{\n"
    assert out.stderr == "status 141\n"


@pytest.mark.srv6
@pytest.mark.netns
@pytest.mark.services
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, SRv6, nftables)")
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_lab_run_tears_down_and_exits_128_plus_the_signal(sig, status, tmp_path, broker, influxdb):
    """A real lab (random node names; the session's broker and InfluxDB, so no fixed port is taken)."""
    import uuid

    from srv6pm.netns import exists
    prefix = "s" + uuid.uuid4().hex[:5]
    a, b = prefix + "a", prefix + "b"
    scenario = tmp_path / "lab.yaml"
    scenario.write_text(f"period: 1\nnodes: [{a}, {b}]\nlinks: [[{a}, {b}]]\n"
                        f"flows:\n  - {{name: f1, from: {a}, to: {b}, rate: 50}}\n")
    proc = subprocess.Popen([*SRV6PM, "lab", "run", str(scenario), "--kafka", broker, "--influx-url", influxdb.url],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = [_wait_for_stderr_line(proc, 120) for _ in range(2)]
        assert lines[1].startswith("srv6pm lab: running"), lines
        assert exists(a) and exists(b)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == status, proc.stderr.read()
        assert "tearing down" in proc.stderr.read()
        assert not exists(a) and not exists(b)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


STOP_WHILE_LOCKED = """
import os, signal, threading
from srv6pm.stopping import Stop

event = threading.Event()
with Stop() as stop:
    stop.attach(event.set)
    with event._cond:  # the main thread inside Event.wait or clear, holding the event's lock
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at one of the next bytecodes
        for _ in range(10_000):
            pass
    print("stopped" if event.wait(5) else "not stopped", stop.status())
"""

SIGHUP_WHILE_LOCKED = """
import os, signal, threading
from srv6pm.stopping import on_signal

event = threading.Event()
previous = on_signal(signal.SIGHUP, event.set)
with event._cond:
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(10_000):
        pass
print("reloaded" if event.wait(5) else "not reloaded")
"""


@pytest.mark.parametrize("code, said", [(STOP_WHILE_LOCKED, "stopped 143"), (SIGHUP_WHILE_LOCKED, "reloaded")])
def test_a_signal_that_comes_while_the_main_thread_holds_the_lock_its_action_takes_does_not_hang(code, said):
    """A signal handler runs between two bytecodes of the main thread, which may hold the lock of the very Event the
    action sets (the collector's main loop waits on the Event its stop and SIGHUP set): the action runs in a thread
    of its own, so the process stops (or reloads) instead of hanging for ever."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.stdout.strip() == said, done.stderr
