"""``python -m srv6pm.stamp reflector|sender ...``: the STAMP commands on their own (same as ``srv6pm stamp``)."""

import argparse
import sys

from srv6pm import logs
from srv6pm.stamp.cli import add_commands
from srv6pm.stopping import quiet_on_closed_pipe


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output on stderr (-v info and the client libraries' warnings, -vv debug, "
                             "-vvv the libraries' debug too); default: srv6pm's own warnings only")
    parser.add_argument("--log-format", choices=("logfmt", "json"), default=argparse.SUPPRESS,
                        help="log line format (default logfmt, or $SRV6PM_LOG_FORMAT)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="srv6pm",
                                     description="STAMP Session-Sender and Session-Reflector (srv6pm stamp).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    stamp = add_commands(commands, common=_common)
    # "python -m srv6pm.stamp reflector ..." and "... stamp reflector ..." both work
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] not in ("stamp", "-h", "--help"):
        argv.insert(0, "stamp")
    del stamp
    args = parser.parse_args(argv)
    logs.setup(getattr(args, "verbose", 0), getattr(args, "log_format", None))
    return quiet_on_closed_pipe(lambda: args.stamp_handler(args))


if __name__ == "__main__":
    sys.exit(main())
