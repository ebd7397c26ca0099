"""Every parser of the srv6pm command says what it does and every option what it means."""

import argparse
import re
import subprocess
import sys

import pytest

from srv6pm.cli import build_parser


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for ``parser`` and every sub-command under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, path + (name,))


PARSERS = list(_walk(build_parser()))


def test_the_tree_has_every_command():
    paths = {" ".join(p) for p, _ in PARSERS}
    assert {"lab run", "lab check", "lab clean", "exporter run", "processor run", "collector run",
            "collector check", "stamp reflector", "stamp sender", "dashboards generate"} <= paths


@pytest.mark.parametrize("path, parser", PARSERS, ids=[" ".join(p) or "srv6pm" for p, _ in PARSERS])
def test_every_parser_has_a_description_and_every_argument_a_help(path, parser):
    assert (parser.description or "").strip(), f"srv6pm {' '.join(path)}: no description"
    missing = [action.dest for action in parser._actions
               if action.help is not argparse.SUPPRESS and not (action.help or "").strip()]
    assert missing == [], f"srv6pm {' '.join(path)}: arguments without help: {missing}"


@pytest.mark.parametrize("path, parser", PARSERS, ids=[" ".join(p) or "srv6pm" for p, _ in PARSERS])
def test_every_command_says_what_it_prints(path, parser):
    """A command's description (a group's too: ``srv6pm lab --help``) names its output (what goes to stdout
    or stderr), or that it prints nothing."""
    said = re.search(r"\bprint(s|ed)?\b", parser.description, re.IGNORECASE)
    assert said, f"srv6pm {' '.join(path)}: its description does not say what it prints"


@pytest.mark.parametrize("path", [p for p, _ in PARSERS], ids=[" ".join(p) or "srv6pm" for p, _ in PARSERS])
def test_help_of_every_parser_is_shown_by_the_command(path):
    out = subprocess.run([sys.executable, "-m", "srv6pm", *path, "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: srv6pm")
    description = " ".join(dict(PARSERS)[path].description.split())
    assert description[:60] in " ".join(out.stdout.split())


def test_lab_run_json_names_every_kind_of_line_it_prints():
    (json_flag,) = [a for a in dict(PARSERS)[("lab", "run")]._actions if "--json" in a.option_strings]
    for kind in ("srv6pm.loss", "srv6pm.delay", "srv6pm.alarms", "'traffic'", "'summary'",
                 "srv6pm/schemas/srv6pm.lab-output.schema.json"):
        assert kind in json_flag.help
