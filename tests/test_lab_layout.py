"""The lab's two halves: the emulators (srv6pm.lab.emulators) never import the lab's orchestration, and the
names the README gave the emulators before they moved still import, as the same objects."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import srv6pm.lab
import srv6pm.lab.emulators

ORCHESTRATION = {info.name for info in pkgutil.iter_modules(srv6pm.lab.__path__) if not info.ispkg}
MOVED = {"broker": "broker", "influxdb": "influxdb", "influx_front": "influx_front", "delay": "delay",
         "process": "launcher"}


def _imported(path: Path, package: str) -> set[str]:
    """Dotted names of the modules a file imports (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(Path(srv6pm.lab.emulators.__path__[0]).glob("*.py")), ids=lambda p: p.name)
def test_an_emulator_imports_no_orchestration(path):
    imported = _imported(path, "srv6pm.lab.emulators")
    orchestration = {f"srv6pm.lab.{name}" for name in ORCHESTRATION - set(MOVED)}
    assert not imported & orchestration, f"{path.name} imports the lab's orchestration"
    assert "srv6pm.lab" not in imported


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_the_old_names_still_import(old, new):
    before = importlib.import_module(f"srv6pm.lab.{old}")
    after = importlib.import_module(f"srv6pm.lab.emulators.{new}")
    assert before.__all__
    for name in before.__all__:
        assert getattr(before, name) is getattr(after, name)
