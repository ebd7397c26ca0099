"""``ApplyBatch``: the items of a batch, each answered as its own RPC would answer it.

The contract is the proto's (``rpc ApplyBatch``): per object, in order, not
all-or-nothing. :func:`apply_batch` holds the exporter's lock for the whole
batch, persists it in one transaction of the intent
(:meth:`~srv6pm.exporter.intent.Intent.held`) and reads the kernel's routes
once for it (:meth:`~srv6pm.exporter.routes.Routes.batch`).

Items other than flows go one by one through :meth:`Node.apply
<srv6pm.exporter.api.Node.apply>` / :meth:`Node.remove
<srv6pm.exporter.api.Node.remove>`. A run of consecutive flow items (starts
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

from .dataplane import DataplaneError
from .intent import SECONDARY

__all__ = ["apply_batch"]

log = logging.getLogger("srv6pm.exporter.api")

_FLOW_TYPES = (pb.FlowMonitor, pb.FlowMonitorRef)


def apply_batch(node, request: pb.Batch) -> pb.BatchReply:
    """Apply every item of ``request`` on ``node`` (an :class:`~srv6pm.exporter.api.Node`); one result per item."""
    results: list[pb.BatchResult | None] = [None] * len(request.items)
    with node.exporter.lock, node.intent.held(), node.exporter.routes.batch():
        run = _Run(node, results)
        for index, item in enumerate(request.items):
            try:
                message = validate.batch_object(item)
            except InvalidArgument as exc:
                results[index] = _error(exc)
                continue
            if isinstance(message, _FLOW_TYPES):
                run.take(index, message)
            else:
                run.flush()
                results[index] = _one(node, message)
        run.flush()
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
        try:
            msg = validate.request(message)
        except InvalidArgument as exc:
            self.results[index] = _error(exc)
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
