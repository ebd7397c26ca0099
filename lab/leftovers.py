"""What a lab leaves when it is killed (SIGKILL, a crash, a lost machine), and its removal.

A lab's temporary folders are made by :func:`owned_tempdir`: a folder under
the temporary directory (``srv6pm-lab-*``, the embedded InfluxDB's
``srv6pm-influxdb-*``) holding ``owner.json`` -- the owning process's pid and
start time (``/proc/PID/stat``, so a reused pid is not taken for the owner)
and the network namespaces and node names it builds. A normal exit removes
the folder itself. After SIGKILL the folder stays, and so do the namespaces
(and the eBPF pins named after the nodes): the owner's child processes die
with it (PR_SET_PDEATHSIG, :mod:`srv6pm.lab.process`), nothing else can.

:func:`sweep` removes what every dead owner left: its namespaces and pins
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

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["OWNER_FILE", "PREFIXES", "live_namespaces", "owned_tempdir", "sweep"]

log = logging.getLogger("srv6pm.lab")

OWNER_FILE = "owner.json"
PREFIXES = ("srv6pm-lab-", "srv6pm-influxdb-")


def _start_time(pid: int) -> int | None:
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
    to create, so that :func:`sweep` can remove them if this process dies
    without removing the folder.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    owner = {"pid": os.getpid(), "start": _start_time(os.getpid()),
             "namespaces": list(namespaces), "nodes": list(nodes)}
    tmp = folder / (OWNER_FILE + ".tmp")
    tmp.write_text(json.dumps(owner))
    os.replace(tmp, folder / OWNER_FILE)
    return folder


def _folders(root: Path | None) -> list[Path]:
    root = Path(root or tempfile.gettempdir())
    return sorted(p for prefix in PREFIXES for p in root.glob(prefix + "*") if p.is_dir() and not p.is_symlink())


def _owner(folder: Path) -> dict | None:
    """The folder's marker; None if it has none (or an unreadable one)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def _alive(owner: dict) -> bool:
    start = _start_time(owner["pid"])
    return start is not None and (owner.get("start") is None or start == owner["start"])




def live_namespaces(root: Path | None = None) -> dict[str, int]:
    """Namespace name -> pid of the running lab that built it (from the markers of live owners)."""
    out = {}
    for folder in _folders(root):
        owner = _owner(folder)
        if owner is not None and _alive(owner):
            out.update({ns: owner["pid"] for ns in owner.get("namespaces") or ()})
    return out


def sweep(root: Path | None = None) -> list[Path]:
    """Remove what dead owners left under ``root`` (default: the temporary directory); the folders removed.

    Namespaces and pins first, then the folder. A failure is logged and the
    folder kept (for the next sweep); a sweep never raises for a leftover.
    """
    from . import network  # netlink: only once there is something to remove
    removed = []
    live = live_namespaces(root)
    for folder in _folders(root):
        owner = _owner(folder)
        if owner is None or _alive(owner):
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
