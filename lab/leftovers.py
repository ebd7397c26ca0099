"""What a lab leaves when it is killed (SIGKILL, a crash, a lost machine), and its removal.

A lab's temporary folders are made by :func:`owned_tempdir` (the launcher's, :mod:`srv6pm.lab.emulators.launcher`): a folder under
the temporary directory (``srv6pm-lab-*``, the embedded InfluxDB's
``srv6pm-influxdb-*``) holding ``owner.json`` -- the owning process's pid and
start time (``/proc/PID/stat``, so a reused pid is not taken for the owner)
and the network namespaces and node names it builds. A normal exit removes
the folder itself. After SIGKILL the folder stays, and so do the namespaces
(and the eBPF pins named after the nodes): the owner's child processes die
with it (PR_SET_PDEATHSIG, :mod:`srv6pm.lab.emulators.launcher`), nothing else can.

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

import logging
import shutil
import tempfile
from pathlib import Path

from .emulators.influxdb import EmbeddedInfluxDB
from .emulators.launcher import OWNER_FILE, owned_tempdir, owner_alive, read_owner

__all__ = ["OWNER_FILE", "PREFIXES", "live_namespaces", "owned_tempdir", "sweep"]

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

    Namespaces and pins first, then the folder. A failure is logged and the
    folder kept (for the next sweep); a sweep never raises for a leftover.
    """
    from . import network  # netlink: only once there is something to remove
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
