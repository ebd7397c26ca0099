"""The one launcher of the lab's emulators and embedded services (srv6pm.lab.emulators.launcher), with real child
processes: ready only when the service says so, start errors that carry the child's output, a retry when the output
says so, a private folder marked as this process's and removed on stop; and a module run with ``python -m`` (the
embedded InfluxDB in a process of its own, a real influxd)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from srv6pm.lab.emulators.launcher import OWNER_FILE, ChildProcess, Launcher, LaunchError


class Script(Launcher):
    """Runs ``python -c`` scripts, one per attempt; ready once the child has written ``ready`` in its folder."""

    name = "script"
    what = "test script"
    workdir_prefix = "srv6pm-launcher-test-"

    def __init__(self, *scripts: str, attempts: int = 1, start_timeout: float = 10.0) -> None:
        super().__init__(start_timeout=start_timeout, stop_timeout=2.0)
        self.scripts = list(scripts)
        self.attempts = attempts  # type: ignore[misc]  # a test's own number of attempts
        self.calls: list[str] = []

    def command(self) -> list[str]:
        self.calls.append("command")
        return [sys.executable, "-c", self.scripts[min(len(self.calls), len(self.scripts)) - 1]]

    def ready(self, child: ChildProcess, remaining: float) -> bool:
        assert self.workdir is not None
        return (self.workdir / "ready").exists()

    def retry(self, output: str) -> bool:
        return "address already in use" in output

    def started(self) -> None:
        self.calls.append("started")

    def stopping(self) -> None:
        self.calls.append("stopping")


READY = "import pathlib, time; pathlib.Path('ready').write_text(''); time.sleep(60)"


def test_start_returns_once_ready_and_stop_removes_the_marked_folder():
    script = Script("import time, pathlib; time.sleep(0.3); print('up', flush=True); " + READY.split("; ", 1)[1])
    began = time.monotonic()
    with script:
        assert time.monotonic() - began >= 0.3 and script.running
        folder = script.workdir
        assert folder is not None and (folder / "ready").exists()  # the child ran in its folder
        owner = json.loads((folder / OWNER_FILE).read_text())
        assert owner["pid"] == os.getpid()  # swept by srv6pm.lab.leftovers if this process is killed
        assert script.calls == ["command", "started"]
    assert not script.running and not folder.exists() and script.workdir is None
    assert script.calls[-1] == "stopping" and script.returncode is not None
    assert "up" in script.output_tail()
    assert script.stop() is None  # idempotent


def test_a_child_that_exits_before_it_is_ready_is_a_start_error_with_its_output():
    script = Script("import sys; print('no such thing', flush=True); sys.exit(3)")
    with pytest.raises(LaunchError, match=r"test script exited \(status 3\) before it was ready.*\n.*no such thing"):
        script.start()
    assert not script.running and script.workdir is None


def test_a_child_never_ready_is_a_start_error_after_the_timeout():
    script = Script("import time; print('waiting', flush=True); time.sleep(60)", start_timeout=0.5)
    with pytest.raises(LaunchError, match=r"did not become ready within 0.5 s.*\n.*waiting"):
        script.start()
    assert script.returncode is not None  # stopped, not left running


def test_a_failure_the_service_recognises_is_started_again():
    lost = "import sys; print('bind: address already in use', flush=True); sys.exit(1)"
    script = Script(lost, READY, attempts=3)
    with script:
        assert script.calls == ["command", "command", "started"]
    with pytest.raises(LaunchError, match="address already in use"):
        Script(lost, lost, attempts=2).start()  # out of attempts
    other = Script("import sys; sys.exit(2)", READY, attempts=3)
    with pytest.raises(LaunchError, match="status 2"):
        other.start()  # not recognised: no second attempt
    assert other.calls == ["command", "stopping"]


def test_an_executable_that_cannot_run_is_a_start_error():
    class Missing(Script):
        def command(self) -> list[str]:
            return [str(Path("/nonexistent/binary"))]
    with pytest.raises(LaunchError, match="cannot run test script '/nonexistent/binary'"):
        Missing().start()


def test_freeze_kill_and_the_child_s_status():
    with Script(READY) as script:
        script.freeze()
        script.thaw()
        script.kill()
        assert not script.running and script.returncode == -9
    with pytest.raises(RuntimeError, match="not started"):
        script.freeze()


@pytest.mark.services
def test_the_embedded_influxdb_in_a_process_of_its_own():
    from srv6pm.config import InfluxSettings
    from srv6pm.influx import influxql
    from srv6pm.lab.emulators.influxdb import InfluxDBProcess

    with InfluxDBProcess(port=0, database="launched") as influxdb:
        assert influxdb.pid != os.getpid()
        answer = influxql(InfluxSettings(url=influxdb.url), "SHOW DATABASES", database="launched")
        assert ["launched"] in answer[0]["series"][0]["values"]
    assert influxdb.returncode == 0  # stopped by SIGTERM, cleanly
