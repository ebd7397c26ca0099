"""The exporter's bounded on-disk buffer of records not yet published (the spool).

Records the exporter could not publish (the broker unreachable, a publish that
failed) are kept here, in order, until they are published. The spool is a
directory of segment files ``<16-digit sequence>.seg``, oldest first; each
segment holds the records of one write (typically one guard time's records,
i.e. whole periods; a larger write is cut into segments of at most
``segment_bytes``), and is written to a temporary file, fsynced and renamed,
so a crash leaves a segment whole or absent, never torn. The head segment is
the only one ever rewritten (:meth:`Spool.replace_head`, also atomic), so
after any crash the records on disk are still in their original order.

Bound: the segments' total size never exceeds ``max_bytes``. A write that
would pass it first drops the oldest segments (never the one being
published, see :meth:`Spool.head`, nor a head whose publication is in doubt,
i.e. with floors: it may be on the broker already); a write larger than the
bound by itself (a single huge record) is dropped. :meth:`Spool.append` returns how many records were dropped,
so the caller counts them.

``floors.json`` beside the segments keeps, per partition, an offset below
which none of the head segment's records can have been written: set when a
publish of them failed in a way that leaves open whether the broker wrote
them (a timeout), so that the next attempt can first read the partition from
there and leave out what is already on it (see :mod:`.outbox`). Segment
format: ``SPL1`` and the record count (u32), then per record the topic's
length (u16), the partition (i32, -1: by key), the key's length (i32, -1: no
key) and the value's length (u32), each followed by its bytes.
"""

from __future__ import annotations

import builtins
import json
import logging
import struct
from pathlib import Path

from kafka.structs import TopicPartition

from srv6pm import atomicfile
from srv6pm.errors import UnavailableError
from srv6pm.publish import Send

__all__ = ["Spool", "SpoolError"]

log = logging.getLogger("srv6pm.exporter.spool")

_MAGIC = b"SPL1"
_HEAD = struct.Struct(">4sI")
_RECORD = struct.Struct(">HiiI")
_FLOORS = "floors.json"


class SpoolError(UnavailableError, OSError):
    """The spool directory cannot be used (not writable, a segment unreadable)."""


def encode(sends: list[Send]) -> bytes:
    """One segment's bytes for ``sends`` (see the module docstring for the format)."""
    parts = [_HEAD.pack(_MAGIC, len(sends))]
    for s in sends:
        topic = s.topic.encode()
        parts.append(_RECORD.pack(len(topic), -1 if s.partition is None else s.partition,
                                  -1 if s.key is None else len(s.key), len(s.value)))
        parts += [topic, s.key or b"", s.value]
    return b"".join(parts)


def decode(data: bytes, source: str = "segment") -> list[Send]:
    """The records of a segment's bytes; :class:`SpoolError` naming ``source`` if they are not one."""
    try:
        magic, count = _HEAD.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError("not a spool segment")
        out, at = [], _HEAD.size
        for _ in range(count):
            topic_len, partition, key_len, value_len = _RECORD.unpack_from(data, at)
            at += _RECORD.size
            topic = data[at:at + topic_len].decode()
            at += topic_len
            key = None if key_len < 0 else data[at:at + key_len]
            at += max(key_len, 0)
            value = data[at:at + value_len]
            at += value_len
            if at > len(data):
                raise ValueError("truncated")
            out.append(Send(topic, None if partition < 0 else partition, key, value))
        return out
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise SpoolError(f"{source}: {exc}") from None


