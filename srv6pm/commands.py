"""What a component's command module is: the interface between a component and the ``srv6pm`` command.

Each component keeps its commands in a module of its own (``srv6pm.lab.cli``,
``srv6pm.exporter.cli``, ``srv6pm.stamp.cli``, ``srv6pm.collector.cli``,
``srv6pm.processor.cli``, ``srv6pm.dashboards.cli``), and each of those modules
has the same shape:

- ``add_commands(subparsers, common=None)`` adds one parser, named after the
  component, with its actions under it (``srv6pm collector run``, ``srv6pm
  collector check``; :func:`component`), and returns that parser. ``common`` is
  the spine's adder of the options every command takes (``-v``,
  ``--log-format``); the module applies it to every action's parser. A
  ``check`` action takes every option of its ``run`` (:func:`add_check`).
- Every action's parser sets ``handler`` (``parser.set_defaults(handler=cmd_run)``):
  one function of the module per action, ``cmd_<action>(args) -> int``, whose
  result is the exit status of a command that did its work (0; 1 for a ``--check``
  that found something stale; :meth:`srv6pm.stopping.Stop.status` after a signal).
- A handler that fails raises: an error of the tree (:mod:`srv6pm.errors`) when the
  failure is explained, anything else otherwise. It never prints the failure nor
  picks its exit status: :func:`srv6pm.cli.main` does, once for every command,
  through :func:`srv6pm.exits.guard`. (A handler may turn a lower layer's error
  into the one that says what to change, e.g. a missing namespace into a bad
  ``--netns``.)
- Settings that come from a flag, else the environment, else a default are read
  through :mod:`srv6pm.config` (:func:`~srv6pm.config.given`,
  :func:`~srv6pm.config.setting`, :func:`~srv6pm.config.secret`,
  :func:`~srv6pm.config.readable`), never from ``os.environ`` directly.

``tests/test_cli_modules.py`` checks every module in :data:`srv6pm.cli.COMMANDS` against this.
"""

from __future__ import annotations

import argparse
from typing import Callable

__all__ = ["Common", "add_check", "component", "same_options"]

#: The spine's adder of the options every command takes (``-v``, ``--log-format``).
Common = Callable[[argparse.ArgumentParser], None]


def same_options(source: argparse.ArgumentParser, target: argparse.ArgumentParser) -> None:
    """Give ``target`` (made with ``add_help=False``) every argument of ``source``: a ``check`` takes
    what its ``run`` takes, so that it can refuse exactly what ``run`` would refuse."""
    target._add_container_actions(source)  # what argparse's parents= does


def component(subparsers, name: str, *, help: str, description: str,
              actions: str = "what to do") -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The parser of component ``name`` (``srv6pm NAME``), added to ``subparsers``, and the sub-parsers of its
    actions (``srv6pm NAME ACTION``, one required; the action's name in ``args.NAME_command``)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    return parser, parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True, help=actions)


def add_check(actions: argparse._SubParsersAction, run: argparse.ArgumentParser, handler: Callable[..., int], *,
              help: str, description: str) -> argparse.ArgumentParser:
    """Add the ``check`` action of ``run`` to ``actions``: it takes every option of ``run`` (:func:`same_options`,
    so that it refuses exactly what ``run`` would refuse) and is handled by ``handler``; returns its parser."""
    check = actions.add_parser("check", help=help, add_help=False, description=description)
    same_options(run, check)
    check.set_defaults(handler=handler)
    return check
