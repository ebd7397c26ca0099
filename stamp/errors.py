"""The exceptions of the STAMP package.

Every problem with bytes that came from the network is a :class:`StampError`
(or a subclass), whose ``str()`` is a one-line reason. Code that handles
untrusted packets catches :class:`StampError` and nothing else: any other
exception escaping a decoder is a bug.
"""

from __future__ import annotations

from srv6pm.errors import InputError

__all__ = ["AuthenticationError", "KeyFileError", "MalformedPacket", "StampError", "TimestampError"]


class StampError(InputError, ValueError):
    """A STAMP packet, field or setting cannot be used; ``str()`` is the reason."""


class MalformedPacket(StampError):
    """A packet is too short, or a field holds a value its format forbids."""


class TimestampError(MalformedPacket):
    """A timestamp field cannot be converted (e.g. PTP nanoseconds >= 10**9)."""


class AuthenticationError(StampError):
    """The HMAC of an authenticated packet does not verify with the configured key."""


class KeyFileError(StampError):
    """An HMAC key file is missing, unreadable or not in the documented format."""
