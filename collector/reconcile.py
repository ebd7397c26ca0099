"""The reconciliation engine: drives every node exporter to its desired state.

:class:`Engine` holds one :class:`~srv6pm.southbound.client.ExporterClient`
per configured node and works in ROUNDS, one every ``interval`` seconds
(sooner after a configuration change):

1. **Poll.** ``GetState`` of every node, in parallel. A node that answers is
   up. One that does not (or fails otherwise) is down: event ``node_down``,
   and it is tried again after an exponential backoff with jitter
   (:class:`Backoff`: ``initial`` doubling up to ``maximum``) on a fresh
   channel. The probe of a down node is not waited for by the others: it runs
   in the background (at most ``probe_grace`` seconds are given to it within
   the round) and its answer counts in the round that sees it. The first
   answer is ``node_up``; an answer with a different ``boot_id`` than before
   means the exporter restarted: event ``node_restarted``, and EVERYTHING
   desired for that node is applied again (not only the difference: the kernel
   may have lost state that the exporter still reports, or the other way round).
2. **Diff.** :func:`srv6pm.collector.desired.diff` per up node.
   Nodes that answered before are waited for (a node that stops answering
   holds up one round by at most the call ``timeout``, then it is down).
3. **Act, step by step across the network.** Removals in reverse phase order,
   then applies in phase order (see :mod:`srv6pm.collector.desired`); every
   node finishes a step before any node starts the next, nodes of one step in
   parallel. So every node's SIDs, egress monitors and reflectors are in place
   before any policy steers traffic and before any ingress starts counting or
   any STAMP sender starts sending. Beyond the ordering, an ingress monitor is
   only started once its flow's egress monitor is in place at the egress node,
   and a STAMP session once its reflector is running (no loss invented during
   set-up); until then it waits, and the network is not converged.
   A node's actions of one step go in ``ApplyBatch`` calls of at most
   :data:`BATCH` objects, each answered as its own RPC would be, so ten
   thousand new flows are ten calls, not ten thousand; an exporter without
   that RPC (UNIMPLEMENTED) gets one call per object from then on. A node's
   calls follow one another, each made while the collector accounts for the
   answers of the one before (so the exporter does not wait for it).
   Every change is an event (``applied``/``removed``, only when the exporter
   reports it changed something). A refused change (FAILED_PRECONDITION,
   INVALID_ARGUMENT, ...) is event ``apply_failed`` with the exporter's message
   and is retried with backoff; the rest goes on. An unreachable node stops
   getting actions in this round and is down.
4. **Converged.** A round in which every node is up and nothing remains to do
   emits ``converged`` (with the configuration generation) if it is the first
   such round after a configuration load or after a round that changed
   something.

Nodes that leave the configuration are no longer contacted; what they hold
is left alone. The engine is driven by one thread (:meth:`Engine.run` or
repeated :meth:`Engine.round`); :meth:`Engine.load` may be called from any thread.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, cast

import grpc

from srv6pm import metrics as metrics_mod
from srv6pm.collector import desired as desired_mod
from srv6pm.collector.config import Config
from srv6pm.collector.desired import Action, Key
from srv6pm.collector.events import Events
from srv6pm.southbound import client as client_mod
from srv6pm.southbound import validate
from srv6pm.southbound.client import ExporterClient, SouthboundError
from srv6pm.southbound.tls import ClientTls
from srv6pm.southbound.v1 import southbound_pb2 as pb

__all__ = ["BATCH", "Backoff", "Engine", "NodeStatus", "RoundReport"]

log = logging.getLogger("srv6pm.collector.reconcile")

BATCH = 1000
"""Objects per ApplyBatch call: well under gRPC's 4 MiB message limit with the largest objects."""
_STATUS = {code.value[0]: code for code in grpc.StatusCode}

StatusCallback = Callable[[str, bool, "str | None", int], None]
"""on_status(node, alive, boot_id, at_ns): called on every liveness change."""


# One object's answer: (the reply, None) when done, (None, the error) when refused.
Answer = tuple[Any, SouthboundError | None]


@dataclass(frozen=True)
class Backoff:
    """Retry delays: attempt n waits a uniformly random time in [d/2, d], d = min(maximum, initial * 2**(n-1))."""

    initial: float = 0.5
    maximum: float = 30.0

    def __post_init__(self):
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff: need 0 < initial ({self.initial!r}) <= maximum ({self.maximum!r})")

    def delay(self, attempt: int) -> float:
        d = min(self.maximum, self.initial * 2 ** max(0, attempt - 1))
        return random.uniform(d / 2, d)


