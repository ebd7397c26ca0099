"""Replacing a file atomically: readers see the old content or the new one, never a torn file.

:func:`replace` writes the new content to a temporary file in the same
directory, flushes it, optionally fsyncs it, and renames it over the target
(``os.replace``, atomic on POSIX); with ``fsync`` the directory is fsynced
too, so that the rename itself survives a crash. The directory is created if
it is missing. On any failure the temporary file is removed and the
``OSError`` propagates; the target is then untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["replace"]


def replace(path: str | Path, text: str | bytes, *, fsync: bool = True) -> None:
    """Make ``text`` (str: UTF-8; or bytes) the content of ``path`` in one atomic step; see the module docstring."""
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8") if isinstance(text, str) else text)
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