class Spool:
    """Records in order on disk, at most ``max_bytes`` of segments; see the module docstring. Not thread-safe."""

    def __init__(self, directory: str | Path, max_bytes: int, segment_bytes: int | None = None):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(1, min(2**20, max_bytes // 4))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for leftover in self.directory.glob(".*"):  # temporary files of writes the process did not finish
                if leftover.is_file():
                    leftover.unlink()
            names = sorted(p.name for p in self.directory.glob("*.seg"))
            self._segments: list[tuple[str, int, int]] = []  # (name, bytes, records), oldest first
            for name in names:
                path = self.directory / name
                with open(path, "rb") as fh:
                    head = fh.read(_HEAD.size)
                if len(head) < _HEAD.size or head[:4] != _MAGIC:
                    raise SpoolError(f"{path}: not a spool segment")
                self._segments.append((name, path.stat().st_size, _HEAD.unpack(head)[1]))
        except SpoolError:
            raise
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory}: {exc.strerror or exc}") from None
        self._next = int(names[-1].split(".")[0]) + 1 if names else 0
        self._held: str | None = None
        self.discarded = 0  # records of unreadable segments removed
        self.floors = self._load_floors()

    # -- state ------------------------------------------------------------------------
    @property
    def records(self) -> int:
        """Records in the spool."""
        return sum(n for _, _, n in self._segments)

    @property
    def bytes(self) -> int:
        """Bytes of the spool's segments."""
        return sum(b for _, b, _ in self._segments)

    def __bool__(self) -> bool:
        return bool(self._segments)

    # -- writing ----------------------------------------------------------------------
    def append(self, sends: list[Send]) -> int:
        """Add ``sends`` after every record in the spool, durably; returns how many records were dropped to fit.

        Drops the oldest segments first (not the held one, nor the head while
        floors are kept); a part of ``sends`` that cannot fit even so is
        dropped (and counted).
        """
        chunk: list[Send] = []
        dropped, size = 0, _HEAD.size
        for s in sends:
            n = _RECORD.size + len(s.topic.encode()) + len(s.key or b"") + len(s.value)
            if chunk and size + n > self.segment_bytes:
                dropped += self._append(chunk)
                chunk, size = [], _HEAD.size
            chunk.append(s)
            size += n
        return dropped + (self._append(chunk) if chunk else 0)

    def _append(self, sends: list[Send]) -> int:
        data = encode(sends)
        if len(data) > self.max_bytes:
            return len(sends)
        dropped = 0
        while self.bytes + len(data) > self.max_bytes:
            protected = {self._held, self._segments[0][0] if self.floors and self._segments else None}
            victim = next((seg for seg in self._segments if seg[0] not in protected), None)
            if victim is None:
                return dropped + len(sends)
            self._unlink(victim[0])
            self._segments.remove(victim)
            dropped += victim[2]
        name = f"{self._next:016d}.seg"
        self._next += 1
        self._write(name, data)
        self._segments.append((name, len(data), len(sends)))
        return dropped

    def head(self) -> tuple[str, list[Send]] | None:
        """(name, records) of the oldest segment, which stays held (never dropped) until released; None: empty.

        A segment that cannot be read is removed with an error line, its
        records counted in :attr:`discarded`, and the next one is the head.
        """
        while self._segments:
            name, _, count = self._segments[0]
            path = self.directory / name
            try:
                sends = decode(path.read_bytes(), str(path))
            except (OSError, SpoolError) as exc:
                log.error("spool segment unreadable, its records dropped", extra={"path": str(path), "error": str(exc),
                                                                                 "records": count})
                self._unlink(name)
                del self._segments[0]
                self.discarded += count
                continue
            self._held = name
            return name, sends
        return None

    def replace_head(self, name: str, remaining: list[Send]) -> None:
        """Segment ``name`` (the held head) now holds only ``remaining`` (none: it is removed); releases it."""
        self._held = None
        index = next((i for i, seg in enumerate(self._segments) if seg[0] == name), None)
        if index is None:
            return
        if not remaining:
            self._unlink(name)
            del self._segments[index]
            return
        data = encode(remaining)
        self._write(name, data)
        self._segments[index] = (name, len(data), len(remaining))

    def release(self) -> None:
        """The held segment may be dropped again."""
        self._held = None

    # -- floors -----------------------------------------------------------------------
    def set_floors(self, floors: dict[TopicPartition, int]) -> None:
        """Merge ``floors`` into the kept ones (the lower offset wins), durably."""
        merged = dict(self.floors)
        for tp, offset in floors.items():
            merged[tp] = min(offset, merged.get(tp, offset))
        if merged != self.floors:
            self._save_floors(merged)

    def clear_floors(self) -> None:
        if self.floors:
            self._save_floors({})

    def _load_floors(self) -> dict[TopicPartition, int]:
        path = self.directory / _FLOORS
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return {TopicPartition(t, int(p)): int(o) for t, parts in doc.items() for p, o in parts.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning("spool floors unreadable: the oldest buffered records may be published twice",
                        extra={"path": str(path), "error": str(exc)})
            return {}

    def _save_floors(self, floors: dict[TopicPartition, int]) -> None:
        doc: dict[str, dict[str, int]] = {}
        for tp, offset in sorted(floors.items()):
            doc.setdefault(tp.topic, {})[str(tp.partition)] = offset
        atomicfile.replace(self.directory / _FLOORS, json.dumps(doc))
        self.floors = dict(floors)

    # -- files ------------------------------------------------------------------------
    def _write(self, name: str, data: builtins.bytes) -> None:  # builtins: the class has a bytes property
        try:
            atomicfile.replace(self.directory / name, data)
        except OSError as exc:
            raise SpoolError(f"spool {self.directory / name}: {exc.strerror or exc}") from None

    def _unlink(self, name: str) -> None:
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            pass
