"""``ApplyBatch``: the items of a batch, each answered as its own RPC would answer it.

The contract is the proto's (``rpc ApplyBatch``): per object, in order, not
all-or-nothing. :func:`apply_batch` holds the exporter's lock for the whole
batch, persists it in one transaction of the intent
(:meth:`~srv6pm.exporter.intent.Intent.held`) and reads the kernel's routes
once for it (:meth:`~srv6pm.exporter.routes.Routes.batch`).

Items other than flows and policies go one by one through :meth:`Node.apply
<srv6pm.exporter.api.Node.apply>` / :meth:`Node.remove
<srv6pm.exporter.api.Node.remove>`.

A run of consecutive ``Policy`` items (each to a destination no other item of
the run has, none moving its policy to another destination) becomes ONE bulk
change of the kernel's routes (:meth:`~srv6pm.exporter.routes.Routes.apply_policies`:
the route requests sent together, each acknowledged on its own), so that ten
thousand policies are not ten thousand netlink round trips. Each is answered
as ``ApplyPolicy`` would answer it: a policy whose destination another policy
steers is refused, one already applied is checked against its route (and
repaired), one the kernel refuses is refused with the kernel's reason and
leaves its route and the applied state as they were, and the others are
applied and recorded. A policy that moves to another destination, or whose
destination the run already has, ends the run and is applied on its own.

A run of consecutive flow items (starts
and stops, each flow and role at most once in the run) becomes ONE
data-plane change (:meth:`~srv6pm.exporter.service.Exporter.change_flows`),
so a thousand new flows cost about what one costs. The answers are those of
applying the items one by one, because: every item is validated and checked
on its own first (an invalid or refused one is answered and left out); a run
holds its removals and replacements before its new flows (the data plane's
own order), so a removal after a new flow, or a key seen twice, starts a new
run; an item whose match an item of the run takes or frees ends the run, and
is then applied on its own; and if the data plane refuses the run's change as
a whole (two new flows with one FlowMonID, say), nothing of it was changed and
its items are applied one by one, each getting its own answer.
"""

from __future__ import annotations

import logging
from typing import cast

from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.southbound.validate import InvalidArgument

from srv6pm.netns import NetnsError

from .dataplane import DataplaneError
from .intent import SECONDARY
from .routes import RouteError

__all__ = ["apply_batch"]

log = logging.getLogger("srv6pm.exporter.api")

_FLOW_TYPES = (pb.FlowMonitor, pb.FlowMonitorRef)


def apply_batch(node, request: pb.Batch) -> pb.BatchReply:
    """Apply every item of ``request`` on ``node`` (an :class:`~srv6pm.exporter.api.Node`); one result per item."""
    results: list[pb.BatchResult | None] = [None] * len(request.items)
    with node.exporter.lock, node.intent.held(), node.exporter.routes.batch():
        run, policies = _Run(node, results), _Policies(node, results)
        for index, item in enumerate(request.items):
            try:
                message = validate.batch_object(item)
            except InvalidArgument as exc:
                results[index] = _error(exc)
                continue
            if isinstance(message, _FLOW_TYPES):
                policies.flush()
                run.take(index, message)
            elif isinstance(message, pb.Policy):
                run.flush()
                policies.take(index, message)
            else:
                run.flush()
                policies.flush()
                results[index] = _one(node, message)
        run.flush()
        policies.flush()
    return pb.BatchReply(results=cast("list[pb.BatchResult]", results))  # every index has its result now


def _one(node, message) -> pb.BatchResult:
    """The answer of one item's own RPC, as a result."""
    try:
        reply = node.remove(message) if type(message).__name__.endswith("Ref") else node.apply(message)
    except Exception as exc:
        return _error(exc)
    return pb.BatchResult(code=0, reply=reply)


def _error(exc: Exception) -> pb.BatchResult:
    """The result an RPC answering with ``exc`` gives (:func:`srv6pm.exporter.api.failure`); the batch goes on."""
    from .api import failure
    code, message = failure(exc, "batch item failed")
    return pb.BatchResult(code=code.value[0], error=message)


def _validated(results: list, index: int, message):
    """``message`` validated and normalised; None if it is invalid, item ``index``'s result then saying why."""
    try:
        return validate.request(message)
    except InvalidArgument as exc:
        results[index] = _error(exc)
        return None


def _match(f):
    """A flow monitor's secondary key in the intent (its counting match), or None."""
    return SECONDARY["flows"](f) if isinstance(f, pb.FlowMonitor) else None


