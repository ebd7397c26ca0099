"""The collector's topology graph: nodes, links and monitored paths with their latest figures.

The graph is what traffic-engineering tools query (AQL on ArangoDB): which
nodes exist and whether their exporters are alive, how they are linked, and for
every monitored path its latest loss (flows) or delay (STAMP sessions). The
logic lives here, once, in :class:`GraphStore`; a backend supplies only a few
storage primitives. Two backends exist: :class:`MemoryGraph` (dicts and
Dijkstra, for tests and ``--graph-dump`` without a database) and
:class:`srv6pm.collector.arango.ArangoGraph` (python-arango).

Database objects (names fixed; other tools depend on them)
==========================================================

``nodes`` (vertex collection), one document per node::

    _key = name, name, grpc, pm_address, sids (list),
    alive (bool, null until first known), boot_id (null until known),
    status_at (RFC 3339 UTC, ns precision), status_at_ns (int)

``links`` (edge collection), ONE undirected edge per configured link::

    _key = "a--b", _from = "nodes/a", _to = "nodes/b", a, b, delay_ms (null if not configured),
    segment_loss ({} until a flow with positions crossed it)

  The edge's direction is only the order of the configuration; traverse links
  with ``ANY`` (``FOR v, e IN ANY SHORTEST_PATH 'nodes/r4' TO 'nodes/r1' links``)
  and a path is found in both directions from one edge.

  ``segment_loss`` holds, per flow, the latest segment of that flow between
  the link's two nodes (flows whose counters carry positions, ebpf data
  plane), in the direction the flow crossed it::

    {<flow>: {from, to, period, period_start, tx_packets, rx_packets, lost_packets, complete, updated_at}}

  An incomplete segment is stored with ``complete: false`` and
  ``lost_packets`` null. A segment whose two counting points are not the two
  ends of one configured link (a via node without an exporter between them)
  is only on its flow's path edge (``loss.segments``). A flow that crosses the
  same link more than once keeps the last such segment in path order.
  Example AQL, the links losing packets now:
  ``FOR e IN links FOR s IN VALUES(e.segment_loss) FILTER s.lost_packets > 0 RETURN [s.from, s.to, s.lost_packets]``

``paths`` (edge collection), one DIRECTED edge per monitored flow and per
STAMP session, from the flow's ingress (the session's sender) to its egress
(the session's reflector)::

    _key = "flow:<name>" | "stamp:<name>", _from, _to, kind ("flow" | "stamp"),
    name, via (list of node names), segments (list of SIDs);
    flows also: source, destination, loss;
    sessions also: return_via (list of node names), return_segments, delay, delay_us, alive, liveness

  ``loss`` (null until the first result)::

    {period, period_start, tx_packets, rx_packets, lost_packets, loss_ratio, complete, updated_at}
    and, when the result has them, segments: [{from, to, tx_packets, rx_packets, lost_packets, complete}]

  An incomplete period is stored with ``complete: false`` and ``lost_packets``
  and ``loss_ratio`` null: it is never loss; so is an incomplete segment.

  ``delay`` (null until the first result)::

    {forward|backward|round_trip: {period, period_start, samples, lost, min_us, mean_us,
                                   max_us, p50_us, p99_us, jitter_us},
     updated_at}

  ``delay_us`` is the latest forward mean in µs, the weight for lowest-delay
  queries; null when that period had no sample or a negative mean (clocks not
  synchronised): such an edge is not used by :meth:`GraphStore.lowest_delay_path`.

  ``alive`` is the path's liveness (sessions that watch their path, from the
  ``liveness`` alarms on ``srv6pm.alarms``): null until the first such alarm,
  false while the path is down, true once it is up again. While it is down
  ``delay_us`` is null, so no lowest-delay route uses the edge. ``liveness``
  (null until the first alarm) is the latest change::

    {up, time_ns, at (time_ns as RFC 3339), last_reply_ns, count, threshold, updated_at}

  Example AQL, the STAMP paths down now: ``FOR e IN paths FILTER e.alive == false RETURN e.name``

Graph ``srv6pm`` has both edge collections, each from ``nodes`` to ``nodes``.
Example AQL, lowest forward delay from r1 to r4 over measured paths::

    FOR v, e IN OUTBOUND SHORTEST_PATH 'nodes/r1' TO 'nodes/r4' paths
      OPTIONS {weightAttribute: 'delay_us', defaultWeight: 1e9}
      RETURN [v._key, e.delay_us]

Rules for results (``update_loss``, ``update_delay``, ``update_many``)
======================================================================

The results consumer stores each batch it polls with :meth:`GraphStore.update_many`:
every document the batch touches is read once and written once, in bulk, so
the graph's writes grow with the number of paths and links, not of records.

* A result for a flow or session that is not in the graph is ignored; it is
  counted in ``stats["unknown"]`` and logged once per subject.
* Results may arrive out of order (partitions, restarts): a result for an
  OLDER period than the stored one is ignored (``stats["stale"]``); the same
  period overwrites (applying a result twice changes nothing but
  ``updated_at``). Delay directions are ordered independently, and so are a
  flow's segments on each link. Liveness alarms are ordered by their
  ``time_ns`` (an older change than the stored one is stale).
* When :meth:`GraphStore.sync_topology` keeps a path whose route changed
  (endpoints, via, segments or the return path), its figures are dropped: they
  described the old route; so are its segments on the links, and those of a
  flow no longer configured. A path whose route is unchanged keeps them.

One process writes the graph; within it every public method holds one lock,
so the reconcile loop and the results consumer can share a store.
"""

