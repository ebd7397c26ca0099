"""What a lab leaves when it is killed (SIGKILL, a crash, a lost machine), and its removal.

A lab's temporary folders are made by :func:`owned_tempdir` (the launcher's, :mod:`srv6pm.lab.emulators.launcher`): a folder under
the temporary directory (``srv6pm-lab-*``, the embedded InfluxDB's
``srv6pm-influxdb-*``) holding ``owner.json`` -- the owning process's pid and
start time (``/proc/PID/stat``, so a reused pid is not taken for the owner)
and the network namespaces and node names it builds. A normal exit removes
the folder itself. After SIGKILL the folder stays, and so do the namespaces
(and the eBPF pins named after the nodes). The owner's child processes are
sent SIGTERM as it dies (PR_SET_PDEATHSIG, :mod:`srv6pm.lab.emulators.launcher`)
and nearly always end; one that does not (it ignores the signal, or hangs) has
in its environment the marker ``SRV6PM_LAB_OWNER`` naming the process that
started it (its pid and start time).

:func:`sweep` first kills (SIGKILL) every process whose marker names a
process that is no longer running (:func:`stop_strays`; in rounds, so that
a stray's own children, sent SIGTERM as it dies, are taken too if they stay),
then removes what every dead owner left: its namespaces and pins
(:func:`srv6pm.lab.network.teardown_names`), then the folder, marker last, so
that a failed removal is tried again by the next sweep. ``srv6pm lab run``
sweeps before it builds and ``srv6pm lab clean`` sweeps too. A folder whose
owner is alive is left alone, and :func:`live_namespaces` names the
namespaces of running labs, which ``lab clean`` then refuses to delete. A
folder without a marker is never swept: its owner may be between making it
and writing the marker, or be a version before the marker (a running one,
for all the sweep can tell).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path

from .emulators.influxdb import EmbeddedInfluxDB
from .emulators.launcher import OWNER_ENV, OWNER_FILE, owned_tempdir, owner_alive, read_owner, start_time

__all__ = ["OWNER_FILE", "PREFIXES", "live_namespaces", "owned_tempdir", "stop_strays", "sweep"]

log = logging.getLogger("srv6pm.lab")

PREFIXES = ("srv6pm-lab-", EmbeddedInfluxDB.workdir_prefix)  # the lab's own folders, the embedded InfluxDB's


def _folders(root: Path | None) -> list[Path]:
    root = Path(root or tempfile.gettempdir())
    return sorted(p for prefix in PREFIXES for p in root.glob(prefix + "*") if p.is_dir() and not p.is_symlink())



def live_namespaces(root: Path | None = None) -> dict[str, int]:
    """Namespace name -> pid of the running lab that built it (from the markers of live owners)."""
    out = {}
    for folder in _folders(root):
        owner = read_owner(folder)
        if owner is not None and owner_alive(owner):
            out.update({ns: owner["pid"] for ns in owner.get("namespaces") or ()})
    return out


def sweep(root: Path | None = None) -> list[Path]:
    """Remove what dead owners left under ``root`` (default: the temporary directory); the folders removed.

    The processes dead owners left running first (:func:`stop_strays`), then per folder its namespaces and
    pins, then the folder. A failure is logged and the folder kept (for the next sweep); a sweep never raises
    for a leftover.
    """
    from . import network  # netlink: only once there is something to remove
    stop_strays()  # first: a stray may hold a namespace or a folder's files
    removed = []
    live = live_namespaces(root)
    for folder in _folders(root):
        owner = read_owner(folder)
        if owner is None or owner_alive(owner):
            continue
        namespaces = [ns for ns in owner.get("namespaces") or () if ns not in live]
        try:
            network.teardown_names(namespaces, [n for n in owner.get("nodes") or () if n not in live])
        except Exception as exc:  # keep the marker: the next sweep tries again
            log.warning("cannot remove a dead lab's namespaces", extra={"folder": str(folder), "error": str(exc)})
            continue
        try:
            for child in folder.iterdir():
                if child.name == OWNER_FILE:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("cannot remove a dead lab's folder", extra={"folder": str(folder), "error": str(exc)})
            continue
        log.info("removed a dead lab's leftovers", extra={"folder": str(folder), "namespaces": namespaces})
        removed.append(folder)
    return removed


_STRAY_ROUNDS = 4  # a stray's child is found in the next round, once the stray is gone


def stop_strays(wait_s: float = 2.0) -> list[int]:
    """Kill (SIGKILL) every process whose environment's ``SRV6PM_LAB_OWNER`` names a process no longer running;
    the pids killed. Never raises.

    Only processes of this process's pid namespace are looked at (a pid and a start time name a process in
    their own namespace: a lab in a container is its own), and never this process or its ancestors. Each
    is signalled through a pidfd opened before its marker is read, so a pid reused meanwhile is never
    signalled; each round waits up to ``wait_s`` for the processes it killed to end, then looks again
    (their own children's owner is gone now). Processes this one may not read (another user's) are left
    alone; a process is signalled once, however long it takes to end.
    """
    killed: list[int] = []
    signalled: set[tuple[int, int]] = set()  # (pid, start time)
    spared = _self_and_ancestors()
    for _ in range(_STRAY_ROUNDS):
        ended: dict[int, int] = {}  # pidfd -> pid
        try:
            _kill_strays(spared, signalled, ended)
            killed += ended.values()
            _wait_ended(list(ended), wait_s)
        finally:
            for fd in ended:
                os.close(fd)
        if not ended:
            break
    return killed


def _kill_strays(spared: set[int], signalled: set[tuple[int, int]], ended: dict[int, int]) -> None:
    """One round of :func:`stop_strays`: each process killed is added to ``ended`` (its pidfd -> its pid)."""
    try:
        own_ns = os.stat("/proc/self/ns/pid").st_ino
        entries = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError as exc:
        log.warning("cannot look for the processes of dead labs", extra={"error": str(exc)})
        return
    for pid in entries:
        if pid in spared:
            continue
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone meanwhile
            continue
        try:
            stray = _stray(pid, own_ns, signalled)
            if stray is not None:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:  # gone meanwhile
            stray = None
        if stray is None:
            os.close(fd)
            continue
        start, owner = stray
        signalled.add((pid, start))
        ended[fd] = pid
        log.info("killed a process a dead lab left running",
                 extra={"pid": pid, "owner": owner["pid"], "argv": _argv(pid)})


def _stray(pid: int, own_ns: int, signalled: set[tuple[int, int]]) -> tuple[int, dict] | None:
    """(its start time, the owner its marker names) if process ``pid`` is a stray not yet signalled, else None."""
    start = start_time(pid)
    if start is None or (pid, start) in signalled or os.stat(f"/proc/{pid}/ns/pid").st_ino != own_ns:
        return None
    owner = _marked_owner(pid)
    return None if owner is None or owner_alive(owner) else (start, owner)


def _wait_ended(fds: list[int], wait_s: float) -> None:
    """Wait up to ``wait_s`` until every process of the pidfds ``fds`` has ended."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    waiting, deadline = len(fds), time.monotonic() + wait_s
    while waiting and (left := deadline - time.monotonic()) > 0:
        for fd, _event in poller.poll(left * 1000):
            poller.unregister(fd)
            waiting -= 1


def _self_and_ancestors() -> set[int]:
    """This process's pid and its ancestors' (from ``PPid`` in ``/proc/PID/status``)."""
    out, pid = set(), os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_bytes()
            pid = int(status.split(b"\nPPid:", 1)[1].split(None, 1)[0])
        except (OSError, IndexError, ValueError):
            break
    return out


_MARK = OWNER_ENV.encode() + b"="


def _marked_owner(pid: int) -> dict | None:
    """The owner (``pid``, ``start``) that process ``pid``'s marker names; None without a (well-formed) marker."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, a kernel thread's, or another user's
        return None
    for item in environ.split(b"\0"):
        if item.startswith(_MARK):
            owner_pid, _, start = item[len(_MARK):].partition(b":")
            if owner_pid.isdigit() and start.isdigit():
                return {"pid": int(owner_pid), "start": int(start)}
            return None
    return None


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []
