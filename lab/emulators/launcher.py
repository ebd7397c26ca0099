"""Supervised child processes for the lab: bounded output, ordered stop, no orphans, marked leftovers.

:class:`ChildProcess` runs one program with its output logged and its tail
kept; it dies with its parent. :func:`owned_tempdir` makes a temporary folder
marked with the owning process (pid and start time) and what it is about to
build, so that what a killed owner leaves can be found and removed later
(:func:`srv6pm.lab.leftovers.sweep`).
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["OWNER_FILE", "ChildProcess", "owned_tempdir", "owner_alive", "read_owner", "start_time"]

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PR_SET_PDEATHSIG = 1
OWNER_FILE = "owner.json"


def _child_setup() -> None:
    """Runs in the child between fork and exec: own session, die with the parent."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class ChildProcess:
    """A supervised child process with bounded, logged output.

    ``args`` is the argument list (no shell). The child's stdout and stderr are
    merged, each line is logged at DEBUG on the ``srv6pm.lab.<name>`` logger and
    the last ``tail_lines`` lines are kept for error messages
    (:meth:`output_tail`). The child runs in its own session, so a Ctrl-C in
    the terminal reaches only the parent, which then stops its children in
    order. :meth:`stop` is idempotent; a finaliser kills a forgotten child when
    the object is garbage-collected or at interpreter exit, and the kernel
    sends the child SIGTERM if its parent dies, even by SIGKILL
    (PR_SET_PDEATHSIG; it follows the *thread* that started the child, so
    start children from a thread that lives as long as they should).
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        tail_lines: int = 200,
    ) -> None:
        self.name = name
        self.args = [os.fspath(a) for a in args]
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None
        self._log = logging.getLogger(f"srv6pm.lab.{name}")

    @property
    def pid(self) -> int | None:
        """Process id, or None before :meth:`start`."""
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        """True while the child has been started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has exited (negative: killed by that signal), else None."""
        return self._process.poll() if self._process else None

    def start(self) -> None:
        """Spawn the child. Raises :class:`OSError` if the executable cannot be run."""
        if self._process is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
            preexec_fn=_child_setup,
        )
        self._finalizer = weakref.finalize(self, _kill_quietly, self._process)
        self._reader = threading.Thread(
            target=self._pump_output, name=f"{self.name}-output", daemon=True
        )
        self._reader.start()
        self._log.debug("started", extra={"pid": self._process.pid, "argv": self.args})

    def freeze(self) -> None:
        """Suspend the child (SIGSTOP), as a hung or paused service looks to its clients; :meth:`thaw` resumes it."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a child suspended by :meth:`freeze` (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if not self.running:
            raise RuntimeError(f"{self.name}: not running")
        assert self._process is not None  # running
        self._process.send_signal(signum)

    def output_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the child's output, ANSI colours removed.

        Once the child has exited, waits (up to 1 s) for its remaining output first.
        """
        reader = self._reader
        if reader is not None and self._process is not None and self._process.poll() is not None:
            reader.join(timeout=1.0)
        tail = list(self._tail)[-lines:]
        return "\n".join(tail)

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop the child: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent.

        Returns the exit status, or None if the child was never started.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._log.warning("did not stop within %.1f s, killing", grace, extra={"pid": process.pid})
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5.0)
            self._reader = None
        if process.stdout is not None:
            process.stdout.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._log.debug("stopped", extra={"pid": process.pid, "returncode": process.returncode})
        return process.returncode

    def _pump_output(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        try:
            for raw in iter(process.stdout.readline, b""):
                line = _ANSI_ESCAPE.sub("", raw.decode("utf-8", "replace")).rstrip()
                if line:
                    self._tail.append(line)
                    self._log.debug("%s", line)
        except (OSError, ValueError):  # pipe closed by stop()
            pass


def _kill_quietly(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


# -- leftovers: temporary folders marked with their owner --------------------------

def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces


def owned_tempdir(prefix: str, namespaces: Iterable[str] = (), nodes: Iterable[str] = (),
                  root: Path | None = None) -> Path:
    """A new folder ``<root>/<prefix>XXXX`` (root: the temporary directory) marked as this process's.

    The marker names the namespaces and nodes (eBPF pins) the caller is about
    to create, so that :func:`srv6pm.lab.leftovers.sweep` can remove them if this process dies
    without removing the folder.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    owner = {"pid": os.getpid(), "start": start_time(os.getpid()),
             "namespaces": list(namespaces), "nodes": list(nodes)}
    tmp = folder / (OWNER_FILE + ".tmp")
    tmp.write_text(json.dumps(owner))
    os.replace(tmp, folder / OWNER_FILE)
    return folder


def read_owner(folder: Path) -> dict | None:
    """The folder's marker; None if it has none (or an unreadable one)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def owner_alive(owner: dict) -> bool:
    start = start_time(owner["pid"])
    return start is not None and (owner.get("start") is None or start == owner["start"])