from __future__ import annotations

import copy
import datetime as _dt
import heapq
import logging
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from srv6pm.errors import InputError, UnavailableError
from srv6pm import records

__all__ = [
    "APPLIED", "DELAY_DIRECTIONS", "EDGE_DEFINITIONS", "GRAPH", "LINKS", "NODES", "NO_DELAY_WEIGHT", "PATHS",
    "STALE", "UNKNOWN", "DelayPath", "GraphError", "GraphStore", "GraphStoreError", "LinkSpec", "MemoryGraph",
    "NodeSpec", "PathSpec", "Topology",
]

log = logging.getLogger("srv6pm.collector.graph")

GRAPH = "srv6pm"
NODES = "nodes"
LINKS = "links"
PATHS = "paths"
EDGE_DEFINITIONS = [
    {"edge_collection": LINKS, "from_vertex_collections": [NODES], "to_vertex_collections": [NODES]},
    {"edge_collection": PATHS, "from_vertex_collections": [NODES], "to_vertex_collections": [NODES]},
]
NO_DELAY_WEIGHT = 1e9
"""Weight of a path edge without a usable ``delay_us`` (AQL ``defaultWeight``); such a route is refused."""

DELAY_DIRECTIONS = ("forward", "backward", "round_trip")

APPLIED = "applied"
STALE = "stale"
UNKNOWN = "unknown"

# ArangoDB document keys: letters, digits and _-:.@()+,=;$!*'% ; at most 254 bytes.
_KEY = re.compile(r"[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,200}")
_LOSS_FIELDS = ("period", "period_start", "tx_packets", "rx_packets", "lost_packets", "loss_ratio", "complete")
_ROUTE_FIELDS = ("_from", "_to", "via", "segments", "return_via", "return_segments")
_SEGMENT_FIELDS = ("from", "to", "tx_packets", "rx_packets", "lost_packets", "complete")
_DELAY_FIELDS = ("period", "period_start", "samples", "lost", "min_us", "mean_us", "max_us", "p50_us", "p99_us",
                 "jitter_us")


Decoded = records.LossResult | records.DelayResult | records.Alarm
"""A result as :mod:`srv6pm.decode` gives it (see :meth:`GraphStore.update_many`)."""
_DECODED = {records.LOSS: records.LossResult, records.DELAY: records.DelayResult, records.ALARMS: records.Alarm}


