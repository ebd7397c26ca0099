"""Checks of what a command is given, before it builds or connects to anything.

Every function checks one value and returns it (normalised where said), or
raises :class:`~srv6pm.config.ConfigError` with one line that starts with
``name`` (the flag, environment variable or field it came from) and quotes
the value (cut short, :func:`srv6pm.quote.quote`). The commands map that to
exit status 2. Only syntax and the local file system are looked at: no name is
resolved and nothing is connected to (:mod:`srv6pm.reach` does that, after).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path

from srv6pm.config import ConfigError
from srv6pm.quote import quote

__all__ = ["address", "count", "creatable", "host", "host_port", "host_ports", "new_file", "readable_file", "seconds",
           "url"]

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_DOTTED = re.compile(r"[0-9.]+\Z")


def seconds(value: float | None, name: str, *, zero: bool = False, optional: bool = False) -> float | None:
    """A finite number of seconds, > 0 (>= 0 with ``zero``); None passes with ``optional``."""
    if value is None and optional:
        return None
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        need = "a finite number of seconds >= 0" if zero else "a positive, finite number of seconds"
        raise ConfigError(f"{name} {quote(value)}: must be {need}")
    return value


def count(value: int | None, name: str, low: int, high: int | None = None, what: str = "") -> int:
    """An integer from ``low`` to ``high`` (no upper bound if None)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} {quote(value)}: must be an integer {span}{what}")
    return value


def host(value: str, name: str) -> str:
    """A host: an IPv4 or IPv6 address (brackets allowed around IPv6) or a DNS name (RFC 1123 syntax).

    ``999.1.1.1`` is refused: a name of digits and dots can only be an IPv4 address.
    """
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{name} {quote(value)}: not a host name or address")
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if bare != text or ":" in bare:
        raise ConfigError(f"{name} {quote(value)}: not an IPv6 address")
    if _DOTTED.match(bare):
        raise ConfigError(f"{name} {quote(value)}: not an IPv4 address")
    name_part = bare[:-1] if bare.endswith(".") else bare
    labels = name_part.split(".")
    if len(name_part) > 253 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ConfigError(f"{name} {quote(value)}: not a host name (letters, digits, '-' and '.') or address")
    return bare


def address(value: str, name: str) -> str:
    """An IPv4 or IPv6 address (no name), as given."""
    try:
        ipaddress.ip_address(value.strip("[]") if isinstance(value, str) else value)
    except ValueError:
        raise ConfigError(f"{name} {quote(value)}: not an IP address") from None
    return value


def host_port(value: str, name: str, *, any_port: bool = False, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT``): the host and the port (1..65535; 0 too with ``any_port``).

    With ``default_port``, a bare host (``kafka1``, ``[::1]``) stands for ``HOST:default_port``.
    """
    text = value.strip() if isinstance(value, str) else ""
    if default_port is not None and (text.endswith("]") or (text and ":" not in text)):
        text = f"{text}:{default_port}"
    where, _, port = text.rpartition(":")
    bracketed = where.startswith("[") and where.endswith("]")
    if not where or not port.isdigit() or (":" in where and not bracketed) or where.startswith("[") != bracketed:
        raise ConfigError(f"{name} {quote(value)}: not HOST:PORT (an IPv6 address in brackets: [::1]:9092)")
    number = int(port)
    if not (0 if any_port else 1) <= number <= 65535:
        raise ConfigError(f"{name} {quote(value)}: port {number} is not from {0 if any_port else 1} to 65535")
    return host(where, name), number


def host_ports(value: str, name: str, default_port: int | None = None) -> list[tuple[str, int]]:
    """A comma-separated list of ``HOST:PORT`` (Kafka bootstrap servers; see :func:`host_port`)."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else [""]
    if not all(parts):
        raise ConfigError(f"{name} {quote(value)}: an empty server in the list (HOST:PORT[,HOST:PORT...])")
    return [host_port(p, name, default_port=default_port) for p in parts]


def url(value: str, name: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """A URL of one of ``schemes`` with a valid host and port (path allowed)."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ConfigError(f"{name} {quote(value)}: not a URL: {exc}") from None
    if "@" in parts.netloc:  # user:password@: never quoted back, never used
        shown = parts._replace(netloc="…@" + parts.netloc.rpartition("@")[2]).geturl()
        raise ConfigError(f"{name} {quote(shown)}: a URL carries no user name or password here: give them by the "
                          "environment or a file (see --help)")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{name} {quote(value)}: not a URL: {exc}") from None
    if parts.scheme not in schemes:
        raise ConfigError(f"{name} {quote(value)}: must start with " + " or ".join(f"{s}://" for s in schemes))
    if not parts.hostname:
        raise ConfigError(f"{name} {quote(value)}: names no host")
    try:
        host(parts.hostname, "")
    except ConfigError as exc:
        raise ConfigError(f"{name} {quote(value)}: {str(exc).partition(': ')[2]}") from None
    if port == 0:
        raise ConfigError(f"{name} {quote(value)}: port 0 is not a port to connect to")
    return value


def readable_file(path: str | os.PathLike, name: str) -> str:
    """A path to an existing, readable regular file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{name} {quote(str(path))}: no such file")
    if not p.is_file():
        raise ConfigError(f"{name} {quote(str(path))}: not a file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{name} {quote(str(path))}: not readable")
    return str(path)


def new_file(path: str | os.PathLike, name: str) -> str:
    """A path a file can be written to: its folder exists and is writable, and it is no folder itself."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ConfigError(f"{name} {quote(str(path))}: is a folder, not a file")
    if not folder.is_dir():
        raise ConfigError(f"{name} {quote(str(path))}: folder {quote(str(folder))} does not exist")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{name} {quote(str(path))}: not writable")
    return str(path)


def creatable(path: str | os.PathLike, name: str, *, folder: bool = False) -> str:
    """A path the command makes when it needs it, with the folders above it (``mkdir -p``): a file (or with
    ``folder`` a folder) that is there already, or one that the nearest folder above it that exists lets it make."""
    p = Path(path)
    what = "folder" if folder else "file"
    if p.exists():
        if p.is_dir() != folder:
            raise ConfigError(f"{name} {quote(str(path))}: is a {'file' if folder else 'folder'}, not a {what}")
        if not os.access(p, os.W_OK | (os.X_OK if folder else 0)):
            raise ConfigError(f"{name} {quote(str(path))}: not writable")
        return str(path)
    above = p.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise ConfigError(f"{name} {quote(str(path))}: {quote(str(above))} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} {quote(str(path))}: folder {quote(str(above))} is not writable")
    return str(path)
