"""A stand-in node exporter for the collector's tests: a REAL gRPC server over an in-memory dict.

It serves ``srv6pm.southbound.v1.NodeExporter`` on a real socket and keeps the
contract of the proto's header as far as the collector can observe it:
requests are validated with :mod:`srv6pm.southbound.validate` (bad ones get
INVALID_ARGUMENT), applying what is applied answers changed=False, a different
object under the same key replaces it, removing what is absent answers
changed=False. There is no kernel behind it: it exercises only the collector's
logic (ordering, liveness, retries, restarts, reload). The real exporter is
tested against the same contract in its own tests.

Test hooks: ``refuse[key] = "reason"`` answers FAILED_PRECONDITION for that
object; ``unavailable = True`` answers every call UNAVAILABLE; ``no_batch =
True`` answers ApplyBatch UNIMPLEMENTED (an older exporter); ``batches`` holds
the size of every ApplyBatch call; ``calls`` logs every mutating call, and
every item of a batch, as (sequence, node, verb, object) with a sequence number
shared by all stand-ins of a :class:`CallLog`, so tests can check the order
across nodes; :meth:`StandIn.restart` stops the server and starts a new one on
the same port with a new boot_id (keeping or dropping the state).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from concurrent import futures

import grpc

from srv6pm.collector import desired
from srv6pm.southbound import validate
from srv6pm.southbound.tls import ServerTls, server_port
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.southbound.v1 import southbound_pb2_grpc as rpc


class CallLog:
    """Mutating calls of several stand-ins in one global order."""

    def __init__(self):
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.calls: list[tuple[int, str, str, str]] = []

    def add(self, node: str, verb: str, obj: str) -> None:
        with self._lock:
            self.calls.append((next(self._seq), node, verb, obj))

    def index(self, node: str, verb: str, obj: str) -> int:
        """Sequence number of the LAST such call (ValueError if none)."""
        for seq, n, v, o in reversed(self.calls):
            if (n, v, o) == (node, verb, obj):
                return seq
        raise ValueError(f"no call {verb} {obj} at {node}")

    def of(self, node: str | None = None, verb: str | None = None) -> list[str]:
        return [o for _, n, v, o in self.calls if (node is None or n == node) and (verb is None or v == verb)]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


class _Servicer(rpc.NodeExporterServicer):
    def __init__(self, owner: "StandIn"):
        self.o = owner

    def _guard(self, context):
        if self.o.unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in told to be unavailable")

    def GetInfo(self, request, context):
        self._guard(context)
        return pb.NodeInfo(node=self.o.name, boot_id=self.o.boot_id, period_s=1.0, version="stand-in",
                           started_ns=self.o.started_ns)

    def GetState(self, request, context):
        self._guard(context)
        self.o.polls += 1
        state = pb.NodeState(info=self.GetInfo(request, context))
        with self.o.lock:
            for m in self.o.objects.values():
                if isinstance(m, pb.LocalSid):
                    state.local_sids.append(m)
                elif isinstance(m, pb.Policy):
                    state.policies.append(m)
                elif isinstance(m, pb.FlowMonitor):
                    state.flows.append(m)
                elif isinstance(m, pb.StampSession):
                    state.stamp_sessions.append(m)
                elif isinstance(m, pb.StampReflector):
                    state.stamp_reflector.CopyFrom(m)
        return state

    def _apply(self, request, context):
        self._guard(context)
        return self._answer(context, self._apply_one(request))

    def _remove(self, request, context, kind: str = ""):
        self._guard(context)
        return self._answer(context, self._remove_one(request))

    @staticmethod
    def _answer(context, outcome):
        if isinstance(outcome, pb.ApplyReply):
            return outcome
        context.abort(*outcome)

    def _apply_one(self, request):
        """The reply, or (status code, message) of a refusal."""
        try:
            m = validate.request(request)
        except validate.InvalidArgument as exc:
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        k = desired.key(m)
        obj = desired.describe(m)
        self.o.log.add(self.o.name, "apply", obj)
        if k in self.o.refuse:
            return grpc.StatusCode.FAILED_PRECONDITION, self.o.refuse[k]
        with self.o.lock:
            if self.o.objects.get(k) == m:
                return pb.ApplyReply(changed=False, detail="already so")
            self.o.objects[k] = m
        return pb.ApplyReply(changed=True, detail=f"applied {obj}")

    def _remove_one(self, request):
        try:
            ref = validate.request(request)
        except validate.InvalidArgument as exc:
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        kind = type(ref).__name__.removesuffix("Ref")
        k = (kind, validate.key_of(ref))
        with self.o.lock:
            m = self.o.objects.pop(k, None)
        self.o.log.add(self.o.name, "remove", desired.describe(m) if m is not None else f"{kind} {k[1]}")
        return pb.ApplyReply(changed=m is not None)

    def ApplyBatch(self, request, context):
        self._guard(context)
        if self.o.no_batch:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "stand-in told to be an exporter without ApplyBatch")
        self.o.batches.append(len(request.items))
        results = []
        for item in request.items:
            try:
                message = validate.batch_object(item)
            except validate.InvalidArgument as exc:
                results.append(pb.BatchResult(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], error=str(exc)))
                continue
            one = self._remove_one if type(message).__name__.endswith("Ref") else self._apply_one
            outcome = one(message)
            if isinstance(outcome, pb.ApplyReply):
                results.append(pb.BatchResult(code=0, reply=outcome))
            else:
                results.append(pb.BatchResult(code=outcome[0].value[0], error=outcome[1]))
        return pb.BatchReply(results=results)

    ApplyLocalSid = ApplyPolicy = StartFlowMonitoring = StartStampSession = StartStampReflector = _apply

    RemoveLocalSid = RemovePolicy = StopFlowMonitoring = StopStampSession = StopStampReflector = _remove


class StandIn:
    """A stand-in exporter named ``name`` listening on 127.0.0.1:``port`` (0: any free port), with ``tls`` if given."""

    def __init__(self, name: str, log: CallLog | None = None, port: int = 0, tls: ServerTls | None = None):
        self.name = name
        self.tls = tls
        self.log = log or CallLog()
        self.port = port
        self.lock = threading.Lock()
        self.objects: dict = {}
        self.refuse: dict = {}
        self.unavailable = False
        self.no_batch = False
        self.batches: list[int] = []  # the size of every ApplyBatch call
        self.polls = 0
        self.server: grpc.Server | None = None
        self.boot_id = ""
        self.started_ns = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "StandIn":
        self.boot_id = uuid.uuid4().hex
        self.started_ns = time.time_ns()
        server = grpc.server(futures.ThreadPoolExecutor(4))
        rpc.add_NodeExporterServicer_to_server(_Servicer(self), server)
        self.port = server_port(server, f"127.0.0.1:{self.port}", self.tls)
        server.start()
        self.server = server
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait()
            self.server = None

    def restart(self, keep_state: bool = True) -> None:
        """A new process: stop, start on the same port with a new boot_id; ``keep_state`` like a persisted intent."""
        self.stop()
        if not keep_state:
            with self.lock:
                self.objects.clear()
        self.start()

    def kinds(self) -> set[str]:
        """The objects held, as the collector's events name them."""
        with self.lock:
            return {desired.describe(m) for m in self.objects.values()}

    def __enter__(self) -> "StandIn":
        return self.start() if self.server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
