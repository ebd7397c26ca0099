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
intent is what the node holds. Besides the key, two kinds have a unique
*secondary key* that the API checks conflicts with (:meth:`Intent.holder`, a
dictionary lookup): a policy's destination, and a flow's match
(role, source prefix, destination prefix; transit monitors have none).

Persistence (with a path; the exporter keeps it next to its state file,
:func:`path_for`): one SQLite database in WAL mode with one row per object,
``objects(kind, key, body)``, the key as JSON text and the body in
protobuf's JSON mapping with the proto's field names. A change writes only
its own row (an upsert or a delete) and commits, so its cost does not depend
on how many objects are applied; :meth:`Intent.held` groups the changes of a
block (a batch, the re-apply at start) into one transaction. A commit is
durable (``synchronous=FULL``): a crash keeps every committed change and
none of an uncommitted one.

An exporter that finds the JSON file of earlier versions
(``<state_file>.intent.json``, ``{"v": 1, "<kind>": [{...}], ...}``) and no
database imports it once and renames it ``<state_file>.intent.json.migrated``.
A database that cannot be opened is moved aside (``.corrupt``) with a warning
and the exporter starts empty, as with an unreadable JSON file before.

Thread safe. Messages are copied in and out (protobuf messages are mutable).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable

from google.protobuf import json_format

from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

__all__ = ["Intent", "KINDS", "kind_of", "legacy_path_for", "path_for"]

log = logging.getLogger("srv6pm.exporter.intent")

VERSION = 1
# In the order a restart re-applies them: routes first, then what uses them.
KINDS: dict[str, type] = {"local_sids": pb.LocalSid, "policies": pb.Policy, "flows": pb.FlowMonitor,
                          "stamp_reflector": pb.StampReflector, "stamp_sessions": pb.StampSession}
_REFS = {pb.LocalSidRef: "local_sids", pb.PolicyRef: "policies", pb.FlowMonitorRef: "flows",
         pb.StampReflectorRef: "stamp_reflector", pb.StampSessionRef: "stamp_sessions"}
_VALIDATE = {"local_sids": validate.local_sid, "policies": validate.policy, "flows": validate.flow_monitor,
             "stamp_reflector": validate.stamp_reflector, "stamp_sessions": validate.stamp_session}


def _flow_match(f: pb.FlowMonitor):
    return None if f.role == pb.ROLE_TRANSIT else (f.role, f.source_prefix, f.destination_prefix)


# kind -> the unique secondary key of an object of that kind (None: it has none)
SECONDARY: dict[str, Callable] = {"policies": lambda p: p.destination, "flows": _flow_match}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,
                                    PRIMARY KEY (kind, key)) WITHOUT ROWID;
"""


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
    """Where the intent of an exporter with ``state_file`` is kept: ``<state_file>.intent.db`` (None: none)."""
    return Path(f"{state_file}.intent.db") if state_file else None


def legacy_path_for(path: str | Path) -> Path:
    """The JSON file that earlier versions kept instead of the database at ``path``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".db") + ".json")


def _copy(message):
    out = type(message)()
    out.CopyFrom(message)
    return out


def _key_text(key) -> str:
    return json.dumps(list(key) if isinstance(key, tuple) else key)


_FD = json_format.descriptor.FieldDescriptor
# Field types whose value is its own JSON in protobuf's JSON mapping (MessageToDict): strings, booleans, 32-bit
# integers; enums are their value's name.
_PLAIN = {_FD.TYPE_STRING, _FD.TYPE_BOOL, _FD.TYPE_INT32, _FD.TYPE_UINT32, _FD.TYPE_SINT32, _FD.TYPE_FIXED32,
          _FD.TYPE_SFIXED32}


def _mapping(message) -> dict:
    """``json_format.MessageToDict(message, preserving_proto_field_name=True)``, made directly for the messages
    of plain fields (all but STAMP sessions, which have floats): that function costs more than the rest of an
    object's row, and a batch writes thousands of rows (a test compares the two)."""
    out = {}
    for field, value in message.ListFields():  # the set fields, in field number order, as MessageToDict has them
        kind = field.type
        if kind == _FD.TYPE_ENUM:
            names = field.enum_type.values_by_number
            if field.is_repeated or value not in names:
                return json_format.MessageToDict(message, preserving_proto_field_name=True)
            out[field.name] = names[value].name
        elif kind in _PLAIN:
            out[field.name] = list(value) if field.is_repeated else value
        else:
            return json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def _body(message) -> str:
    return json.dumps(_mapping(message), separators=(",", ":"))


