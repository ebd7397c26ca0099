"""Input quoted in messages, cut to a readable length.

Every message that quotes what it was given (a flag's value, a field of a
configuration file, a member of a Kafka record) quotes it through
:func:`quote`, so a 10 kB string or a 300-digit number makes a message of one
readable line, not a screenful::

    raise ConfigError(f"--grpc-host {quote(value)}: not a host name or address")

:func:`shorten` does the same for a whole message (one line, at most ``limit``
characters), for messages that embed text from elsewhere (a library's error).
"""

from __future__ import annotations

__all__ = ["QUOTE_LIMIT", "quote", "shorten"]

QUOTE_LIMIT = 60  # characters of a quoted value
MESSAGE_LIMIT = 300  # characters of a whole message


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said: ``'aaaa…' (10000 characters)``.

    Strings are quoted as Python's repr quotes them (control characters escaped, so the
    message stays one line); other values (numbers, lists) are shown as repr shows them.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, bool) or not isinstance(value, (int, str, bytes)):
        size = f"{len(text)} characters"
    elif isinstance(value, int):
        size = f"{len(str(abs(value)))} digits"
    elif isinstance(value, bytes):
        size = f"{len(value)} bytes"
    else:
        size = f"{len(value)} characters"
    return f"{text[: limit - 1]}… ({size})"


def shorten(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` as one line (whitespace runs made one space) of at most ``limit`` characters."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"
