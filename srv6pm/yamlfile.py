"""Reading the project's YAML files (scenarios, configurations) with one-line errors.

:func:`read` and :func:`parse` raise the caller's error class, with a message
that names the file (``source``) and, for a syntax error, the line and column.
A key given twice in one mapping is refused, naming both lines
(``example.yaml: line 7: 'period' given twice (first on line 1)``): YAML
itself would silently keep the last value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from srv6pm.errors import InputError
from srv6pm.quote import quote, shorten

__all__ = ["parse", "read"]


def read(path: str | Path, error: type[Exception]) -> str:
    """The UTF-8 text of ``path``; ``error("<path>: ...")`` if it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None


class _DuplicateKey(InputError, yaml.YAMLError):
    """A key given twice in one mapping; ``str()`` names it and both lines."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that gives one key twice."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            _check_unique(self, node)
        return super().construct_mapping(node, deep=deep)


def _check_unique(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    """Raise :class:`_DuplicateKey` for the first key of ``node`` that an earlier one already gave."""
    first_line: dict = {}
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<': merged keys may be overridden, by design
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in first_line:
                raise _DuplicateKey(f"line {line}: {quote(key)} given twice (first on line {first_line[key]})")
            first_line[key] = line
        except TypeError:  # an unhashable key: PyYAML's own error says so
            continue


def parse(text: str, source: str, error: type[Exception]) -> Any:
    """The document in YAML ``text``; ``error("<source>: not valid YAML (line L, column C): ...")`` if it is not YAML,
    ``error("<source>: line L: 'key' given twice (first on line F)")`` if a mapping repeats a key."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise error(f"{source}: {exc}") from None
    except RecursionError:
        raise error(f"{source}: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # a constructor's: a number of more digits than int() converts, a bad date
        problem = "a number of more than 4300 digits" if "integer string conversion" in str(exc) else str(exc)
        raise error(f"{source}: not valid YAML: {shorten(problem, 120)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{source}: not valid YAML{where}: {problem}") from None
