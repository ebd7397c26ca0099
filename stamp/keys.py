"""HMAC keys for authenticated STAMP, read from files only (never from a flag or the code).

Key file format (UTF-8 text)::

    # STAMP key of session s1 (lines starting with # and blank lines are ignored)
    3f6c2a9e0b7d41c8a5e2f09b6d3c7a1e5f8b2d4c6a0e9f1b3d5c7e9a1b3d5f70

Exactly one non-comment line: the key as hexadecimal digits (upper or lower
case; spaces and colons between digit pairs are allowed), at least 16 octets
(32 digits) and at most 1024 octets. 32 random octets are recommended, e.g.
``python3 -c 'import secrets; print(secrets.token_hex(32))' > stamp.key``.
Both ends of a session use the same file content. The file should be
readable only by its owner (a warning is logged otherwise).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from srv6pm.stamp.errors import KeyFileError

__all__ = ["MIN_KEY_OCTETS", "MAX_KEY_OCTETS", "load_key", "parse_key"]

log = logging.getLogger("srv6pm.stamp.keys")

MIN_KEY_OCTETS = 16
MAX_KEY_OCTETS = 1024
MAX_FILE_BYTES = 16 * 1024


def parse_key(text: str, source: str = "key") -> bytes:
    """The key in key-file ``text``; :class:`KeyFileError` (naming ``source``) if it is not in the format."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != 1:
        raise KeyFileError(f"{source}: expected exactly one line of hexadecimal key digits, found {len(lines)}")
    digits = lines[0].replace(" ", "").replace(":", "")
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        raise KeyFileError(f"{source}: the key line is not hexadecimal digits") from None
    if not MIN_KEY_OCTETS <= len(key) <= MAX_KEY_OCTETS:
        raise KeyFileError(f"{source}: key of {len(key)} octets; it must have {MIN_KEY_OCTETS} to {MAX_KEY_OCTETS}")
    return key


def load_key(path: str | os.PathLike) -> bytes:
    """Read the key file at ``path`` (format above); :class:`KeyFileError` with a one-line reason."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise KeyFileError(f"{path}: {info.st_size} bytes is too large for a key file")
        text = path.read_text(encoding="utf-8")
    except KeyFileError:
        raise
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not UTF-8 text") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file is accessible by other users", extra={"path": str(path),
                                                                     "mode": oct(stat.S_IMODE(info.st_mode))})
    return parse_key(text, str(path))
