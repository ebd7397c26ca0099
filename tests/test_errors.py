"""One error tree: every exception class srv6pm defines derives from Srv6pmError, and its branch decides
the exit status of a command and the gRPC status of the southbound API."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import tomllib
from pathlib import Path

import grpc
import pytest

import srv6pm
from srv6pm import errors
from srv6pm.errors import EXIT_FAILURE, EXIT_USAGE, InputError, OperationError, Srv6pmError, UnavailableError

BRANCHES = (InputError, UnavailableError, OperationError)


def _modules():
    """Every module of the packages pyproject.toml ships (the exporter, processor, lab ... live in their own folders)."""
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    for package in pyproject["tool"]["setuptools"]["packages"]:
        if package.startswith("srv6pm.southbound.v1"):
            continue  # generated stubs
        yield importlib.import_module(package)
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__, package + "."):
            if info.ispkg or info.name.endswith(".__main__") or info.name == "srv6pm.dashboards.generate":
                continue  # packages come on their own; entry points run; generate needs the optional grafanalib
            yield importlib.import_module(info.name)


def _defined_exceptions():
    """(qualified name, class) of each exception class a srv6pm module defines (not re-exports)."""
    seen = {}
    for module in _modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                seen[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return seen


DEFINED = _defined_exceptions()


def test_the_walk_finds_the_known_errors():
    names = set(DEFINED)
    # the three ConfigErrors and errors of every component: the walk must see them to check them
    for name in ("srv6pm.config.ConfigError", "srv6pm.exporter.config.ConfigError", "srv6pm.collector.config.ConfigError",
                 "srv6pm.lab.scenario.ScenarioError", "srv6pm.stamp.errors.StampError", "srv6pm.bpf.BpfError",
                 "srv6pm.exporter.api.Refused", "srv6pm.southbound.validate.InvalidArgument"):
        assert name in names
    assert len(names) >= 36


@pytest.mark.parametrize("name", sorted(DEFINED))
def test_every_error_derives_from_srv6pm_error(name):
    cls = DEFINED[name]
    if issubclass(cls, KeyboardInterrupt):  # srv6pm.stopping.Interrupted: a signal, not an error
        return
    assert issubclass(cls, Srv6pmError), f"{name} does not derive from srv6pm.errors.Srv6pmError"
    assert cls in BRANCHES or cls is Srv6pmError or issubclass(cls, BRANCHES), f"{name} is on no branch"


def test_errors_keep_their_builtin_bases():
    """Callers that catch ValueError / RuntimeError / OSError still catch them."""
    from srv6pm.config import ConfigError
    from srv6pm.netlink import NetlinkError
    from srv6pm.netns import NetnsError
    assert issubclass(ConfigError, ValueError) and issubclass(NetnsError, RuntimeError)
    assert issubclass(NetlinkError, OSError)


@pytest.mark.parametrize("exc, status", [
    (InputError("x"), EXIT_USAGE), (UnavailableError("x"), EXIT_FAILURE), (OperationError("x"), EXIT_FAILURE),
    (Srv6pmError("x"), EXIT_FAILURE), (RuntimeError("a bug"), EXIT_FAILURE),
])
def test_exit_status_follows_the_branch(exc, status):
    assert errors.exit_status(exc) == status


def test_exit_status_of_named_errors():
    from srv6pm.bpf import BpfUnavailable
    from srv6pm.exporter.config import ConfigError as ExporterConfigError
    from srv6pm.kafka import BrokerUnavailableError
    from srv6pm.lab.scenario import ScenarioError
    from srv6pm.stamp.cli import UsageError
    for cls in (ExporterConfigError, ScenarioError, UsageError):
        assert errors.exit_status(cls("bad")) == EXIT_USAGE
    for cls in (BrokerUnavailableError, BpfUnavailable):
        assert errors.exit_status(cls("gone")) == EXIT_FAILURE


@pytest.mark.parametrize("exc, code", [
    (InputError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (OperationError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (UnavailableError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (Srv6pmError("x"), grpc.StatusCode.INTERNAL),
    (KeyError("a bug"), grpc.StatusCode.INTERNAL),
])
def test_grpc_status_follows_the_branch(exc, code):
    assert errors.grpc_status(exc) == code


def test_grpc_status_of_the_exporter_api_errors():
    from srv6pm.exporter.api import InvalidArgument, Refused
    assert errors.grpc_status(InvalidArgument("flow", "bad")) == grpc.StatusCode.INVALID_ARGUMENT
    assert errors.grpc_status(Refused("taken")) == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("exc, status, line", [
    (InputError("--period: must be positive"), EXIT_USAGE, "srv6pm: --period: must be positive"),
    (UnavailableError("no broker at h:1"), EXIT_FAILURE, "srv6pm: error: no broker at h:1"),
    (ValueError("a library's failure"), EXIT_FAILURE, "srv6pm: error: a library's failure"),
])
def test_a_command_ends_with_one_line_and_its_class_status(exc, status, line, capsys):
    from srv6pm.exits import guard

    def body():
        raise exc
    assert guard(body) == status
    assert capsys.readouterr().err == line + "\n"


def test_a_command_that_succeeds_keeps_its_status(capsys):
    from srv6pm.exits import guard
    assert guard(lambda: 0) == 0 and capsys.readouterr().err == ""
