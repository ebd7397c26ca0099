"""The ``srv6pm`` command.

::

    srv6pm lab run SCENARIO [--duration S] [--json]   the whole pipeline on this machine
    srv6pm lab check SCENARIO                         validate a scenario, print its plan
    srv6pm lab clean SCENARIO                         remove namespaces a killed lab left
    srv6pm exporter run --config FILE                 node exporter (southbound API, marking, counting, STAMP)
    srv6pm exporter check --config FILE               validate what 'exporter run' is given, print its settings
    srv6pm processor run                              processor (Kafka -> loss and delay -> InfluxDB)
    srv6pm processor check                            validate what 'processor run' is given, print its settings
    srv6pm collector run --config FILE                collector (config -> exporters over gRPC, graph)
    srv6pm collector check --config FILE              validate a collector config, print desired state
    srv6pm stamp reflector --bind ADDR                STAMP Session-Reflector
    srv6pm stamp sender --dest ADDR                   STAMP Session-Sender
    srv6pm dashboards generate [--out DIR] [--check]  Grafana dashboards as JSON

Every command checks everything it is given (:mod:`srv6pm.inputs`) before it builds or connects to
anything, and each ``check`` takes the options of its ``run`` and refuses exactly what ``run`` would
refuse (one validation function per command, e.g. :func:`srv6pm.processor.cli.inputs`). Commands that
use Kafka, InfluxDB or ArangoDB then check that they answer (:mod:`srv6pm.reach`) before they start work.

This module is the spine of the command: the top-level parser and the options every command takes, each
component's commands from its own module (:data:`COMMANDS`, each the interface of :mod:`srv6pm.commands`),
and :func:`run`, the one place where a command ends and its exit status is chosen (:mod:`srv6pm.exits`).

Exit status: 0 success, 1 runtime failure (e.g. a service that does not answer), 2 bad usage or bad input file,
130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM (both after a clean stop),
141 standard output was a pipe that its reader closed (see :mod:`srv6pm.stopping`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from srv6pm import __version__, logs
from srv6pm.errors import EXIT_USAGE
from srv6pm.exits import guard
from srv6pm.stopping import quiet_on_closed_pipe

__all__ = ["COMMANDS", "Parser", "add_common", "build_parser", "main", "run"]

#: The command module of each component (the interface of :mod:`srv6pm.commands`), in the order
#: ``srv6pm --help`` lists them.
COMMANDS = ("srv6pm.lab.cli", "srv6pm.exporter.cli", "srv6pm.stamp.cli", "srv6pm.collector.cli",
            "srv6pm.processor.cli", "srv6pm.dashboards.cli")


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line (naming the argument), exit status 2."""

    def error(self, message: str):
        from srv6pm.quote import shorten
        command = self.prog.removeprefix("srv6pm").strip()
        self.exit(EXIT_USAGE, f"srv6pm: {command + ': ' if command else ''}{shorten(message)} "
                              f"(usage: {self.prog} --help)\n")


def add_common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """Add the options every command takes (``-v``, ``--log-format``) to ``parser``.

    Sub-commands accept the same options as the top level; their SUPPRESS default keeps a
    sub-command's default from overwriting what was given before the sub-command's name.
    """
    default = 0 if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more log output on stderr (-v info and the client libraries' warnings, -vv debug, "
                             "-vvv the libraries' debug too); default: srv6pm's own warnings only")
    parser.add_argument("--log-format", choices=logs.FORMATS, default=None if top else argparse.SUPPRESS,
                        help="log line format (default logfmt, or $SRV6PM_LOG_FORMAT)")


def build_parser() -> argparse.ArgumentParser:
    """The ``srv6pm`` command's parser: the top-level options, then each component's commands (:data:`COMMANDS`)."""
    parser = Parser(
        prog="srv6pm", description="Performance monitoring for SRv6 networks: exact per-flow packet loss "
        "(RFC 9341 alternate marking) through Kafka into InfluxDB. Each command prints its results on stdout "
        "and its logs on stderr; its --help says exactly what it prints.",
        epilog="Run 'srv6pm COMMAND --help' for the options of each command.")
    parser.add_argument("--version", action="version", version=f"srv6pm {__version__}")
    add_common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     help="the component or tool to run")
    for name in COMMANDS:
        importlib.import_module(name).add_commands(commands, common=add_common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``srv6pm`` command; its exit status (see above)."""
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` (made of :data:`COMMANDS` modules), set up logging, run the command's
    handler; the exit status.

    This is the one place that ends a command: the handler's status, or the line and the status its failure's
    class gives (:func:`srv6pm.exits.guard`); a closed output pipe ends it quietly with 141
    (:func:`srv6pm.stopping.quiet_on_closed_pipe`).
    """
    def command() -> int:
        args = parser.parse_args(argv)

        def body() -> int:
            logs.setup(getattr(args, "verbose", 0), getattr(args, "log_format", None))  # may refuse SRV6PM_LOG_FORMAT
            return args.handler(args)
        return guard(body)
    return quiet_on_closed_pipe(command)


if __name__ == "__main__":
    sys.exit(main())
