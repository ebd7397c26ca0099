"""Render the dashboards to JSON files, deterministically, and tell stale files.

Each dashboard becomes ``<uid>.json`` in the output folder (default
``dashboards/json/`` of this package), with sorted keys, an indent of 2 and a
final newline, so that the same code always gives the same bytes and the
committed files can be compared with a fresh rendering.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafanalib._gen import DashboardEncoder

from . import delay, flow, overview, pipeline

__all__ = ["BUILDERS", "JSON_DIR", "build_all", "render", "stale", "write"]

JSON_DIR = Path(__file__).resolve().parent / "json"

# uid -> builder; the uids are stable: Grafana links and provisioning refer to them.
BUILDERS = {m.UID: m.build for m in (overview, flow, delay, pipeline)}
PREFIX = "srv6pm-"  # every uid's: the files of this command in a folder shared with other dashboards
if not all(uid.startswith(PREFIX) for uid in BUILDERS):
    raise ImportError(f"a dashboard uid does not start with {PREFIX!r}: stale() would not see its old file")


def render(dashboard) -> str:
    """The JSON text of a grafanalib dashboard."""
    return json.dumps(dashboard.to_json_data(), sort_keys=True, indent=2, cls=DashboardEncoder,
                      ensure_ascii=False) + "\n"


def build_all() -> dict[str, str]:
    """``{file name: JSON text}`` of every dashboard."""
    return {f"{uid}.json": render(build()) for uid, build in BUILDERS.items()}


def write(out_dir: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard into ``out_dir`` (created if needed) and remove the files named as dashboards are
    (``srv6pm-*.json``) that no dashboard makes any more; returns the files that changed (removed ones too).
    Raises OSError when the folder cannot be made or written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    fresh = build_all()
    for name, text in fresh.items():
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in sorted(out_dir.glob(f"{PREFIX}*.json")):
        if path.name not in fresh:
            path.unlink()
            changed.append(path)
    return changed


def stale(out_dir: Path = JSON_DIR) -> list[Path]:
    """Files in ``out_dir`` that are missing or differ from a fresh rendering, and files named as the dashboards
    are (``srv6pm-*.json``) that no dashboard makes any more; other files (a provisioning folder's other
    dashboards) are not this command's."""
    fresh = build_all()
    out = [out_dir / name for name, text in fresh.items()
           if not (out_dir / name).exists() or (out_dir / name).read_text(encoding="utf-8") != text]
    if out_dir.is_dir():
        out += sorted(p for p in out_dir.glob(f"{PREFIX}*.json") if p.name not in fresh)
    return out
