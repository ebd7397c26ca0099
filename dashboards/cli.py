"""``srv6pm dashboards generate [--out DIR] [--check]``.

``generate`` writes ``<uid>.json`` for every dashboard (default folder:
``dashboards/json/``). With ``--check`` it writes nothing, lists the stale
files (missing, different, or made by no dashboard) on stderr and exits 1 if
there are any, 0 otherwise. Exit status 2: grafanalib is not installed (the
``dashboards`` extra) or DIR is not a folder (a :class:`UsageError`, one line
on stderr: :mod:`srv6pm.exits`). Added to the ``srv6pm`` command by
:func:`add_commands` (the interface of :mod:`srv6pm.commands`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from srv6pm import inputs as checks
from srv6pm.commands import Common, component
from srv6pm.errors import InputError

__all__ = ["UsageError", "add_commands", "cmd_generate"]


class UsageError(InputError, ValueError):
    """``dashboards generate`` cannot work with what it was given: DIR is not a folder, or grafanalib (the
    ``dashboards`` extra) is not installed; ``str()`` says which."""


def add_commands(subparsers, common: Common | None = None) -> argparse.ArgumentParser:
    """Add ``dashboards generate`` to ``subparsers``; returns the ``dashboards`` parser."""
    dashboards, actions = component(
        subparsers, "dashboards", help="Grafana dashboards as code (grafanalib)",
        description="Build the srv6pm Grafana dashboards (InfluxQL on the srv6pm database, datasource uid "
        "srv6pm-influxdb) as JSON. 'generate' writes them and prints one line per file written (or, with "
        "--check, per stale file).")
    gen = actions.add_parser("generate", help="write the dashboards' JSON files",
                             description="Write <uid>.json for every dashboard (sorted keys, indent 2) and "
                             "remove the srv6pm-*.json files no dashboard makes any more (other files in the "
                             "folder are left alone), or with --check only tell which files are stale. Prints one "
                             "line 'wrote PATH' or 'removed PATH' per file changed on stdout; with --check, one "
                             "line 'stale: PATH' per stale file on stderr and exit status 1 if there is any.")
    gen.add_argument("--out", metavar="DIR", type=Path, help="output folder (default: dashboards/json/ of the package)")
    gen.add_argument("--check", action="store_true",
                     help="write nothing; list stale files and exit 1 if there are any")
    if common:
        common(dashboards)
        common(gen)
    gen.set_defaults(handler=cmd_generate)
    return dashboards


def cmd_generate(args) -> int:
    """``srv6pm dashboards generate``: write the dashboards (0), or with --check list the stale ones (1 if any)."""
    try:
        from . import generate
    except ImportError as exc:
        raise UsageError(f"dashboards need grafanalib (pip install 'srv6pm[dashboards]'): {exc}") from None
    out = args.out or generate.JSON_DIR
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a folder")
    if not args.check:
        checks.creatable(out, "--out", folder=True)
    if args.check:
        stale = generate.stale(out)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            again = "srv6pm dashboards generate" + (f" --out {shlex.quote(str(args.out))}" if args.out else "")
            print(f"srv6pm: run '{again}' (and commit the result, for a folder under version control)",
                  file=sys.stderr)
        return 1 if stale else 0
    try:
        changed = generate.write(out)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write the dashboards there: {exc.strerror or exc}") from None
    for path in changed:
        print(f"wrote {path}" if path.exists() else f"removed {path}")
    return 0