def _as_dict(topic: str, result: Mapping | Decoded) -> dict | Mapping:
    """``result`` of ``topic`` in its JSON form, checked: a decoded record of the topic's type as it is, a mapping
    against the topic's schema (RecordError); GraphError for another topic, type, or an alarm not of liveness."""
    kind = _DECODED.get(topic)
    if kind is None:
        raise GraphError(f"topic: results come from {records.LOSS}, {records.DELAY} or {records.ALARMS}, "
                         f"not {topic!r}")
    if isinstance(result, Mapping):
        records.validate(topic, result)
        out: Mapping = result
    elif isinstance(result, kind):
        out = result.to_dict()
    else:
        raise GraphError(f"result: a {kind.__name__} or its JSON form for {topic}, not a {type(result).__name__}")
    if topic == records.ALARMS and out["kind"] != "liveness":
        raise GraphError(f"kind: only liveness alarms go onto the graph, not {out['kind']!r}")
    return out


class GraphError(InputError, ValueError):
    """Bad input to the graph (a topology or a query); ``str()`` names the field."""


class GraphStoreError(UnavailableError, RuntimeError):
    """The store failed (unreachable, refused); the operation may be retried."""


# --------------------------------------------------------------------- topology


@dataclass(frozen=True)
class NodeSpec:
    name: str
    grpc: str | None = None
    pm_address: str | None = None
    sids: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkSpec:
    a: str
    b: str
    delay_ms: float | None = None

    @property
    def key(self) -> str:
        return f"{self.a}--{self.b}"


@dataclass(frozen=True)
class PathSpec:
    """A monitored flow (kind "flow") or STAMP session (kind "stamp") from ``src`` to ``dst``."""

    kind: str
    name: str
    src: str
    dst: str
    via: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    return_via: tuple[str, ...] = ()
    return_segments: tuple[str, ...] = ()
    source: str | None = None
    destination: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Topology:
    """What the graph should hold: plain data, checked by :meth:`check`."""

    nodes: tuple[NodeSpec, ...] = ()
    links: tuple[LinkSpec, ...] = ()
    paths: tuple[PathSpec, ...] = ()

    def check(self) -> "Topology":
        """Return self, or raise :class:`GraphError` naming the first bad field."""
        names: set[str] = set()
        for i, n in enumerate(self.nodes):
            _check_key(n.name, f"nodes[{i}].name")
            if n.name in names:
                raise GraphError(f"nodes[{i}].name: duplicate node {n.name!r}")
            names.add(n.name)
        seen_links: set[frozenset] = set()
        for i, link in enumerate(self.links):
            for end in ("a", "b"):
                if getattr(link, end) not in names:
                    raise GraphError(f"links[{i}].{end}: unknown node {getattr(link, end)!r}")
            if link.a == link.b:
                raise GraphError(f"links[{i}]: a link needs two different nodes, got {link.a!r} twice")
            pair = frozenset((link.a, link.b))
            if pair in seen_links:
                raise GraphError(f"links[{i}]: duplicate link {link.a}--{link.b}")
            seen_links.add(pair)
            if link.delay_ms is not None and not (_number(link.delay_ms) and link.delay_ms >= 0):
                raise GraphError(f"links[{i}].delay_ms: must be a number >= 0, got {link.delay_ms!r}")
        keys: set[str] = set()
        for i, p in enumerate(self.paths):
            if p.kind not in ("flow", "stamp"):
                raise GraphError(f"paths[{i}].kind: must be 'flow' or 'stamp', got {p.kind!r}")
            _check_key(p.name, f"paths[{i}].name")
            if p.key in keys:
                raise GraphError(f"paths[{i}].name: duplicate {p.kind} {p.name!r}")
            keys.add(p.key)
            for attr in ("src", "dst"):
                if getattr(p, attr) not in names:
                    raise GraphError(f"paths[{i}].{attr}: unknown node {getattr(p, attr)!r}")
            for attr in ("via", "return_via"):
                for j, hop in enumerate(getattr(p, attr)):
                    if hop not in names:
                        raise GraphError(f"paths[{i}].{attr}[{j}]: unknown node {hop!r}")
        return self

    @classmethod
    def from_config(cls, config: Any) -> "Topology":
        """The topology of the collector's :class:`srv6pm.collector.config.Config`.

        Nodes (name, grpc, pm_address, SIDs as text), links (a, b, delay_ms),
        flows (name, src, dst, via, segments, source, destination) and STAMP
        sessions (``config.stamp``: name, src, dst, via, segments, return_via,
        return_segments).
        """
        nodes = tuple(NodeSpec(n.name, n.grpc, n.pm_address, tuple(s.sid for s in n.sids)) for n in config.nodes)
        links = tuple(LinkSpec(link.a, link.b, link.delay_ms) for link in config.links)
        paths = [PathSpec("flow", f.name, f.src, f.dst, tuple(f.via), tuple(f.segments),
                          source=f.source, destination=f.destination) for f in config.flows]
        paths += [PathSpec("stamp", s.name, s.src, s.dst, tuple(s.via), tuple(s.segments),
                           return_via=tuple(s.return_via), return_segments=tuple(s.return_segments))
                  for s in config.stamp]
        return cls(nodes, links, tuple(paths))


