"""One command-line spine: every component's commands in a module of its own with one interface
(srv6pm.commands), srv6pm.cli only the spine that ends every command, and settings read through
srv6pm.config alone (never from os.environ directly)."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import tomllib
from pathlib import Path

import pytest

from srv6pm import cli

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _sources() -> list[Path]:
    """Every Python file of the packages pyproject.toml ships (each component in its own folder)."""
    folders = {ROOT / folder for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    return sorted(path for folder in folders for path in folder.rglob("*.py") if "build" not in path.parts)


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _leaves(parser: argparse.ArgumentParser):
    """(parser, path) of every parser under ``parser`` without sub-commands: the commands one runs."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for sub in action.choices.values():
            yield from _leaves(sub)


def _fresh(module):
    """What ``module.add_commands`` adds to a parser of its own: (the parser it returns, the names added)."""
    top = cli.Parser(prog="srv6pm")
    subparsers = top.add_subparsers(dest="command", required=True)
    added = module.add_commands(subparsers, common=cli.add_common)
    return added, list(subparsers.choices)


def test_every_component_with_commands_is_in_the_spine():
    """The components' command modules are what srv6pm.cli lists, and together they make its commands."""
    modules = {f"srv6pm.{p.parent.name if p.parent.name != 'node-exporter' else 'exporter'}.cli"
               for p in _sources() if p.name == "cli.py" and p.parent.name != "srv6pm"}
    assert modules == set(cli.COMMANDS)
    names = [name for module in cli.COMMANDS for name in _fresh(importlib.import_module(module))[1]]
    top = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(top.choices) == names == ["lab", "exporter", "stamp", "collector", "processor", "dashboards"]


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_each_command_module_has_the_one_interface(name):
    """add_commands(subparsers, common) adds one parser named after the component and returns it; every
    command under it has one handler, a cmd_* function of the module, and the common options."""
    module = importlib.import_module(name)
    assert list(inspect.signature(module.add_commands).parameters) == ["subparsers", "common"]
    added, names = _fresh(module)
    assert names == [name.split(".")[1]] and added.prog == f"srv6pm {names[0]}"
    leaves = list(_leaves(added))
    assert leaves and added not in leaves
    for leaf in leaves:
        handler = leaf._defaults.get("handler")
        assert inspect.isfunction(handler), f"{leaf.prog} sets no handler"
        assert handler.__module__ == name and handler.__name__.startswith("cmd_"), (leaf.prog, handler)
        assert getattr(module, handler.__name__) is handler
        options = {o for action in leaf._actions for o in action.option_strings}
        assert {"-h", "-v", "--verbose", "--log-format"} <= options, leaf.prog
    options = {o for action in added._actions for o in action.option_strings}  # before the action too
    assert {"-v", "--verbose", "--log-format"} <= options, added.prog
    handlers = [leaf._defaults["handler"] for leaf in leaves]
    assert len(set(handlers)) == len(handlers), "one handler per command"


def test_the_spine_dispatches_every_command_to_its_handler():
    args = cli.build_parser().parse_args(["processor", "check", "--group", "g"])
    assert args.handler is importlib.import_module("srv6pm.processor.cli").cmd_check
    args = cli.build_parser().parse_args(["-v", "stamp", "sender", "--dest", "::1"])
    assert args.handler is importlib.import_module("srv6pm.stamp.cli").cmd_sender and args.verbose == 1


def _calls(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines that call one of ``names`` (as ``f(...)`` or ``module.f(...)``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in names:
                lines.append(node.lineno)
    return lines


def test_only_the_spine_ends_a_command():
    """The one error handling path: srv6pm.cli.run turns a failure into a line and an exit status (through
    srv6pm.exits.guard); no command module prints its failures or picks their status itself."""
    spine = ROOT / "srv6pm" / "cli.py"
    enders = {"guard", "exit_status", "quiet_on_closed_pipe", "status_of"}
    where = {}
    for path in _sources():
        if path.parent == ROOT / "srv6pm" and path.name in ("cli.py", "exits.py", "errors.py", "stopping.py"):
            continue
        lines = _calls(ast.parse(path.read_text()), enders)
        if lines:
            where[_name(path)] = lines
    assert where == {}, "a command's end decided outside srv6pm.cli.run"
    spine_tree = ast.parse(spine.read_text())
    assert _calls(spine_tree, {"guard"}) and _calls(spine_tree, {"quiet_on_closed_pipe"})
    defined = {n.name for n in spine_tree.body if isinstance(n, ast.FunctionDef)}
    assert not {n for n in defined if n.startswith("cmd_")} and not _calls(spine_tree, {"add_parser"}), \
        "srv6pm.cli is the spine only; commands live in their components' modules"


# The modules that may touch os.environ, how often, and why: none of them reads a setting of srv6pm's.
ENVIRONMENT = {
    "srv6pm/config.py": (None, "the resolver: flag, then environment, then default; secrets"),
    "srv6pm/logs.py": (1, "sets GRPC_VERBOSITY for gRPC's C core (which reads it), a write, not a setting"),
    "lab/runner.py": (1, "the lab's children inherit this process' environment, less the settings it gives them"),
    "lab/emulators/broker.py": (1, "the embedded broker's process inherits the environment, less Tansu's own variables"),
    "lab/emulators/influxdb.py": (1, "the embedded InfluxDB inherits the environment, less INFLUXDB_* (they override its file)"),
    "lab/emulators/launcher.py": (1, "a child's environment is the one given (or this process') plus SRV6PM_LAB_OWNER, "
                                     "the marker the lab's sweep finds the processes of dead labs by"),
}


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that touch the process environment: os.environ, os.environb, os.getenv, or those names imported."""
    names = {"environ", "environb", "getenv", "getenvb"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names and isinstance(node.value, ast.Name) \
                and node.value.id == "os":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & names:
            lines.append(node.lineno)
    return lines


def test_settings_are_read_through_the_resolver_only():
    """No module but srv6pm.config reads os.environ: a flag, else SRV6PM_*, else a default goes through
    srv6pm.config.given / setting / secret / readable (ENVIRONMENT lists the other uses, and why)."""
    found = {}
    for path in _sources():
        lines = _environment_reads(ast.parse(path.read_text()))
        if lines:
            found[_name(path)] = lines
    assert set(found) <= set(ENVIRONMENT), {p: found[p] for p in set(found) - set(ENVIRONMENT)}
    for name, (count, reason) in ENVIRONMENT.items():
        assert name in found, f"{name} no longer touches the environment: remove it from ENVIRONMENT ({reason})"
        if count is not None:
            assert len(found[name]) == count, f"{name}: {found[name]} (allowed: {count}, {reason})"


def test_the_environment_scan_sees_every_form():
    """The scan above is no test that cannot fail: each way of reading the environment is found."""
    for text in ("import os\nos.environ.get('SRV6PM_X')", "import os\nos.getenv('SRV6PM_X')",
                 "from os import environ\nenviron['SRV6PM_X']", "import os\nx = dict(os.environ)"):
        assert _environment_reads(ast.parse(text)), text
    assert not _environment_reads(ast.parse("from srv6pm.config import setting\nsetting(None, 'x', 'SRV6PM_X')"))
