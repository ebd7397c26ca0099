"""``python -m srv6pm.stamp reflector|sender ...``: the STAMP commands on their own (same as ``srv6pm stamp``)."""

import argparse
import sys

from srv6pm.cli import add_common, run
from srv6pm.stamp.cli import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="srv6pm",
                                     description="STAMP Session-Sender and Session-Reflector (srv6pm stamp).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(commands, common=add_common)
    # "python -m srv6pm.stamp reflector ..." and "... stamp reflector ..." both work
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] not in ("stamp", "-h", "--help"):
        argv.insert(0, "stamp")
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
