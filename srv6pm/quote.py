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

import reprlib

__all__ = ["QUOTE_LIMIT", "quote", "shorten"]

QUOTE_LIMIT = 60  # characters of a quoted value
MESSAGE_LIMIT = 300  # characters of a whole message
_DIGITS_PER_BIT = 0.30103  # log10(2): a whole number's digits from its bits, without converting it


class _Bounded(reprlib.Repr):
    """reprlib's repr, a few levels and members deep: a list or mapping is never shown whole (a YAML file's
    aliases can make one of a few lines that is billions of members deep)."""

    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 6
        self.maxstring = self.maxother = self.maxlong = limit

    def repr_str(self, x, level):
        return _cut(repr(x[: self.maxstring + 1]), self.maxstring)

    def repr_int(self, x, level):
        return _int_text(x, self.maxlong)

    def repr_float(self, x, level):
        return repr(x)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _digits(value: int) -> int:
    """How many decimal digits ``abs(value)`` has, without making its text (which a long one cannot have)."""
    value = abs(value)
    digits = int(value.bit_length() * _DIGITS_PER_BIT) + 1
    while digits > 1 and 10 ** (digits - 1) > value:
        digits -= 1
    while 10**digits <= value:
        digits += 1
    return digits


def _int_text(value: int, limit: int) -> str:
    """``repr(value)`` cut to ``limit``: of a number too long for int -> str (sys.get_int_max_str_digits), its
    leading digits."""
    try:
        text = repr(value)
    except ValueError:
        head = abs(value) // 10 ** (_digits(value) - limit - 1)  # one digit more than is shown: it is cut
        text = f"{'-' if value < 0 else ''}{head}"
    return _cut(text, limit)


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said: ``'aaaa…' (10000 characters)``.

    Strings are quoted as Python's repr quotes them (control characters escaped, so the
    message stays one line); other values (numbers, lists) are shown as repr shows them, a list or
    mapping only a few members and levels deep (a YAML file's aliases can make one of a few lines
    that is billions of members deep), and a whole number of any length.
    """
    if isinstance(value, (str, bytes)):
        text = repr(value[: limit + 1])
        if len(text) <= limit:
            return text
        unit = "bytes" if isinstance(value, bytes) else "characters"
        return f"{text[: limit - 1]}… ({len(value)} {unit})"
    if isinstance(value, int) and not isinstance(value, bool):
        text = _int_text(value, limit)
        return text if not text.endswith("…") else f"{text} ({_digits(value)} digits)"
    if isinstance(value, (bool, float)) or value is None:
        return _cut(repr(value), limit)
    text = _Bounded(limit).repr(value)
    if len(text) <= limit and "..." not in text:
        return text
    size = f"{len(value)} members" if hasattr(value, "__len__") else f"{len(text)} characters"
    return f"{_cut(text, limit)} ({size})"


def shorten(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` as one line (whitespace runs made one space) of at most ``limit`` characters."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"
