"""The exporter's applied state (its *intent*): every object applied over the API and not removed.

Objects are the southbound API's messages, normalised by
:mod:`srv6pm.southbound.validate`, kept by kind and key
(:func:`~srv6pm.southbound.validate.key_of`):

=================  ======================  =====================
kind               message                 key
=================  ======================  =====================
``local_sids``     ``LocalSid``            sid
``policies``       ``Policy``              name
``flows``          ``FlowMonitor``         (flow, role)
``stamp_sessions`` ``StampSession``        name
``stamp_reflector`` ``StampReflector``     ``"reflector"``
=================  ======================  =====================

The caller changes the intent only after the change took effect, so the
intent is what the node holds. With a path, every change is persisted at once
(write to a temporary file, fsync, rename: a crash leaves the old or the new
file, never a torn one) as JSON::

    {"v": 1, "local_sids": [{...}], "policies": [...], "flows": [...],
     "stamp_sessions": [...], "stamp_reflector": [...]}

each object in protobuf's JSON mapping with the proto's field names. The
exporter keeps it next to its state file (:func:`path_for`) and re-applies it
at start, so a restart leaves the node as it was.

Thread safe. Messages are copied in and out (protobuf messages are mutable).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path

from google.protobuf import json_format

from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

__all__ = ["Intent", "KINDS", "kind_of", "path_for"]

log = logging.getLogger("srv6pm.exporter.intent")

VERSION = 1
# In the order a restart re-applies them: routes first, then what uses them.
KINDS: dict[str, type] = {"local_sids": pb.LocalSid, "policies": pb.Policy, "flows": pb.FlowMonitor,
                          "stamp_reflector": pb.StampReflector, "stamp_sessions": pb.StampSession}
_REFS = {pb.LocalSidRef: "local_sids", pb.PolicyRef: "policies", pb.FlowMonitorRef: "flows",
         pb.StampReflectorRef: "stamp_reflector", pb.StampSessionRef: "stamp_sessions"}
_VALIDATE = {"local_sids": validate.local_sid, "policies": validate.policy, "flows": validate.flow_monitor,
             "stamp_reflector": validate.stamp_reflector, "stamp_sessions": validate.stamp_session}


def kind_of(message) -> str:
    """The kind of an object or ``*Ref`` message; ``TypeError`` for anything else."""
    for kind, cls in KINDS.items():
        if isinstance(message, cls):
            return kind
    try:
        return _REFS[type(message)]
    except KeyError:
        raise TypeError(f"not an object of the southbound API: {type(message).__name__}") from None


def path_for(state_file: str | Path | None) -> Path | None:
    """Where the intent of an exporter with ``state_file`` is kept: ``<state_file>.intent.json`` (None: none)."""
    return Path(f"{state_file}.intent.json") if state_file else None


def _copy(message):
    out = type(message)()
    out.CopyFrom(message)
    return out


class Intent:
    """Applied objects by kind and key; persisted to ``path`` (None: in memory only)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.RLock()
        self._objects: dict[str, dict] = {kind: {} for kind in KINDS}
        self._held = 0

    @contextlib.contextmanager
    def held(self):
        """Defer persisting until the block ends (one write at the end), e.g. while re-applying at start."""
        with self._lock:
            self._held += 1
        try:
            yield self
        finally:
            with self._lock:
                self._held -= 1
                if self._held == 0:
                    self.save()

    # -- reading ------------------------------------------------------------------------
    def get(self, message):
        """The applied object with the kind and key of ``message`` (an object or a ``*Ref``), or None."""
        kind = kind_of(message)
        with self._lock:
            found = self._objects[kind].get(validate.key_of(message))
            return _copy(found) if found is not None else None

    def items(self, kind: str) -> list:
        """The applied objects of ``kind``, sorted by key."""
        with self._lock:
            return [_copy(m) for _, m in sorted(self._objects[kind].items(), key=lambda kv: str(kv[0]))]

    def all(self) -> list:
        """Every applied object, in re-apply order (:data:`KINDS`)."""
        with self._lock:
            return [m for kind in KINDS for m in self.items(kind)]

    # -- changing -----------------------------------------------------------------------
    def put(self, message) -> None:
        """Record ``message`` (a normalised object) as applied, replacing the one with its key; persist."""
        kind = kind_of(message)
        with self._lock:
            self._objects[kind][validate.key_of(message)] = _copy(message)
            self.save()

    def remove(self, message) -> None:
        """Forget the object with the kind and key of ``message``; persist. Absent: nothing happens."""
        kind = kind_of(message)
        with self._lock:
            if self._objects[kind].pop(validate.key_of(message), None) is not None:
                self.save()

    # -- persistence --------------------------------------------------------------------
    def save(self) -> None:
        """Write the intent to :attr:`path` atomically (nothing without a path).

        A write that fails is logged, not raised: the node holds the change
        already, and the next change writes the whole intent again.
        """
        if self.path is None:
            return
        with self._lock:
            if self._held:
                return
            doc = {"v": VERSION}
            for kind in KINDS:
                doc[kind] = [json_format.MessageToDict(m, preserving_proto_field_name=True)
                             for m in self.items(kind)]
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "w", encoding="utf-8") as fh:
                    json.dump(doc, fh, indent=1)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("applied state not saved", extra={"path": str(self.path), "error": str(exc)})

    def load(self) -> list:
        """The objects persisted at :attr:`path`, validated, in re-apply order; [] if there is no file.

        Does not change this intent: the caller re-applies each object and
        :meth:`put` s those that still apply. An unreadable file or object is
        skipped with a warning.
        """
        if self.path is None:
            return []
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("applied state unreadable, starting empty", extra={"path": str(self.path), "error": str(exc)})
            return []
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            log.warning("applied state of unknown format, starting empty", extra={"path": str(self.path)})
            return []
        out = []
        for kind, cls in KINDS.items():
            items = doc.get(kind, [])
            for i, item in enumerate(items if isinstance(items, list) else []):
                try:
                    out.append(_VALIDATE[kind](json_format.ParseDict(item, cls())))
                except (json_format.ParseError, ValueError, TypeError) as exc:
                    log.warning("applied object unreadable, dropped",
                                extra={"path": str(self.path), "kind": kind, "index": i, "error": str(exc)})
        return out
