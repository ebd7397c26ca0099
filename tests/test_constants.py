"""Protocol constants are written once: the STAMP port as a number only in srv6pm.stamp.protocol."""

import io
import tokenize
from pathlib import Path

from srv6pm.southbound import validate
from srv6pm.stamp import protocol, reflector, sender

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("srv6pm", "node-exporter", "processor", "lab", "stamp", "collector", "dashboards", "bench")


def _numbers(path: Path):
    """(line, value) of every integer literal in the code of ``path`` (docstrings and comments are no code)."""
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type == tokenize.NUMBER and token.string.isdigit():
            yield token.start[0], int(token.string)


def test_the_stamp_port_is_written_once():
    places = [f"{path.relative_to(ROOT)}:{line}" for d in PACKAGE_DIRS for path in sorted((ROOT / d).rglob("*.py"))
              if "_pb2" not in path.name for line, value in _numbers(path) if value == protocol.STAMP_PORT]
    assert len(places) == 1 and places[0].startswith("stamp/protocol.py:"), places


def test_every_default_port_is_the_stamp_port():
    assert protocol.STAMP_PORT == 862  # RFC 8762 §4.1 (IANA)
    assert reflector.DEFAULT_PORT == sender.DEFAULT_PORT == validate.STAMP_PORT == protocol.STAMP_PORT


def test_the_exporter_names_roles_as_the_southbound_api():
    from srv6pm.exporter import classify, config
    assert classify.ROLES == config.ROLES == tuple(validate.ROLE_NAMES.values()) == ("ingress", "transit", "egress")
