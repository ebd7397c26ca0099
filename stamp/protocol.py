"""STAMP protocol constants that more than one part of srv6pm needs, each written here once.

:data:`STAMP_PORT` is the well-known UDP port of STAMP (RFC 8762 §4.1: 862,
assigned by IANA). A Session-Reflector listens on it and a Session-Sender
sends to it unless configured otherwise; the southbound API's port 0, an
exporter configuration file or the lab that gives no port, all mean this one.

:data:`DEFAULT_TIMEOUT_S` is how long a Session-Sender waits for a reply
before it counts the test packet as lost, unless told otherwise (the
southbound API's ``timeout_s`` 0, a file without ``timeout``, the
``srv6pm stamp sender`` command).
"""

from __future__ import annotations

__all__ = ["DEFAULT_TIMEOUT_S", "STAMP_PORT"]

STAMP_PORT = 862
DEFAULT_TIMEOUT_S = 2.0
