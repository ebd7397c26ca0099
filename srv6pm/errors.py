"""The root of srv6pm's errors.

Every error that srv6pm raises on purpose derives from :class:`Srv6pmError`, so
that a caller (a command line, an RPC handler) can tell the product's own,
already-explained failures from programming errors with one ``except``.
"""

from __future__ import annotations

__all__ = ["Srv6pmError"]


class Srv6pmError(Exception):
    """An error srv6pm raises on purpose; ``str()`` is a message for the operator."""
