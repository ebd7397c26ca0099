"""FlowMonIDs (RFC 9343): one per configured flow, allocated by the collector, kept in a state file.

Every flow has one, whatever the data plane: with ebpf every counting point
of a flow recognises the flow's packets by the FlowMonID in their
Alternate-Marking option, so the id is the flow's name in the data plane;
with nftables the exporters count by prefixes and only name the flow's
counters records (and so its loss results) with it. :class:`Allocator` hands
them out under this contract:

* every flow given to :meth:`Allocator.allocate` has an id in
  ``1..max_id`` (:data:`srv6pm.southbound.validate.FLOWMON_ID_MAX`,
  1048575, by default), and no two flows of the domain share one;
* a flow keeps its id for as long as it is configured: across
  configuration reloads and across collector restarts (the allocation is
  persisted before :meth:`~Allocator.allocate` returns);
* an id is handed out again only after its flow is gone (no longer in a
  list given to ``allocate``); never-used ids come first, and freed ones
  are recycled, the longest-freed first, only once every id has been used;
* more flows than ids is :class:`FlowMonError`, and nothing changes.

Flows are identified by name: a flow whose other settings change keeps its
id; a renamed flow is a new flow.

The state file (:data:`STATE_FILE` in the collector's state directory) is
JSON, replaced atomically (temporary file, fsync, rename, fsync of the
directory) at every change::

    {"v": 1, "next": 4, "flows": {"f1": 1, "f2": 3}, "released": [2]}

``next`` is the lowest never-used id (``max_id + 1`` once all have been
used), ``flows`` the ids in use, ``released`` the freed ids, longest-freed
first. A missing file is an empty allocation. A file that cannot be read, is
not such a document, or contradicts itself (an id out of range, used twice,
both in use and released, at or above ``next``) is :class:`FlowMonError`
with one line naming the file: never silently reset, because new ids for
running flows would make every counting point disagree with the records
already published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from srv6pm import atomicfile
from srv6pm.collector.config import Config, ConfigError
from srv6pm.southbound.validate import FLOWMON_ID_MAX

__all__ = ["Allocator", "FlowMonError", "STATE_FILE", "VERSION", "assign", "state_path"]

STATE_FILE = "flowmon.json"
VERSION = 1


class FlowMonError(ConfigError):
    """The FlowMonIDs cannot be allocated, read or saved; ``str()`` is one line.

    A :class:`~srv6pm.collector.config.ConfigError`: at start the collector
    refuses to run (exit 2); at a reload the new configuration is rejected
    and the previous one stays.
    """


def state_path(state_dir: str | Path) -> Path:
    """The FlowMonID state file in the collector's state directory."""
    return Path(state_dir) / STATE_FILE


@dataclass
class _State:
    next: int = 1
    flows: dict[str, int] = field(default_factory=dict)
    released: list[int] = field(default_factory=list)

    def copy(self) -> "_State":
        return _State(self.next, dict(self.flows), list(self.released))

    def to_json(self) -> str:
        return json.dumps({"v": VERSION, "next": self.next, "flows": dict(sorted(self.flows.items())),
                           "released": self.released}, indent=1) + "\n"


class Allocator:
    """The FlowMonIDs of the domain, persisted at ``path`` (None: in memory only, not stable across restarts).

    The file is read once, here (:class:`FlowMonError` if it is unusable);
    from then on this object is its only writer. Not thread safe: the
    collector allocates from its main thread.
    """

    def __init__(self, path: str | Path | None, *, max_id: int = FLOWMON_ID_MAX):
        if not 1 <= max_id <= FLOWMON_ID_MAX:
            raise ValueError(f"max_id {max_id} not in 1..{FLOWMON_ID_MAX}")
        self.path = Path(path) if path is not None else None
        self.max_id = max_id
        self._state = self._load(self.path) if self.path is not None else _State()

    @property
    def ids(self) -> dict[str, int]:
        """Flow name -> FlowMonID of the flows allocated so far (a copy)."""
        return dict(self._state.flows)

    def allocate(self, flows: Iterable[str], *, save: bool = True) -> dict[str, int]:
        """The ids of exactly ``flows`` (names): theirs if they have one, else new; the others' ids are freed.

        With ``save`` (and a path) the new allocation is written before it
        is returned and kept; ``save=False`` only says what the ids would be
        (``srv6pm collector check``) and changes nothing. :class:`FlowMonError`
        if the ids run out or the file cannot be written; nothing changes then.
        """
        names = list(dict.fromkeys(flows))
        state = self._state.copy()
        wanted = set(names)
        for name in sorted(set(state.flows) - wanted, key=state.flows.__getitem__):
            state.released.append(state.flows.pop(name))
        for name in names:
            if name in state.flows:
                continue
            if state.next <= self.max_id:
                state.flows[name] = state.next
                state.next += 1
            elif state.released:
                state.flows[name] = state.released.pop(0)
            else:
                raise FlowMonError(f"no free FlowMonID for flow {name!r}: all {self.max_id} are in use "
                                   f"({len(names)} flows configured)")
        ids = {name: state.flows[name] for name in names}
        if not save:
            return ids
        if state != self._state and self.path is not None:
            self._save(self.path, state)
        self._state = state
        return ids

    # ------------------------------------------------------------ the file

    def _fail(self, why: str) -> FlowMonError:
        return FlowMonError(f"{self.path}: FlowMonID state file {why}; the collector does not reset it by "
                            f"itself (fix or remove the file: removing it gives every flow a new FlowMonID)")

    def _load(self, path: Path) -> _State:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _State()
        except (OSError, UnicodeDecodeError) as exc:
            raise self._fail(f"cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise self._fail(f"is not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            raise self._fail(f"is not a version {VERSION} document")
        if set(doc) != {"v", "next", "flows", "released"}:
            raise self._fail("must have exactly the keys v, next, flows and released")
        nxt, flows, released = doc["next"], doc["flows"], doc["released"]
        if not _is_int(nxt) or not 1 <= nxt <= self.max_id + 1:
            raise self._fail(f"has next {nxt!r}, not in 1..{self.max_id + 1}")
        if not isinstance(flows, dict) or not isinstance(released, list):
            raise self._fail("must have flows as an object and released as a list")
        seen: dict[int, str] = {}
        for what, value in [*((f"flow {n!r}", i) for n, i in flows.items()),
                            *(("released", i) for i in released)]:
            if not _is_int(value) or not 1 <= value < nxt:
                raise self._fail(f"gives {what} the id {value!r}, not in 1..{nxt - 1} (below next)")
            if value in seen:
                raise self._fail(f"gives id {value} to both {seen[value]} and {what}")
            seen[value] = what
        return _State(nxt, dict(flows), list(released))

    def _save(self, path: Path, state: _State) -> None:
        try:
            atomicfile.replace(path, state.to_json())
        except OSError as exc:
            raise FlowMonError(f"{self.path}: cannot write the FlowMonID state file: {exc.strerror or exc}") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def assign(config: Config, allocator: Allocator, *, save: bool = True) -> Config:
    """``config`` with the FlowMonIDs of its flows (see :meth:`Allocator.allocate`), whatever its data plane:
    a flow keeps its id when the data plane changes."""
    return config.with_flowmon_ids(allocator.allocate([f.name for f in config.flows], save=save))