def _check_key(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise GraphError(f"{where}: {value!r} is not a valid name (1-200 of letters, digits and _-:.@()+,=;$!*'%)")


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rfc3339_ns(ns: int) -> str:
    """``ns`` since the epoch as RFC 3339 UTC with 9 fraction digits (sorts as text)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


@dataclass(frozen=True)
class DelayPath:
    """Answer of :meth:`GraphStore.lowest_delay_path`: nodes in order, total of ``delay_us``, path edge keys."""

    nodes: list[str]
    delay_us: float
    paths: list[str]


# --------------------------------------------------------------------- the logic


class GraphStore(ABC):
    """The graph's logic over a few storage primitives (see the module docstring for the data).

    ``clock_ns`` gives ``updated_at``; tests may pass their own. ``stats`` counts
    applied, stale and unknown results and node status updates.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns):
        self._clock_ns = clock_ns
        self._lock = threading.RLock()
        self._warned: set[tuple[str, str | None]] = set()
        self.stats = {"loss": 0, "delay": 0, "liveness": 0, "status": 0, "stale": 0, "unknown": 0}

    # -- storage primitives (backends) ------------------------------------------------

    @abstractmethod
    def _create(self) -> None:
        """Create the database, the three collections and graph ``srv6pm`` if missing."""

    @abstractmethod
    def _get(self, collection: str, key: str) -> dict | None:
        """The document (without ``_id``/``_rev``), or None."""

    @abstractmethod
    def _put(self, collection: str, doc: dict) -> None:
        """Insert or replace the whole document ``doc["_key"]``."""

    @abstractmethod
    def _delete(self, collection: str, key: str) -> None:
        """Remove the document if it exists."""

    def _get_many(self, collection: str, keys) -> dict[str, dict]:
        """Key -> document of those of ``keys`` that exist (backends may do it in one request)."""
        return {k: doc for k in keys if (doc := self._get(collection, k)) is not None}

    def _put_many(self, collection: str, docs: list[dict]) -> None:
        """Insert or replace every document of ``docs`` (backends may do it in one request)."""
        for doc in docs:
            self._put(collection, doc)

    @abstractmethod
    def _all(self, collection: str) -> list[dict]:
        """Every document of the collection (without ``_id``/``_rev``)."""

    @abstractmethod
    def _shortest(self, src: str, dst: str) -> list[dict]:
        """Edges of the lightest OUTBOUND path over ``paths`` from node ``src`` to node ``dst``.

        Weight of an edge: its ``delay_us`` when a number >= 0, else
        :data:`NO_DELAY_WEIGHT` (AQL's weightAttribute/defaultWeight). Empty
        list when there is no path.
        """

    def close(self) -> None:  # noqa: B027 -- optional hook, not abstract: the memory backend holds nothing
        """Release connections (nothing for the memory backend)."""

    # -- the contract ------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the database objects if missing; idempotent, keeps existing data."""
        with self._lock:
            self._create()

    def sync_topology(self, config: Any) -> dict[str, int]:
        """Make the graph hold exactly the topology of ``config``.

        ``config`` is a :class:`Topology` or the collector's configuration
        (converted with :meth:`Topology.from_config`). Upserts nodes, links and
        paths; deletes those no longer configured (edges before vertices);
        keeps node status and the figures of paths whose route is unchanged.
        Returns counts ``{"added", "changed", "removed"}``. Raises
        :class:`GraphError` for a bad topology, before touching the store.
        """
        topology = (config if isinstance(config, Topology) else Topology.from_config(config)).check()
        counts = {"added": 0, "changed": 0, "removed": 0}
        with self._lock:
            paths = [self._path_doc(p) for p in topology.paths]
            measured = {d["name"] for d in paths if d["kind"] == "flow" and d["loss"] is not None}
            wanted: dict[str, list[dict]] = {
                NODES: [self._node_doc(n) for n in topology.nodes],
                LINKS: [self._link_doc(link, measured) for link in topology.links],
                PATHS: paths,
            }
            for collection in (NODES, LINKS, PATHS):
                for doc in wanted[collection]:
                    old = self._get(collection, doc["_key"])
                    if old != doc:
                        self._put(collection, doc)
                        counts["changed" if old else "added"] += 1
            for collection in (PATHS, LINKS, NODES):
                keep = {doc["_key"] for doc in wanted[collection]}
                for doc in self._all(collection):
                    if doc["_key"] not in keep:
                        self._delete(collection, doc["_key"])
                        counts["removed"] += 1
        if any(counts.values()):
            log.info("topology synchronised", extra=counts)
        return counts

    def set_node_status(self, name: str, alive: bool, boot_id: str | None, at_ns: int) -> str:
        """Record whether node ``name``'s exporter answers, and its boot id, as of ``at_ns``.

        Returns :data:`APPLIED`, :data:`STALE` (an older status than the stored
        one) or :data:`UNKNOWN` (no such node: ignored, logged once).
        """
        if not isinstance(name, str) or not name:
            raise GraphError(f"name: a node name is required, got {name!r}")
        if not isinstance(alive, bool):
            raise GraphError(f"alive: must be true or false, got {alive!r}")
        if boot_id is not None and not isinstance(boot_id, str):
            raise GraphError(f"boot_id: must be text or null, got {boot_id!r}")
        if not isinstance(at_ns, int) or isinstance(at_ns, bool) or at_ns < 0:
            raise GraphError(f"at_ns: must be an integer >= 0 (ns since the epoch), got {at_ns!r}")
        with self._lock:
            doc = self._get(NODES, name)
            if doc is None:
                return self._unknown("node", name)
            if (doc.get("status_at_ns") or 0) > at_ns:
                self.stats["stale"] += 1
                return STALE
            doc.update(alive=alive, boot_id=boot_id, status_at=rfc3339_ns(at_ns), status_at_ns=at_ns)
            self._put(NODES, doc)
            self.stats["status"] += 1
            return APPLIED

    def update_loss(self, result: Mapping) -> str:
        """Store a ``srv6pm.loss`` result (the dict as on the topic) on its flow's path.

        Raises :class:`srv6pm.records.RecordError` when it does not satisfy the
        topic's schema. Returns :data:`APPLIED`, :data:`STALE` or :data:`UNKNOWN`.
        """
        return self.update_many([(records.LOSS, result)])[0]

    def update_delay(self, result: Mapping) -> str:
        """Store a ``srv6pm.delay`` result (one direction) on its session's path.

        A forward result also sets ``delay_us``. Raises
        :class:`srv6pm.records.RecordError` when it does not satisfy the topic's
        schema. Returns :data:`APPLIED`, :data:`STALE` or :data:`UNKNOWN`.
        """
        return self.update_many([(records.DELAY, result)])[0]

    def update_liveness(self, alarm: Mapping) -> str:
        """Store a ``liveness`` alarm of ``srv6pm.alarms`` on its session's path (``alive``, ``liveness``).

        Raises :class:`srv6pm.records.RecordError` when it does not satisfy the
        topic's schema, :class:`GraphError` for another kind of alarm. Returns
        :data:`APPLIED`, :data:`STALE` or :data:`UNKNOWN`.
        """
        return self.update_many([(records.ALARMS, alarm)])[0]

    def update_many(self, results: Sequence[tuple[str, Mapping | Decoded]]) -> list[str]:
        """Store a batch of results, ``(topic, result)`` with topic ``srv6pm.loss`` or ``srv6pm.delay``
        (or ``srv6pm.alarms``, liveness alarms only), in order.

        The same as :meth:`update_loss` / :meth:`update_delay` one by one, but
        every document the batch touches is read once and written once: one
        :meth:`_get_many` and one :meth:`_put_many` per collection, whatever the
        number of results (a period's results of 10,000 flows are a few bulk
        requests, not 20,000). A result is a record as :mod:`srv6pm.decode`
        gives it (a :class:`~srv6pm.records.LossResult`,
        :class:`~srv6pm.records.DelayResult` or :class:`~srv6pm.records.Alarm`:
        its schema was checked when it was decoded, so it is not checked again;
        what the results consumer hands over) or a mapping in the topic's JSON
        form, which is validated: :class:`srv6pm.records.RecordError` for the
        first one that does not satisfy its topic's schema, before anything is
        stored. Returns one outcome per result.
        """
        checked = [(topic, _as_dict(topic, result)) for topic, result in results]
        with self._lock:
            paths = self._get_many(PATHS, {_path_key(topic, r) for topic, r in checked})
            ends = set()
            for topic, r in checked:
                for seg in (r.get("segments") or ()) if topic == records.LOSS else ():
                    if seg.get("from") is not None and seg.get("to") is not None:
                        ends.update({f"{seg['from']}--{seg['to']}", f"{seg['to']}--{seg['from']}"})
            links = self._get_many(LINKS, ends) if ends else {}
            touched_paths: set[str] = set()
            touched_links: set[str] = set()
            outcomes = []
            for topic, r in checked:
                edge = paths.get(_path_key(topic, r))
                if edge is None:
                    outcomes.append(self._unknown("flow", r["flow"]) if topic == records.LOSS else
                                    self._unknown("session", r.get("session") or r.get("subject")))
                    continue
                if topic == records.LOSS:
                    outcome = self._loss_onto(edge, r, links, touched_links)
                elif topic == records.DELAY:
                    outcome = self._delay_onto(edge, r)
                else:
                    outcome = self._liveness_onto(edge, r)
                if outcome == APPLIED:
                    touched_paths.add(edge["_key"])
                outcomes.append(outcome)
            if touched_paths:
                self._put_many(PATHS, [paths[k] for k in sorted(touched_paths)])
            if touched_links:
                self._put_many(LINKS, [links[k] for k in sorted(touched_links)])
            return outcomes

    def _loss_onto(self, edge: dict, result: Mapping, links: dict[str, dict], touched: set[str]) -> str:
        """Put a loss result on its path edge and its segments on the links (in memory); the outcome."""
        current = edge.get("loss")
        if current and current["period"] > result["period"]:
            self.stats["stale"] += 1
            return STALE
        loss = {k: result.get(k) for k in _LOSS_FIELDS}
        if not loss["complete"]:  # an incomplete period is never loss
            loss.update(lost_packets=None, loss_ratio=None)
        segments = [_segment(s) for s in result.get("segments") or ()]
        if result.get("segments") is not None:
            loss["segments"] = segments
        loss["updated_at"] = rfc3339_ns(self._clock_ns())
        edge["loss"] = loss
        for segment in segments:  # each onto the link between its two nodes, as that flow's latest there
            if segment["from"] is None or segment["to"] is None:
                continue
            doc = links.get(f"{segment['from']}--{segment['to']}") or links.get(f"{segment['to']}--{segment['from']}")
            if doc is None:
                continue  # not one configured link: the segment is on the path edge only
            entries = doc.setdefault("segment_loss", {})
            held = entries.get(result["flow"])
            if held and held["period"] > result["period"]:
                continue
            entries[result["flow"]] = {**segment, "period": result["period"], "period_start": result["period_start"],
                                       "updated_at": loss["updated_at"]}
            touched.add(doc["_key"])
        self.stats["loss"] += 1
        return APPLIED

    def _delay_onto(self, edge: dict, result: Mapping) -> str:
        """Put one direction of a delay result on its path edge (in memory); the outcome."""
        direction = result["direction"]
        delay = edge.get("delay") or {}
        current = delay.get(direction)
        if current and current["period"] > result["period"]:
            self.stats["stale"] += 1
            return STALE
        delay[direction] = {k: result.get(k) for k in _DELAY_FIELDS}
        delay["updated_at"] = rfc3339_ns(self._clock_ns())
        edge["delay"] = delay
        if direction == "forward":
            mean = result.get("mean_us")
            if _number(mean) and mean >= 0 and edge.get("alive") is not False:  # a down path is no route
                edge["delay_us"] = float(mean)
            else:
                edge["delay_us"] = None
        self.stats["delay"] += 1
        return APPLIED

    def _liveness_onto(self, edge: dict, alarm: Mapping) -> str:
        """Put a liveness alarm on its session's path edge (in memory); the outcome."""
        current = edge.get("liveness")
        if current and current["time_ns"] > alarm["time_ns"]:
            self.stats["stale"] += 1
            return STALE
        up = not alarm["raised"]
        edge["liveness"] = {"up": up, "time_ns": alarm["time_ns"], "at": rfc3339_ns(alarm["time_ns"]),
                            "last_reply_ns": alarm["last_reply_ns"], "count": alarm["value"],
                            "threshold": alarm["threshold"], "updated_at": rfc3339_ns(self._clock_ns())}
        edge["alive"] = up
        if not up:
            edge["delay_us"] = None
        self.stats["liveness"] += 1
        return APPLIED

    def lowest_delay_path(self, src: str, dst: str) -> DelayPath | None:
        """The chain of measured paths from node ``src`` to node ``dst`` with the lowest total ``delay_us``.

        Follows ``paths`` edges in their direction (sender to reflector). None
        when no chain of edges that all have a ``delay_us`` connects them.
        Raises :class:`GraphError` when ``src`` or ``dst`` is not a node.
        """
        with self._lock:
            for where, name in (("src", src), ("dst", dst)):
                if not isinstance(name, str) or not _KEY.fullmatch(name) or self._get(NODES, name) is None:
                    raise GraphError(f"{where}: unknown node {name!r}")
            if src == dst:
                return DelayPath([src], 0.0, [])
            edges = self._shortest(src, dst)
        if not edges or not all(_number(e.get("delay_us")) and e["delay_us"] >= 0 for e in edges):
            return None
        return DelayPath([src] + [e["_to"].split("/", 1)[1] for e in edges],
                         sum(e["delay_us"] for e in edges), [e["_key"] for e in edges])

    def snapshot(self) -> dict:
        """Everything in the graph as a JSON-able dict: ``{"graph", "nodes", "links", "paths"}``, sorted by key."""
        with self._lock:
            out: dict[str, Any] = {"graph": GRAPH}
            for collection in (NODES, LINKS, PATHS):
                out[collection] = sorted(self._all(collection), key=lambda d: d["_key"])
            return copy.deepcopy(out)

    # -- helpers -----------------------------------------------------------------------

    def _unknown(self, kind: str, name: str | None) -> str:
        self.stats["unknown"] += 1
        if (kind, name) not in self._warned:
            self._warned.add((kind, name))
            log.warning("result for an unknown subject ignored", extra={"kind": kind, "subject": name})
        return UNKNOWN

    def _node_doc(self, n: NodeSpec) -> dict:
        old = self._get(NODES, n.name) or {}
        return {"_key": n.name, "name": n.name, "grpc": n.grpc, "pm_address": n.pm_address, "sids": list(n.sids),
                "alive": old.get("alive"), "boot_id": old.get("boot_id"), "status_at": old.get("status_at"),
                "status_at_ns": old.get("status_at_ns")}

    def _path_doc(self, p: PathSpec) -> dict:
        doc: dict[str, Any] = {"_key": p.key, "_from": f"{NODES}/{p.src}", "_to": f"{NODES}/{p.dst}",
                               "kind": p.kind, "name": p.name, "via": list(p.via), "segments": list(p.segments)}
        if p.kind == "flow":
            doc.update(source=p.source, destination=p.destination)
            figures: tuple[str, ...] = ("loss",)
        else:
            doc.update(return_via=list(p.return_via), return_segments=list(p.return_segments))
            figures = ("delay", "delay_us", "alive", "liveness")
        old = self._get(PATHS, p.key) or {}
        same_route = all(old.get(k) == doc[k] for k in _ROUTE_FIELDS if k in doc)
        for name in figures:
            doc[name] = old.get(name) if same_route else None
        return doc

    def _link_doc(self, link: LinkSpec, measured: set[str]) -> dict:
        """The link's document; it keeps the segments of the flows in ``measured`` (those that keep their figures)."""
        old = (self._get(LINKS, link.key) or {}).get("segment_loss") or {}
        return {"_key": link.key, "_from": f"{NODES}/{link.a}", "_to": f"{NODES}/{link.b}", "a": link.a, "b": link.b,
                "delay_ms": link.delay_ms, "segment_loss": {f: e for f, e in old.items() if f in measured}}


