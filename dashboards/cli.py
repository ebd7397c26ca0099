"""``srv6pm dashboards generate [--out DIR] [--check]``.

``generate`` writes ``<uid>.json`` for every dashboard (default folder:
``dashboards/json/``). With ``--check`` it writes nothing, lists the stale
files (missing, different, or made by no dashboard) on stderr and exits 1 if
there are any, 0 otherwise. Exit status 2: grafanalib is not installed (the
``dashboards`` extra) or DIR is not a folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(subparsers, common: Callable[[argparse.ArgumentParser], None] | None = None):
    """Add ``dashboards generate`` to ``subparsers``; the leaf sets ``args.dashboards_handler(args) -> int``."""
    dashboards = subparsers.add_parser("dashboards", help="Grafana dashboards as code (grafanalib)",
                                       description="Build the srv6pm Grafana dashboards (InfluxQL on the srv6pm "
                                       "database, datasource uid srv6pm-influxdb) as JSON. 'generate' writes them and prints one line per "
                                       "file written (or, with --check, per stale file).")
    actions = dashboards.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True,
                                        help="what to do")
    gen = actions.add_parser("generate", help="write the dashboards' JSON files",
                             description="Write <uid>.json for every dashboard (sorted keys, indent 2), "
                             "or with --check only tell which files are stale. Prints one line 'wrote PATH' per "
                             "file written on stdout; with --check, one line 'stale: PATH' per stale file on "
                             "stderr and exit status 1 if there is any.")
    gen.add_argument("--out", metavar="DIR", type=Path, help="output folder (default: dashboards/json/ of the package)")
    gen.add_argument("--check", action="store_true",
                     help="write nothing; list stale files and exit 1 if there are any")
    if common:
        common(dashboards)
        common(gen)
    gen.set_defaults(dashboards_handler=cmd_generate)
    return dashboards


def cmd_generate(args) -> int:
    try:
        from . import generate
    except ImportError as exc:
        print(f"srv6pm: dashboards need grafanalib (pip install 'srv6pm[dashboards]'): {exc}", file=sys.stderr)
        return 2
    out = args.out or generate.JSON_DIR
    if out.exists() and not out.is_dir():
        print(f"srv6pm: --out {out}: not a folder", file=sys.stderr)
        return 2
    if args.check:
        stale = generate.stale(out)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print("srv6pm: run 'srv6pm dashboards generate' and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in generate.write(out):
        print(f"wrote {path}")
    return 0
