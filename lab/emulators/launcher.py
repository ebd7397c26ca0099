"""The one launcher of the lab's emulators and embedded services, and the supervised child process under it.

:class:`Launcher` is a service run as a child process: :meth:`~Launcher.start`
spawns it and returns once it is ready (or raises the service's start error
with the tail of its output), :meth:`~Launcher.stop` stops it (idempotent),
:meth:`~Launcher.output_tail` shows its logs, :meth:`~Launcher.freeze` and
:meth:`~Launcher.thaw` suspend and resume it, and a service that keeps files
gets a private temporary folder marked as this process's, so that a killed
lab's is swept (:func:`owned_tempdir`, :func:`srv6pm.lab.leftovers.sweep`).
Each service is a small subclass that says what to run (:meth:`~Launcher.command`)
and when it is ready (:meth:`~Launcher.ready`): the embedded broker and
InfluxDB (:mod:`.broker`, :mod:`.influxdb`) run a binary;
:class:`ModuleLauncher` runs a module of srv6pm with ``python -m`` that prints
one JSON line ``{"event": "ready", ...}`` when it is (the delay element,
:class:`srv6pm.lab.emulators.delay.DelayProcess`; the embedded InfluxDB in a
process of its own, :class:`srv6pm.lab.emulators.influxdb.InfluxDBProcess`).

:class:`ChildProcess` runs one program with its output logged and its tail
kept; it dies with its parent. The lab's orchestration runs its exporters,
collector, processor and traffic generators with it too.
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from srv6pm.errors import OperationError

__all__ = ["OWNER_ENV", "OWNER_FILE", "ChildProcess", "Launcher", "LaunchError", "ModuleLauncher", "owned_tempdir",
           "owner_alive", "owner_mark", "read_owner", "start_time"]

log = logging.getLogger("srv6pm.lab")

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PR_SET_PDEATHSIG = 1
OWNER_FILE = "owner.json"
OWNER_ENV = "SRV6PM_LAB_OWNER"  # in every child's environment: owner_mark() of the process that started it


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
    start children from a thread that lives as long as they should). A child
    that outlives its parent all the same (it ignores or hangs on that
    SIGTERM) is found by the marker :data:`OWNER_ENV` in its environment,
    which names the parent (:func:`owner_mark`), and stopped by
    :func:`srv6pm.lab.leftovers.sweep`.
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
        env = dict(os.environ if self._env is None else self._env)
        env[OWNER_ENV] = owner_mark()
        self._process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self._cwd,
            preexec_fn=_child_setup,
        )
        self._finalizer = weakref.finalize(self, _kill_quietly, self._process)
        self._reader = threading.Thread(
            target=self._pump_output, name=f"{self.name}-output", daemon=True
        )
        self._reader.start()
        self._log.debug("started", extra={"pid": self._process.pid, "argv": self.args})

    def kill(self) -> None:
        """Kill the child with SIGKILL (a crash, for tests) and wait for it; :meth:`stop` still cleans up."""
        if self.running:
            self._signal(signal.SIGKILL)
            assert self._process is not None  # running
            self._process.wait()

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


# -- the launcher -----------------------------------------------------------------

class LaunchError(OperationError, RuntimeError):
    """A service could not be started (missing binary, port in use, crash, timeout); each service has its own."""


_Self = TypeVar("_Self", bound="Launcher")


class Launcher:
    """A service run as a supervised child process: start, wait until ready, stop, logs, leftovers.

    A subclass sets :attr:`name` (the child's name: its logger is
    ``srv6pm.lab.<name>``), :attr:`what` (the service in messages),
    :attr:`StartError` (raised by :meth:`start`) and implements
    :meth:`command`; it may override the other hooks, in the order
    :meth:`start` calls them: :meth:`prepare`, then per attempt
    :meth:`command`, :meth:`environment` and :meth:`ready` (polled every
    :attr:`poll_interval` seconds until true), and :meth:`started`; and
    :meth:`stopping` at the start of :meth:`stop`.

    :meth:`start` returns ``self`` once the service is ready; otherwise it
    stops what it started and raises :attr:`StartError`: the executable
    cannot be run, or the child exited or was not ready within
    ``start_timeout`` seconds (the message ends with the child's output
    tail). A child that failed because of something :meth:`retry` recognises
    in its output (a port taken meanwhile) is started again, up to
    :attr:`attempts` times. With :attr:`workdir_prefix` set, :meth:`start`
    first makes a private temporary folder (:attr:`workdir`, the child's
    working directory) marked as this process's: :meth:`stop` removes it, a
    finaliser removes it if :meth:`stop` is never called, and
    :func:`srv6pm.lab.leftovers.sweep` removes it if this process is killed.
    :meth:`stop` (SIGTERM, SIGKILL after ``stop_timeout`` seconds) is
    idempotent. Usable as a context manager.
    """

    name: str = "service"  # an instance may name itself (several of one service)
    what: ClassVar[str] = "service"
    StartError: ClassVar[type[LaunchError]] = LaunchError
    workdir_prefix: ClassVar[str | None] = None
    attempts: ClassVar[int] = 1
    poll_interval: ClassVar[float] = 0.05

    def __init__(self, *, start_timeout: float = 30.0, stop_timeout: float = 5.0) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.workdir: Path | None = None
        self._workdir_cleanup: weakref.finalize | None = None
        self._process: ChildProcess | None = None
        self._last: ChildProcess | None = None  # the last child, kept for its output after stop()

    # -- what a service says ------------------------------------------------------
    def prepare(self) -> None:
        """Before the first child starts (check addresses, find the binary); raise :attr:`StartError` to refuse."""

    def command(self) -> list[str]:
        """The child's argument list (no shell); called once per attempt."""
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's environment (None: this process's); called once per attempt."""
        return None

    def ready(self, child: ChildProcess, remaining: float) -> bool:
        """Whether the running child is ready; may block up to ``remaining`` seconds. Default: at once."""
        return True

    def readiness(self) -> str:
        """What :meth:`ready` waits for, in the timeout message ("answer on 127.0.0.1:9092")."""
        return "become ready"

    def retry(self, output: str) -> bool:
        """Whether a child that failed to become ready with this output should be started again."""
        return False

    def started(self) -> None:
        """After the child is ready (create a database, start a front); a failure stops the child again."""

    def stopping(self) -> None:
        """At the start of :meth:`stop`, before the child is stopped (stop a front)."""

    def details(self) -> dict[str, Any]:
        """Fields of the ``ready`` and ``stopped`` log records (an address, ...)."""
        return {}

    # -- the life cycle -----------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the child has been started and has not exited."""
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        """The child's process id, or None when not started."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The last child's exit status once it has exited, else None."""
        return self._last.returncode if self._last is not None else None

    def start(self: _Self) -> _Self:
        """Start the service and wait until it is ready; returns ``self`` (see the class docstring)."""
        if self._process is not None:
            raise RuntimeError(f"{self.what} already started")
        began = time.monotonic()
        try:
            self.prepare()
            if self.workdir_prefix is not None:
                self.workdir = owned_tempdir(self.workdir_prefix)
                self._workdir_cleanup = weakref.finalize(self, shutil.rmtree, self.workdir, True)
            self._launch(began + self.start_timeout)
            self.started()
        except BaseException:
            self.stop()
            raise
        log.info(f"{self.what} ready", extra={**self.details(), "pid": self.pid,
                                              "startup_s": round(time.monotonic() - began, 3)})
        return self

    def _launch(self, deadline: float) -> None:
        for attempt in range(1, self.attempts + 1):
            args = self.command()
            child = ChildProcess(self.name, args, env=self.environment(),
                                 cwd=str(self.workdir) if self.workdir is not None else None)
            try:
                child.start()
            except OSError as exc:
                raise self.StartError(f"cannot run {self.what} {args[0]!r}: {exc}") from exc
            self._process = self._last = child
            try:
                self._wait_ready(child, deadline)
                return
            except LaunchError:
                output = child.output_tail()
                child.stop(self.stop_timeout)
                self._process = None
                if attempt == self.attempts or not self.retry(output):
                    raise
                log.debug(f"{self.what} failed to start, starting it again", extra={"attempt": attempt})

    def _wait_ready(self, child: ChildProcess, deadline: float) -> None:
        while True:
            if not child.running:
                raise self.StartError(f"{self.what} exited (status {child.returncode}) before it was ready; "
                                      f"its output ends with:\n{child.output_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.StartError(f"{self.what} did not {self.readiness()} within {self.start_timeout:g} s; "
                                      f"its output ends with:\n{child.output_tail()}")
            if self.ready(child, remaining):
                return
            time.sleep(self.poll_interval)

    def stop(self) -> int | None:
        """Stop the service and remove its folder; idempotent. Returns the child's exit status (None: none ran)."""
        self.stopping()
        process, self._process = self._process, None
        status = process.stop(self.stop_timeout) if process is not None else None
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        if self._workdir_cleanup is not None:
            self._workdir_cleanup.detach()
            self._workdir_cleanup = None
        if process is not None:
            log.info(f"{self.what} stopped", extra={**self.details(), "returncode": status})
        return status

    def kill(self) -> None:
        """Kill the service with SIGKILL (a crash, for tests) and wait for it; it leaves what a killed one leaves
        until :meth:`stop`."""
        self._require_process().kill()

    def freeze(self) -> None:
        """Suspend the service (SIGSTOP): it keeps its state but answers nothing until :meth:`thaw`."""
        self._require_process().freeze()

    def thaw(self) -> None:
        """Resume the service after :meth:`freeze` (SIGCONT)."""
        self._require_process().thaw()

    def _require_process(self) -> ChildProcess:
        if self._process is None:
            raise RuntimeError(f"{self.what} not started")
        return self._process

    def output_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the (last) child's output, empty before :meth:`start`."""
        return self._last.output_tail(lines) if self._last is not None else ""

    def __enter__(self: _Self) -> _Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ModuleLauncher(Launcher):
    """A module of srv6pm run with ``python -m`` that prints ``{"event": "ready", ...}`` once it is ready.

    Subclasses set :attr:`module` and implement :meth:`arguments`. The ready
    line is kept in :attr:`ready_event`; :meth:`events` answers every JSON
    line with an ``"event"`` the child printed (that its output tail still
    holds: the last 200 lines).
    """

    module: ClassVar[str] = ""

    def __init__(self, *, start_timeout: float = 15.0, stop_timeout: float = 15.0) -> None:
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.ready_event: dict[str, Any] | None = None

    def arguments(self) -> list[str]:
        """The module's command-line arguments."""
        return []

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.arguments()]

    def readiness(self) -> str:
        return "print its ready line"

    def ready(self, child: ChildProcess, remaining: float) -> bool:
        for event in _events(child.output_tail(200)):
            if event.get("event") == "ready":
                self.ready_event = event
                return True
        return False

    def events(self) -> list[dict[str, Any]]:
        """The JSON objects with an ``"event"`` key among the child's output lines, in order."""
        return list(_events(self.output_tail(200)))


def _events(output: str) -> Iterable[dict[str, Any]]:
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "event" in doc:
                yield doc


# -- leftovers: temporary folders marked with their owner --------------------------

def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if there is no such process (or
    only its zombie: it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()  # the name may be any bytes, cut mid-character
        fields = stat.rsplit(b")", 1)[1].split()  # from field 3 on; the name before ")" may hold spaces
        return None if fields[0] in (b"Z", b"X") else int(fields[19])  # field 3, the state; field 22
    except (OSError, IndexError, ValueError):
        return None


def owner_mark() -> str:
    """``PID:START`` of this process (:func:`start_time`): the value of :data:`OWNER_ENV` in its children."""
    pid = os.getpid()
    return f"{pid}:{start_time(pid)}"


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
