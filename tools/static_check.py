#!/usr/bin/env python3
"""Static checks of the srv6pm package: ruff (lint) and mypy (types), as installed.

Usage: ``.venv/bin/python tools/static_check.py`` from anywhere; exit status 0 when both checks
are clean, 1 when either reports a finding (or pyproject.toml has no package-dir for srv6pm).

Contract:
- The rule set (``[tool.ruff]``) and the type-check settings (``[tool.mypy]``) live in
  pyproject.toml; this script only says *what* is checked, never *how strictly*.
- What is checked is the package exactly as setuptools installs it: the folders that
  ``[tool.setuptools] package-dir`` maps into ``srv6pm`` (``srv6pm.exporter`` = node-exporter/,
  ...). mypy resolves modules by folder name, so it is run over a throw-away tree of symlinks
  laid out as the installed package (built from package-dir each run, so it never drifts);
  its paths are reported back as repository paths.
- ruff runs over the same folders in the repository itself (it needs no import layout), and over the
  scripts beside the package that are not installed with it: :data:`SCRIPTS` (benchmarks, tools).
- Both tools run from the interpreter running this script (``python -m ruff``,
  ``python -m mypy``), so the venv's installed libraries are the ones type-checked against.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "srv6pm"
SCRIPTS = ("bench", "tools")  # linted by ruff too; not type-checked (they are scripts, not the package)


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """The package-dir mapping of pyproject.toml: dotted package name -> repository folder."""
    setuptools = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    mapping = setuptools.get("package-dir", {})
    if PACKAGE not in mapping:
        raise SystemExit(f"static_check: pyproject.toml package-dir has no {PACKAGE!r} entry")
    return {name: ROOT / folder for name, folder in mapping.items()}


def build_tree(mapping: dict[str, Path], dest: Path) -> dict[Path, Path]:
    """Lay out the installed package under ``dest`` as symlinks; return tree path -> repo folder.

    A package with other mapped packages below it becomes a real folder whose entries are
    symlinks (so the mapped subpackage can sit beside them); any other one is one symlink.
    """
    links: dict[Path, Path] = {}
    for name in sorted(mapping, key=lambda n: n.count(".")):
        source, target = mapping[name], dest.joinpath(*name.split("."))
        if any(other.startswith(name + ".") for other in mapping):
            target.mkdir(parents=True, exist_ok=True)
            for entry in source.iterdir():
                if entry.name not in ("__pycache__",) and not (target / entry.name).exists():
                    (target / entry.name).symlink_to(entry)
        else:
            if target.is_symlink():  # a plain folder of the parent package, replaced by the mapping
                target.unlink()
            target.symlink_to(source, target_is_directory=True)
        links[target.relative_to(dest)] = source.relative_to(ROOT)
    return links


def repo_path(line: str, links: dict[Path, Path]) -> str:
    """A mypy output line with its tree path (srv6pm/exporter/x.py) turned into the repo path."""
    head, sep, rest = line.partition(":")
    if not sep or not head.endswith(".py"):
        return line
    path = Path(head)
    for tree, folder in sorted(links.items(), key=lambda kv: -len(kv[0].parts)):
        if path.is_relative_to(tree):
            return f"{folder / path.relative_to(tree)}:{rest}"
    return line


def run_ruff(mapping: dict[str, Path]) -> int:
    """ruff check over every mapped folder and the scripts' folders, with pyproject.toml's [tool.ruff] settings."""
    folders = sorted({str(p.relative_to(ROOT)) for p in mapping.values()} | set(SCRIPTS))
    print(f"static_check: ruff check {' '.join(folders)}", flush=True)
    return subprocess.run([sys.executable, "-m", "ruff", "check", *folders], cwd=ROOT).returncode


def run_mypy(mapping: dict[str, Path]) -> int:
    """mypy -p srv6pm over the symlink tree, with pyproject.toml's [tool.mypy] settings."""
    print(f"static_check: mypy -p {PACKAGE}", flush=True)
    with tempfile.TemporaryDirectory(prefix="srv6pm-static-") as tmp:
        links = build_tree(mapping, Path(tmp))
        env = dict(os.environ, MYPY_CACHE_DIR=str(ROOT / ".mypy_cache"))
        done = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", PACKAGE],
            cwd=tmp, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        print(repo_path(line, links))
    sys.stderr.write(done.stderr)
    return done.returncode


def main() -> int:
    mapping = package_dirs(ROOT / "pyproject.toml")
    ruff, mypy = run_ruff(mapping), run_mypy(mapping)
    if ruff or mypy:
        failed = [name for name, code in (("ruff", ruff), ("mypy", mypy)) if code]
        print(f"static_check: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("static_check: ruff and mypy clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
