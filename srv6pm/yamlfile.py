"""Reading the project's YAML files (scenarios, configurations) with one-line errors.

:func:`read` and :func:`parse` raise the caller's error class, with a message
that names the file (``source``) and, for a syntax error, the line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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


def parse(text: str, source: str, error: type[Exception]) -> Any:
    """The document in YAML ``text``; ``error("<source>: not valid YAML (line L, column C): ...")`` if it is not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{source}: not valid YAML{where}: {problem}") from None