@dataclass
class NodeStatus:
    """What the engine knows about one node (read it, do not change it)."""

    name: str
    address: str
    up: bool | None = None  # None: no answer and no failure yet
    boot_id: str | None = None
    failures: int = 0  # consecutive failed polls
    retry_at: float = 0.0  # monotonic time of the next probe while down
    last_error: str | None = None
    full: bool = False  # re-apply everything in the next round (exporter restarted)
    client: Any = field(default=None, repr=False)
    batch: bool = True  # the exporter serves ApplyBatch (until it answers UNIMPLEMENTED)
    probe: Future | None = field(default=None, repr=False)
    state: pb.NodeState | None = field(default=None, repr=False)
    failed: dict = field(default_factory=dict, repr=False)  # Key -> (attempts, retry_at, message)
    # the objects of the last GetState normalised, by (type, encoding): see _actual
    normalised: dict = field(default_factory=dict, repr=False)


@dataclass
class RoundReport:
    """What one round did: counts of actions done, failed and waiting; whether it converged."""

    applied: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    waiting: int = 0
    down: list[str] = field(default_factory=list)
    converged: bool = False


class Engine:
    """Reconciles the nodes of the loaded configuration; see the module docstring.

    ``client_factory(address, tls, timeout)`` makes the clients (default
    :class:`ExporterClient`). ``on_status`` is told of every liveness change.
    ``metrics`` (default: the process's :func:`srv6pm.metrics.get`) counts
    nodes up, changes, refusals and southbound calls (component ``collector``).
    """

    def __init__(self, events: Events, *, tls: ClientTls | None = None, interval: float = 2.0,
                 backoff: Backoff = Backoff(), timeout: float = 5.0, probe_grace: float = 1.0,
                 on_status: StatusCallback | None = None,
                 client_factory: Callable[..., Any] = ExporterClient, metrics: metrics_mod.Metrics | None = None):
        if not interval > 0:
            raise ValueError(f"interval: {interval!r} is not a positive number of seconds")
        self.events = events
        self.tls = tls
        self.interval = interval
        self.backoff = backoff
        self.timeout = timeout
        self.probe_grace = probe_grace
        self.on_status = on_status
        self.client_factory = client_factory
        self.metrics = metrics or metrics_mod.get()
        self.nodes: dict[str, NodeStatus] = {}
        self.config: Config | None = None
        self.generation = 0
        self._desired: dict[str, dict[Key, Any]] = {}
        self._pending: tuple[Config, int] | None = None
        self._dirty = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # Threads are started on demand; probes of down nodes have their own pool so that
        # a slow one never takes a worker from the nodes that answer.
        self._pool = ThreadPoolExecutor(32, thread_name_prefix="srv6pm-collector")
        self._probes = ThreadPoolExecutor(32, thread_name_prefix="srv6pm-collector-probe")
        # A node's calls of one step: each made while its worker accounts for the answers of the one before
        # (events, the presence set), so that the exporter is not idle meanwhile; they wait for nothing else.
        self._calls = ThreadPoolExecutor(32, thread_name_prefix="srv6pm-collector-call")

    # ------------------------------------------------------------ configuration

    def load(self, config: Config, generation: int) -> None:
        """Make ``config`` the desired state from the next round on (thread-safe; wakes the engine)."""
        with self._lock:
            self._pending = (config, generation)
        self._wake.set()

    def _take_config(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        config, generation = pending
        self.config, self.generation = config, generation
        self._desired = desired_mod.desired_state(config)
        self._dirty = True
        wanted = {n.name: n.grpc for n in config.nodes}
        for name in list(self.nodes):
            status = self.nodes[name]
            if wanted.get(name) != status.address:  # left the configuration, or moved
                self._close_client(status)
                del self.nodes[name]
        for name, address in wanted.items():
            self.nodes.setdefault(name, NodeStatus(name, address))

    # ------------------------------------------------------------ running

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set: one every ``interval``, sooner when a config is loaded or a probe answers."""
        while not stop.is_set():
            started = time.monotonic()
            self._wake.clear()
            try:
                self.round()
            except Exception:  # a bug must not end reconciliation for good; it is logged loudly
                log.exception("reconcile round failed")
            wait_s = self.interval - (time.monotonic() - started)
            down = [s.retry_at for s in self.nodes.values() if s.up is not True and s.probe is None]
            if down:
                wait_s = min(wait_s, min(down) - time.monotonic())
            if wait_s > 0:
                self._wake.wait(wait_s)
                if stop.is_set():
                    break

    def wake(self) -> None:
        """End the wait between rounds now (thread-safe; e.g. to let :meth:`run` see its stop event)."""
        self._wake.set()

    def close(self) -> None:
        """Close every client and the worker threads."""
        for status in self.nodes.values():
            self._close_client(status)
        for pool in (self._pool, self._probes, self._calls):
            pool.shutdown(wait=False, cancel_futures=True)

    def round(self) -> RoundReport:
        """One poll–diff–act round; returns what it did."""
        self._take_config()
        report = RoundReport()
        if self.config is None:
            return report
        self._poll()
        present: dict[str, set[Key]] = {}
        plans: dict[str, list[list[Action]]] = {}  # node -> its actions of each step
        now = time.monotonic()
        for name, status in self.nodes.items():
            if status.up is not True or status.state is None:
                report.down.append(name)
                continue
            actual = _actual(status)
            present[name] = set(actual)
            actions = desired_mod.diff(self._desired.get(name, {}), actual, full=status.full)
            plans[name] = [[] for _ in desired_mod.STEPS]
            for action in actions:
                failed = status.failed.get(action.key) if status.failed else None
                if failed and failed[2] == action.message and now < failed[1]:
                    report.waiting += 1  # refused before; its backoff has not expired
                else:
                    plans[name][action.step].append(action)
        for step in range(len(desired_mod.STEPS)):
            batch = {}
            for name, steps in plans.items():
                todo = []
                for a in steps[step]:
                    if a.verb == "apply" and not self._ready(name, a, present):
                        report.waiting += 1
                        log.info("waiting for prerequisite", extra={"node": name, "object": a.object})
                        continue
                    todo.append(a)
                if todo and self.nodes[name].up:
                    batch[name] = todo
            if not batch:
                continue
            futures = {name: self._pool.submit(self._act, self.nodes[name], todo, present[name])
                       for name, todo in batch.items()}
            wait(futures.values())
            for name, future in futures.items():
                if future.exception() is not None:
                    log.error("acting on a node failed", exc_info=future.exception(), extra={"node": name})
                    report.failed += 1
                    continue
                for counter, n in future.result().items():
                    setattr(report, counter, getattr(report, counter) + n)
        for name in plans:
            if self.nodes[name].up:
                self.nodes[name].full = False
        attempted = report.applied + report.removed + report.unchanged + report.failed
        if attempted:
            self._dirty = True  # work was needed: the next round with nothing to do is "converged" again
        report.down = [n for n, s in self.nodes.items() if s.up is not True]
        if not report.down and not attempted and not report.waiting:
            if self._dirty:
                self._dirty = False
                report.converged = True
                self._emit("converged", detail=f"{len(self.nodes)} nodes, "
                                 f"{sum(len(d) for d in self._desired.values())} objects")
        return report

    def _emit(self, kind: str, **fields) -> None:
        self.events.emit(kind, generation=self.generation, **fields)

    def _ready(self, node: str, action: Action, present: dict[str, set[Key]]) -> bool:
        assert self.config is not None, "called from a reconcile pass, which returns early without a config"
        need = desired_mod.prerequisite(self.config, node, action.message)
        return need is None or need[1] in present.get(need[0], ())

    # ------------------------------------------------------------ polling and liveness

    def _poll(self) -> None:
        now = time.monotonic()
        up_polls: dict[str, Future] = {}
        probes: dict[str, Future] = {}
        for name, status in self.nodes.items():
            if status.up is True:
                up_polls[name] = self._pool.submit(self._get_state, status)
            elif status.probe is None and now >= status.retry_at:
                self._close_client(status)  # a fresh channel: no gRPC reconnect backoff of its own
                status.probe = self._probes.submit(self._get_state, status)
                status.probe.add_done_callback(lambda _f: self._wake.set())
                probes[name] = status.probe
        wait(up_polls.values())
        if probes:
            wait(probes.values(), timeout=self.probe_grace)
        for name, future in up_polls.items():
            self._seen(self.nodes[name], future)
        for status in self.nodes.values():
            if status.probe is not None and status.probe.done():
                future, status.probe = status.probe, None
                self._seen(status, future)
        self.metrics.nodes_up.labels("collector").set(sum(s.up is True for s in self.nodes.values()))

    def _get_state(self, status: NodeStatus) -> pb.NodeState:
        client = status.client
        if client is None:
            client = status.client = self.client_factory(status.address, self.tls, self.timeout)
        return self._counted("GetState", client.get_state)

    def _counted(self, method: str, call, *args):
        """``call(*args)``, counted in srv6pm_api_calls_total by method and status code."""
        try:
            result = call(*args)
        except SouthboundError as exc:
            self.metrics.api_calls.labels("collector", method, exc.code.name).inc()
            raise
        self.metrics.api_calls.labels("collector", method, "OK").inc()
        return result

    def _seen(self, status: NodeStatus, future: Future) -> None:
        """Update liveness from a finished GetState."""
        error = future.exception()
        if error is None:
            state = future.result()
            status.state = state
            boot_id = state.info.boot_id or None
            status.failures, status.last_error = 0, None
            if status.up is not True:
                status.up = True
                self._emit("node_up", node=status.name, boot_id=boot_id, detail=status.address)
                self._status(status.name, True, boot_id)
            if status.boot_id is not None and boot_id != status.boot_id:
                self._emit("node_restarted", node=status.name, boot_id=boot_id,
                                 detail=f"boot_id {status.boot_id} -> {boot_id}: re-applying everything")
                status.full = True
                status.failed.clear()
                if status.up:
                    self._status(status.name, True, boot_id)
            status.boot_id = boot_id
            return
        self._down(status, error)

    def _down(self, status: NodeStatus, error: BaseException) -> None:
        text = str(error) if isinstance(error, SouthboundError) else repr(error)
        status.failures += 1
        status.last_error = text
        status.state = None
        status.retry_at = time.monotonic() + self.backoff.delay(status.failures)
        if status.up is not False:
            status.up = False
            self._emit("node_down", node=status.name, boot_id=status.boot_id,
                             detail=f"{status.address}: {text}")
            self._status(status.name, False, status.boot_id)
        log.info("node unreachable", extra={"node": status.name, "failures": status.failures,
                                             "retry_in_s": round(status.retry_at - time.monotonic(), 2)})

    def _status(self, name: str, alive: bool, boot_id: str | None) -> None:
        if self.on_status is not None:
            try:
                self.on_status(name, alive, boot_id, time.time_ns())
            except Exception:
                log.exception("status callback failed", extra={"node": name})

    def _close_client(self, status: NodeStatus) -> None:
        if status.client is not None:
            try:
                status.client.close()
            except Exception:
                pass
            status.client = None

    # ------------------------------------------------------------ acting

    def _act(self, status: NodeStatus, actions: list[Action], present: set[Key]) -> dict[str, int]:
        """Run one node's actions of one step in order; stop at the first unreachable error. Returns counts.

        The actions go in ``ApplyBatch`` calls of at most :data:`BATCH` items
        (each answered as its own RPC would be); an exporter without that RPC
        (UNIMPLEMENTED) gets them one call each from then on. The calls are
        made one after another, each while the answers of the one before are
        accounted for.
        """
        counts = {"applied": 0, "removed": 0, "unchanged": 0, "failed": 0}
        done: tuple[list[Action], list[Answer]] | None = None  # the call before, accounted for during the next
        for start in range(0, len(actions), BATCH):
            chunk = actions[start:start + BATCH]
            call = self._calls.submit(self._batch if status.batch else self._singly, status, chunk)
            if done is not None:
                self._account(status, *done, present, counts)
                done = None
            try:
                answers = call.result()
            except SouthboundError as exc:
                self._down(status, exc)
                break
            done = (chunk, answers)
            if len(answers) < len(chunk):  # unreachable part way
                break
        if done is not None:
            self._account(status, *done, present, counts)
        for verb, counter in (("apply", "applied"), ("remove", "removed")):
            if counts[counter]:
                self.metrics.reconcile_actions.labels("collector", verb).inc(counts[counter])
        return counts

    def _account(self, status: NodeStatus, chunk: list[Action], answers: list[Answer], present: set[Key],
                 counts: dict[str, int]) -> None:
        for action, (reply, error) in zip(chunk, answers, strict=False):  # answers stop at unreachable
            self._answered(status, action, reply, error, present, counts)

    def _batch(self, status: NodeStatus, chunk: list[Action]) -> list[Answer]:
        """[(reply, error)] of one ApplyBatch; SouthboundError if the node is unreachable."""
        try:
            results = self._counted("ApplyBatch", status.client.apply_batch, [_request(a) for a in chunk])
        except SouthboundError as exc:
            if exc.unreachable:
                raise
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                log.info("exporter has no ApplyBatch: one call per object", extra={"node": status.name})
                status.batch = False
            else:  # the call as a whole was refused (too large, say): each object on its own tells why
                log.warning("batch refused, one call per object", extra={"node": status.name, "error": str(exc)})
            return self._singly(status, chunk)
        out: list[Answer] = []
        calls: collections.Counter[tuple[str, str]] = collections.Counter()
        for action, r in zip(chunk, results, strict=True):  # the client checks one result per item
            code = _STATUS.get(r.code, grpc.StatusCode.UNKNOWN)
            calls[(_method(action), code.name)] += 1
            out.append((r.reply, None) if code == grpc.StatusCode.OK else (None, SouthboundError(code, r.error)))
        for (method, code_name), n in calls.items():  # per item (see metrics), counted once per batch
            self.metrics.api_calls.labels("collector", method, code_name).inc(n)
        return out

    def _singly(self, status: NodeStatus, chunk: list[Action]) -> list[Answer]:
        """[(reply, error)] of one call per action; stops (shorter list) at the first unreachable error."""
        out: list[Answer] = []
        for action in chunk:
            try:
                call = status.client.apply if action.verb == "apply" else status.client.remove
                reply = self._counted(_method(action), call, _request(action))
            except SouthboundError as exc:
                if exc.unreachable:
                    if not out:
                        raise
                    self._down(status, exc)
                    break
                out.append((None, exc))
                continue
            out.append((reply, None))
        return out

    def _answered(self, status: NodeStatus, action: Action, reply, error, present: set[Key],
                  counts: dict[str, int]) -> None:
        """Account for one action's answer: events, the node's presence set, refusals' backoff."""
        if error is not None:
            self._refused(status, action, error)
            counts["failed"] += 1
            return
        key = action.key
        if status.failed:
            status.failed.pop(key, None)
        if action.verb == "apply":
            present.add(key)
            # what the exporter now holds is this normal form: its next GetState need not validate it again
            status.normalised[(type(action.message).DESCRIPTOR.name,
                               action.message.SerializeToString(deterministic=True))] = action.message
        else:
            present.discard(key)
        if reply.changed:
            kind = "applied" if action.verb == "apply" else "removed"
            counts[kind] += 1  # counted in srv6pm_collector_reconcile_actions_total by _act
            self._emit(kind, node=status.name, object=action.object, boot_id=status.boot_id,
                       detail=reply.detail or None)
        else:
            counts["unchanged"] += 1
            log.debug("already so", extra={"node": status.name, "object": action.object})

    def _refused(self, status: NodeStatus, action: Action, exc: SouthboundError) -> None:
        self.metrics.apply_failures.labels("collector", status.name).inc()
        attempts = status.failed.get(action.key, (0,))[0] + 1
        status.failed[action.key] = (attempts, time.monotonic() + self.backoff.delay(attempts), action.message)
        verb = "" if action.verb == "apply" else "removing: "
        self._emit("apply_failed", node=status.name, object=action.object, boot_id=status.boot_id,
                         detail=f"{verb}{exc}")


def _actual(status: NodeStatus) -> dict[Key, Any]:
    """:func:`desired.actual_state <srv6pm.collector.desired.actual_state>` of the node's last ``GetState``, each
    object normalised only if it was not in the one before, byte for byte (validating every one of 50,000
    reported objects took seconds every round); the memo holds the objects of one answer, no more."""
    assert status.state is not None
    before, now = status.normalised, cast("dict[tuple[str, bytes], Any]", {})

    def normalise(message):
        raw = (type(message).DESCRIPTOR.name, message.SerializeToString(deterministic=True))
        found = before.get(raw) or now.get(raw)
        if found is None:
            found = validate.request(message)  # InvalidArgument: not remembered, kept as reported
        now[raw] = found
        return found
    actual = desired_mod.actual_state(status.state, normalise)
    status.normalised = now
    return actual


def _request(action: Action):
    """The message an action sends: the object to apply, or the ``*Ref`` that removes it."""
    return action.message if action.verb == "apply" else client_mod.ref_of(action.message)


def _method(action: Action) -> str:
    """The RPC that carries an action on its own (``ApplyPolicy``, ``StopFlowMonitoring``, ...)."""
    request = _request(action)
    return (client_mod._APPLY if action.verb == "apply" else client_mod._REMOVE)[type(request)]