def _path_key(topic: str, result: Mapping) -> str:
    if topic == records.LOSS:
        return f"flow:{result['flow']}"
    return f"stamp:{result['session'] if topic == records.DELAY else result['subject']}"


def _segment(doc: Mapping) -> dict:
    """A result's segment as stored: an incomplete one is never loss."""
    out = {k: doc.get(k) for k in _SEGMENT_FIELDS}
    if not out["complete"]:
        out["lost_packets"] = None
    return out


# --------------------------------------------------------------------- in memory


class MemoryGraph(GraphStore):
    """:class:`GraphStore` in process memory: dicts and Dijkstra. Nothing survives the process."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns):
        super().__init__(clock_ns)
        self._data: dict[str, dict[str, dict]] | None = None

    def _collection(self, name: str) -> dict[str, dict]:
        if self._data is None:
            raise GraphStoreError("the graph is not created yet: call ensure() first")
        return self._data[name]

    def _create(self) -> None:
        if self._data is None:
            self._data = {NODES: {}, LINKS: {}, PATHS: {}}

    def _get(self, collection: str, key: str) -> dict | None:
        doc = self._collection(collection).get(key)
        return copy.deepcopy(doc) if doc is not None else None

    def _put(self, collection: str, doc: dict) -> None:
        self._collection(collection)[doc["_key"]] = copy.deepcopy(doc)

    def _delete(self, collection: str, key: str) -> None:
        self._collection(collection).pop(key, None)

    def _all(self, collection: str) -> list[dict]:
        return [copy.deepcopy(d) for d in self._collection(collection).values()]

    def _shortest(self, src: str, dst: str) -> list[dict]:
        out: dict[str, list[dict]] = {}
        for edge in self._collection(PATHS).values():
            out.setdefault(edge["_from"], []).append(edge)
        start, goal = f"{NODES}/{src}", f"{NODES}/{dst}"
        best = {start: 0.0}
        via: dict[str, dict] = {}
        queue: list[tuple[float, str]] = [(0.0, start)]
        while queue:
            cost, vertex = heapq.heappop(queue)
            if vertex == goal:
                break
            if cost > best.get(vertex, math.inf):
                continue
            for edge in sorted(out.get(vertex, ()), key=lambda e: e["_key"]):
                w = edge.get("delay_us")
                weight = w if _number(w) and w >= 0 else NO_DELAY_WEIGHT
                if cost + weight < best.get(edge["_to"], math.inf):
                    best[edge["_to"]] = cost + weight
                    via[edge["_to"]] = edge
                    heapq.heappush(queue, (cost + weight, edge["_to"]))
        if goal not in via:
            return []
        chain, vertex = [], goal
        while vertex != start:
            chain.append(copy.deepcopy(via[vertex]))
            vertex = via[vertex]["_from"]
        return chain[::-1]