class _Run:
    """Consecutive flow items gathered into one data-plane change; :meth:`flush` makes it and answers them.

    A run holds removals and replacements first, then new flows, each key at
    most once, so that the data plane's order (removals, then additions) is
    the items' order.
    """

    def __init__(self, node, results: list):
        self.node = node
        self.results = results
        self._clear()

    def _clear(self) -> None:
        self.changes: list[tuple[int, object, object]] = []  # (index, message, current)
        self.keys: set = set()
        self.touched: set = set()  # matches the run's items take or free
        self.adding = False

    def take(self, index: int, message) -> None:
        """Answer item ``index`` now if it changes nothing or is refused, else add it to the run."""
        from .api import Refused
        msg = _validated(self.results, index, message)
        if msg is None:
            return
        current = self.node.intent.get(msg)
        if current is None if isinstance(msg, pb.FlowMonitorRef) else current == msg:
            self.results[index] = _one(self.node, msg)  # "not applied" / "already applied": nothing to do
            return
        key = validate.key_of(msg)
        if key in self.keys or (current is not None and self.adding):
            self.flush()
        self.keys.add(key)
        if isinstance(msg, pb.FlowMonitor):
            match = _match(msg)
            if match is not None and (match in self.touched or self.node.intent.holder(msg) in self.keys):
                self.flush()  # its answer depends on the run's change: after it, on its own
                self.results[index] = _one(self.node, msg)
                return
            try:
                self.node._check_flow(msg)
            except (InvalidArgument, Refused) as exc:
                self.results[index] = _error(exc)
                return
            self.touched.add(match)
            self.adding = self.adding or current is None
        self.touched.add(_match(current))
        self.touched.discard(None)
        self.changes.append((index, msg, current))

    def flush(self) -> None:
        """Make the run's change, answer its items (one by one if the data plane refused them together)."""
        changes = self.changes
        self._clear()
        if changes:
            try:
                self.node.exporter.change_flows(add=[m for _, m, _ in changes if isinstance(m, pb.FlowMonitor)],
                                                remove=[c for _, _, c in changes if c is not None])
            except (ValueError, DataplaneError) as exc:
                log.info("a batch's flows refused together: applying them one by one",
                         extra={"node": self.node.exporter.config.node, "items": len(changes), "error": str(exc)})
                for index, msg, _ in changes:
                    self.results[index] = _one(self.node, msg)
            else:
                for index, msg, current in changes:
                    self.results[index] = pb.BatchResult(code=0, reply=self.node.recorded(msg, current))


class _Policies:
    """Consecutive policy items gathered into one bulk route change; :meth:`flush` makes it and answers them."""

    def __init__(self, node, results: list):
        self.node = node
        self.results = results
        self.items: list[tuple[int, pb.Policy, pb.Policy | None]] = []  # (index, policy, current)
        self.destinations: set[str] = set()
        self.names: set[str] = set()

    def take(self, index: int, message) -> None:
        """Answer item ``index`` now if it is invalid or refused by the applied state, else add it to the run."""
        from .api import Refused
        msg = _validated(self.results, index, message)
        if msg is None:
            return
        current = self.node.intent.get(msg)
        if (msg.destination in self.destinations or msg.name in self.names
                or (current is not None and current.destination != msg.destination)):
            self.flush()  # its answer depends on the run's change, or it moves: after it, on its own
            self.results[index] = _one(self.node, msg)
            return
        other = self.node.intent.holder(msg)
        if other is not None:
            self.results[index] = _error(Refused(f"destination: {msg.destination} is already steered by "
                                                 f"policy {other!r}"))
            return
        self.destinations.add(msg.destination)
        self.names.add(msg.name)
        self.items.append((index, msg, current))

    def flush(self) -> None:
        """Apply the run's policies in bulk and answer each as ``ApplyPolicy`` would."""
        from .api import Refused, _describe
        items, self.items = self.items, []
        self.destinations, self.names = set(), set()
        if not items:
            return
        try:
            answers: list = self.node.exporter.routes.apply_policies([msg for _, msg, _ in items])
        except NetnsError as exc:
            answers = [exc] * len(items)
        for (index, msg, current), answer in zip(items, answers, strict=True):
            if isinstance(answer, (RouteError, NetnsError)):
                self.results[index] = _error(Refused(str(answer)))
            elif current != msg:
                self.results[index] = pb.BatchResult(code=0, reply=self.node.recorded(msg, current))
            elif answer:
                what = _describe(msg)
                log.warning("route repaired", extra={"node": self.node.exporter.config.node, "object": what})
                self.results[index] = pb.BatchResult(code=0, reply=pb.ApplyReply(changed=True,
                                                                                  detail=f"repaired {what}"))
            else:
                self.results[index] = pb.BatchResult(code=0, reply=pb.ApplyReply(
                    changed=False, detail=f"{_describe(msg)} already applied"))