class Intent:
    """Applied objects by kind and key; persisted to the database at ``path`` (None: in memory only)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.RLock()
        self._objects: dict[str, dict] = {kind: {} for kind in KINDS}
        self._secondary: dict[str, dict] = {kind: {} for kind in SECONDARY}
        self._held = 0
        self._db: sqlite3.Connection | None = None

    # -- the database -------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection | None:
        """The connection (opened, created or migrated at first use); None without a path or if it cannot open."""
        if self.path is None or self._db is not None:
            return self._db
        fresh = not self.path.exists()
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.warning("applied state unreadable, moved aside, starting empty",
                        extra={"path": str(self.path), "moved_to": str(aside), "error": str(exc)})
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            fresh = True
            try:
                self._db = self._connect()
            except (sqlite3.Error, OSError) as exc2:
                log.warning("applied state cannot be kept", extra={"path": str(self.path), "error": str(exc2)})
                return None
        except OSError as exc:
            log.warning("applied state cannot be kept", extra={"path": str(self.path), "error": str(exc)})
            return None
        if fresh:
            self._migrate()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None  # _open() connects only with a path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('version', ?)", (str(VERSION),))
            elif row[0] != str(VERSION):
                raise sqlite3.DatabaseError(f"version {row[0]}, this exporter knows version {VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        """Import the JSON file of earlier versions once, then rename it (``.migrated``)."""
        assert self.path is not None and self._db is not None  # _open() migrates what it just connected
        legacy = legacy_path_for(self.path)
        try:
            doc = json.loads(legacy.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("old applied state unreadable, not migrated", extra={"path": str(legacy), "error": str(exc)})
            return
        if not isinstance(doc, dict) or doc.get("v") != 1:
            log.warning("old applied state of unknown format, not migrated", extra={"path": str(legacy)})
            return
        rows = []
        for kind in KINDS:
            items = doc.get(kind, [])
            for i, item in enumerate(items if isinstance(items, list) else []):
                message = self._parse(kind, item, f"{legacy}: {kind}[{i}]")
                if message is not None:
                    rows.append((kind, _key_text(validate.key_of(message)), _body(message)))
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?)", rows)
        os.replace(legacy, legacy.with_name(legacy.name + ".migrated"))
        log.warning("applied state migrated from JSON", extra={"from": str(legacy), "to": str(self.path),
                                                                "objects": len(rows)})

    @staticmethod
    def _parse(kind: str, item, where: str):
        try:
            return _VALIDATE[kind](json_format.ParseDict(item, KINDS[kind]()))
        except (json_format.ParseError, ValueError, TypeError) as exc:
            log.warning("applied object unreadable, dropped", extra={"where": where, "error": str(exc)})
            return None

    def _write(self, sql: str, args: tuple) -> None:
        db = self._open()
        if db is None:
            return
        try:
            db.execute(sql, args)
            if not self._held:
                db.commit()
        except sqlite3.Error as exc:
            # the node holds the change already; the object is written again when it next changes
            log.warning("applied state not saved", extra={"path": str(self.path), "error": str(exc)})

    @contextlib.contextmanager
    def held(self):
        """Make the changes of the block one transaction (one commit at the end), e.g. a batch or the start."""
        with self._lock:
            if self._held == 0 and (db := self._open()) is not None and not db.in_transaction:
                db.execute("BEGIN")
            self._held += 1
        try:
            yield self
        finally:
            with self._lock:
                self._held -= 1
                if self._held == 0 and self._db is not None and self._db.in_transaction:
                    try:
                        self._db.commit()
                    except sqlite3.Error as exc:
                        log.warning("applied state not saved", extra={"path": str(self.path), "error": str(exc)})

    def close(self) -> None:
        """Close the database (idempotent); the intent stays usable in memory and reopens it when it changes."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- reading ------------------------------------------------------------------------
    def get(self, message):
        """The applied object with the kind and key of ``message`` (an object or a ``*Ref``), or None."""
        kind = kind_of(message)
        with self._lock:
            found = self._objects[kind].get(validate.key_of(message))
            return _copy(found) if found is not None else None

    def holder(self, message):
        """The key of the applied object, other than ``message``'s own, with ``message``'s secondary key, or None.

        A dictionary lookup: a policy with the same destination, a flow
        monitor with the same role and match.
        """
        kind = kind_of(message)
        secondary = SECONDARY.get(kind)
        value = secondary(message) if secondary else None
        if value is None:
            return None
        with self._lock:
            key = self._secondary[kind].get(value)
        return key if key is not None and key != validate.key_of(message) else None

    def items(self, kind: str) -> list:
        """The applied objects of ``kind``, sorted by key."""
        with self._lock:
            return [_copy(m) for _, m in sorted(self._objects[kind].items(), key=lambda kv: str(kv[0]))]

    def count(self, kind: str) -> int:
        """How many objects of ``kind`` are applied."""
        with self._lock:
            return len(self._objects[kind])

    def all(self) -> list:
        """Every applied object, in re-apply order (:data:`KINDS`)."""
        with self._lock:
            return [m for kind in KINDS for m in self.items(kind)]

    # -- changing -----------------------------------------------------------------------
    def put(self, message) -> None:
        """Record ``message`` (a normalised object) as applied, replacing the one with its key; persist its row."""
        kind = kind_of(message)
        key = validate.key_of(message)
        with self._lock:
            old = self._objects[kind].get(key)
            if old is not None:
                self._unindex(kind, key, old)
            self._objects[kind][key] = _copy(message)
            if kind in SECONDARY and (value := SECONDARY[kind](message)) is not None:
                self._secondary[kind][value] = key
            self._write("INSERT OR REPLACE INTO objects VALUES (?, ?, ?)", (kind, _key_text(key), _body(message)))

    def remove(self, message) -> None:
        """Forget the object with the kind and key of ``message`` and delete its row (absent: nothing to forget)."""
        kind = kind_of(message)
        key = validate.key_of(message)
        with self._lock:
            old = self._objects[kind].pop(key, None)
            if old is not None:
                self._unindex(kind, key, old)
            self._write("DELETE FROM objects WHERE kind = ? AND key = ?", (kind, _key_text(key)))

    def _unindex(self, kind: str, key, message) -> None:
        if kind in SECONDARY:
            value = SECONDARY[kind](message)
            if value is not None and self._secondary[kind].get(value) == key:
                del self._secondary[kind][value]

    # -- persistence --------------------------------------------------------------------
    def load(self) -> list:
        """The objects persisted at :attr:`path`, validated, in re-apply order; [] without a path or objects.

        Does not change this intent in memory: the caller re-applies each
        object and :meth:`put` s those that still apply (and :meth:`remove` s
        the others). An unreadable row is deleted with a warning.
        """
        with self._lock:
            db = self._open()
            if db is None:
                return []
            try:
                rows = db.execute("SELECT kind, key, body FROM objects").fetchall()
            except sqlite3.Error as exc:
                log.warning("applied state unreadable, starting empty", extra={"path": str(self.path),
                                                                               "error": str(exc)})
                return []
            by_kind: dict[str, list] = {kind: [] for kind in KINDS}
            bad = []
            for kind, key, body in rows:
                message = None
                if kind in KINDS:
                    try:
                        message = self._parse(kind, json.loads(body), f"{self.path}: {kind} {key}")
                    except ValueError as exc:
                        log.warning("applied object unreadable, dropped", extra={"where": f"{kind} {key}",
                                                                                 "error": str(exc)})
                if message is None or _key_text(validate.key_of(message)) != key:
                    bad.append((kind, key))
                if message is not None:
                    by_kind[kind].append((key, message))
            if bad:
                self._write_many("DELETE FROM objects WHERE kind = ? AND key = ?", bad)
            return [m for kind in KINDS for _, m in sorted(by_kind[kind], key=lambda km: km[0])]

    def _write_many(self, sql: str, rows: list) -> None:
        db = self._open()
        if db is None:
            return
        try:
            with db:
                db.executemany(sql, rows)
        except sqlite3.Error as exc:
            log.warning("applied state not saved", extra={"path": str(self.path), "error": str(exc)})
