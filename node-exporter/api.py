"""The southbound API of the node exporter: the ``NodeExporter`` gRPC service and the health service.

The contract is the header of ``proto/srv6pm/southbound/v1/southbound.proto``.
:class:`Node` holds the logic, without gRPC (the exporter also uses it at start
for its persisted state and its configuration file); :class:`Servicer` maps it
onto gRPC status codes; :class:`ApiServer` serves both services.

Every mutating call:

1. validates and normalises the request (:mod:`srv6pm.southbound.validate`):
   a bad field is :class:`InvalidArgument` -> ``INVALID_ARGUMENT``, ``str()``
   starting with the field's name;
2. compares it with the applied state (:mod:`.intent`). Equal: nothing is
   done (``changed=false``), except that for SIDs and policies the kernel's
   route is checked and repaired if it went missing or was changed
   (``changed=true``, detail ``"repaired ..."``);
3. otherwise applies it to the kernel, nftables or STAMP first and records it
   in the applied state only on success. A refusal (the kernel's, with its
   reason, or a conflict with another applied object) is :class:`Refused` ->
   ``FAILED_PRECONDITION``, and leaves everything as it was: a policy moved to
   another destination gets its new route before the old one is deleted, and
   the new one is deleted again if that fails; the flow set changes in one
   nftables transaction; a STAMP session is checked before the running one
   is replaced.

Removing what is not applied answers ``changed=false``. All calls are
serialised with the exporter loop's use of the data plane by
:attr:`Exporter.lock <srv6pm.exporter.service.Exporter.lock>`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from srv6pm import __version__, metrics
from srv6pm.errors import OperationError, grpc_status
from srv6pm.netns import NetnsError
from srv6pm.southbound import tls as southbound_tls
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.southbound.v1 import southbound_pb2_grpc as rpc
from srv6pm.southbound.validate import InvalidArgument

from .dataplane import DataplaneError
from .batch import apply_batch
from .intent import kind_of
from .probes import ProbeError
from .routes import RouteError

__all__ = ["ApiServer", "InvalidArgument", "Node", "Refused", "ServerSettings", "Servicer", "SERVICE_NAME", "failure"]

log = logging.getLogger("srv6pm.exporter.api")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NodeExporter"].full_name  # srv6pm.southbound.v1.NodeExporter
ROLE_NAMES = validate.ROLE_NAMES
ROLE_VALUES = validate.ROLE_VALUES


class Refused(OperationError, RuntimeError):
    """The node cannot make the change (the kernel refused, or it conflicts with applied state).

    ``str()`` is one line with the reason. Nothing was changed.
    """


def _describe(message) -> str:
    key = validate.key_of(message)
    if isinstance(key, tuple):
        key = f"{key[0]}/{ROLE_NAMES.get(key[1], key[1])}"
    return f"{kind_of(message)} {key}"


class Node:
    """What the API does, on one :class:`~srv6pm.exporter.service.Exporter`."""

    def __init__(self, exporter):
        self.exporter = exporter

    @property
    def intent(self):
        return self.exporter.intent

    # -- queries ------------------------------------------------------------------------
    def info(self) -> pb.NodeInfo:
        e = self.exporter
        return pb.NodeInfo(node=e.config.node, boot_id=e.boot_id, period_s=e.config.period, version=__version__,
                           started_ns=e.started_ns, dataplane=e.config.dataplane)

    def state(self) -> pb.NodeState:
        with self.exporter.lock:
            state = pb.NodeState(info=self.info(), local_sids=self.intent.items("local_sids"),
                                 policies=self.intent.items("policies"), flows=self.intent.items("flows"),
                                 stamp_sessions=self.intent.items("stamp_sessions"),
                                 session_status=self.exporter.probes.session_status())
            reflector = self.intent.items("stamp_reflector")
            if reflector:
                state.stamp_reflector.CopyFrom(reflector[0])
            status = self.exporter.probes.reflector_status()
            if status is not None:
                state.reflector_status.CopyFrom(status)
        return state

    def counters(self, request: pb.ReadCountersRequest) -> pb.Counters:
        if request.flow:
            validate.name("flow", request.flow)
        try:
            readings = self.exporter.read_counters(request.flow)
        except DataplaneError as exc:
            raise Refused(str(exc)) from None
        out = pb.Counters(read_ns=time.time_ns())
        for role, colour, reading in readings:
            for flow, (packets, nbytes) in sorted(reading.counts.items()):
                ids = self.exporter.flow_ids(flow, role)
                out.counters.add(flow=flow, role=ROLE_VALUES[role], colour=colour, packets=packets, bytes=nbytes,
                                 generation=reading.generation, flowmon_id=ids[0] if ids else 0)
        return out

    # -- changes ------------------------------------------------------------------------
    def apply(self, message) -> pb.ApplyReply:
        """Apply an object (any of the API's object messages); see the module documentation."""
        msg = validate.request(message)
        kind = kind_of(msg)
        what = _describe(msg)
        with self.exporter.lock:
            current = self.intent.get(msg)
            if current == msg:
                if kind in ("local_sids", "policies") and self._route(kind, msg):
                    log.warning("route repaired", extra={"node": self.exporter.config.node, "object": what})
                    return pb.ApplyReply(changed=True, detail=f"repaired {what}")
                return pb.ApplyReply(changed=False, detail=f"{what} already applied")
            try:
                getattr(self, f"_apply_{kind}")(msg, current)
            except (RouteError, DataplaneError, ProbeError, NetnsError) as exc:
                raise Refused(str(exc)) from None
            return self.recorded(msg, current)

    def remove(self, ref) -> pb.ApplyReply:
        """Remove the object a ``*Ref`` message names; see the module documentation."""
        ref = validate.request(ref)
        kind = kind_of(ref)
        with self.exporter.lock:
            current = self.intent.get(ref)
            if current is None:
                return pb.ApplyReply(changed=False, detail=f"{kind} {self._key_text(ref)} not applied")
            try:
                getattr(self, f"_remove_{kind}")(current)
            except (RouteError, DataplaneError, ProbeError, NetnsError) as exc:
                raise Refused(str(exc)) from None
            return self.recorded(ref, current)

    def recorded(self, msg, current) -> pb.ApplyReply:
        """Record a change the node made in the intent, log it and answer it.

        ``msg`` is the object applied over ``current`` (None: there was none),
        or the ``*Ref`` that removed ``current``.
        """
        if type(msg).__name__.endswith("Ref"):
            verb, what = "removed", _describe(current)
            self.intent.remove(msg)
        else:
            verb, what = "replaced" if current is not None else "applied", _describe(msg)
            self.intent.put(msg)
        log.info("removed" if verb == "removed" else "applied", extra={"node": self.exporter.config.node,
                                                                       "object": what})
        return pb.ApplyReply(changed=True, detail=f"{verb} {what}")

    def batch(self, request: pb.Batch) -> pb.BatchReply:
        """``ApplyBatch``: every item answered as its own RPC would (:mod:`.batch`)."""
        return apply_batch(self, request)

    @staticmethod
    def _key_text(ref) -> str:
        key = validate.key_of(ref)
        return f"{key[0]}/{ROLE_NAMES.get(key[1], key[1])}" if isinstance(key, tuple) else str(key)

    def _route(self, kind: str, msg) -> bool:
        """Make the kernel's route of an applied SID or policy match it; True if it had to change."""
        try:
            if kind == "local_sids":
                return self.exporter.routes.apply_local_sid(msg)
            return self.exporter.routes.apply_policy(msg)
        except (RouteError, NetnsError) as exc:
            raise Refused(str(exc)) from None

    def _apply_local_sids(self, sid: pb.LocalSid, current) -> None:
        self.exporter.routes.apply_local_sid(sid)

    def _remove_local_sids(self, sid: pb.LocalSid) -> None:
        self.exporter.routes.remove_local_sid(sid.sid)

    def _apply_policies(self, policy: pb.Policy, current: pb.Policy | None) -> None:
        other = self.intent.holder(policy)
        if other is not None:
            raise Refused(f"destination: {policy.destination} is already steered by policy {other!r}")
        routes = self.exporter.routes
        created = routes.apply_policy(policy)
        if current is not None and current.destination != policy.destination:
            try:
                routes.remove_policy(current.destination)
            except RouteError:
                if created:  # undo: the node keeps the old policy only
                    routes.remove_policy(policy.destination)
                raise

    def _remove_policies(self, policy: pb.Policy) -> None:
        self.exporter.routes.remove_policy(policy.destination)

    def _check_flow(self, flow: pb.FlowMonitor) -> None:
        """Refuse a monitor this data plane cannot count, or whose match another flow counts (a lookup)."""
        if self.exporter.config.dataplane == "ebpf" and not flow.flowmon_id:
            raise InvalidArgument("flowmon_id", "missing: the ebpf data plane carries and counts the FlowMonID "
                                  "(the collector allocates it)")
        if self.exporter.config.dataplane == "nftables" and flow.role == pb.ROLE_TRANSIT:
            raise Refused("role: transit counting needs the ebpf data plane (this exporter runs nftables)")
        other = self.intent.holder(flow)
        if other is not None:
            raise Refused(f"source_prefix: flow {other[0]!r} has the same {ROLE_NAMES[flow.role]} match "
                          f"{flow.source_prefix} -> {flow.destination_prefix}: the counters could not tell "
                          "them apart")

    def _apply_flows(self, flow: pb.FlowMonitor, current) -> None:
        self._check_flow(flow)
        try:
            self.exporter.change_flows(add=[flow], remove=[current] if current is not None else [])
        except ValueError as exc:
            raise Refused(str(exc)) from None

    def _remove_flows(self, flow: pb.FlowMonitor) -> None:
        self.exporter.change_flows(remove=[flow])

    def _apply_stamp_sessions(self, session: pb.StampSession, current) -> None:
        self.exporter.probes.start_session(session)

    def _remove_stamp_sessions(self, session: pb.StampSession) -> None:
        self.exporter.probes.stop_session(session.name)

    def _apply_stamp_reflector(self, reflector: pb.StampReflector, current) -> None:
        self.exporter.probes.start_reflector(reflector)

    def _remove_stamp_reflector(self, reflector: pb.StampReflector) -> None:
        self.exporter.probes.stop_reflector()


def failure(exc: Exception, what: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message of an RPC failing with ``exc``: the code follows from the error's class.

    (:func:`srv6pm.errors.grpc_status`: bad input ``INVALID_ARGUMENT``, a refused
    or failed change ``FAILED_PRECONDITION``). Anything else is a bug or an
    unexpected failure: ``INTERNAL``, the message names its type, and the log
    gets ``what`` and the traceback.
    """
    code = grpc_status(exc)
    if code != grpc.StatusCode.INTERNAL:
        return code, str(exc)
    log.error(what, exc_info=exc, extra={"error": str(exc)})
    return code, f"{type(exc).__name__}: {exc}"


class Servicer(rpc.NodeExporterServicer):
    """``NodeExporter`` over gRPC: :class:`Node`'s answers and errors as status codes."""

    def __init__(self, node: Node):
        self.node = node

    def _do(self, context, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            error = failure(exc, "request failed")
        context.abort(*error)

    def GetInfo(self, request, context):
        return self._do(context, self.node.info)

    def GetState(self, request, context):
        return self._do(context, self.node.state)

    def ReadCounters(self, request, context):
        return self._do(context, self.node.counters, request)

    def ApplyBatch(self, request, context):
        return self._do(context, self.node.batch, request)

    def _apply(self, request, context):
        return self._do(context, self.node.apply, request)

    def _remove(self, request, context):
        return self._do(context, self.node.remove, request)

    ApplyLocalSid = ApplyPolicy = StartFlowMonitoring = StartStampSession = StartStampReflector = _apply
    RemoveLocalSid = RemovePolicy = StopFlowMonitoring = StopStampSession = StopStampReflector = _remove


@dataclass(frozen=True)
class ServerSettings:
    """Where the API listens (``host:port``; port 0: any free port) and its TLS (None: plaintext)."""

    listen: str
    tls: southbound_tls.ServerTls | None = None


class ApiServer:
    """The gRPC server of one exporter: ``NodeExporter`` plus the standard health service.

    :meth:`start` binds and prints one JSON line on stdout (and logs it)::

        {"event": "listening", "node": "r1", "address": "127.0.0.1:50051", "tls": true}

    with the actual port when ``listen`` asked for port 0. Health is
    NOT_SERVING until :meth:`serving` says otherwise, for ``""`` and for
    ``srv6pm.southbound.v1.NodeExporter``.
    """

    def __init__(self, node: Node, settings: ServerSettings, *, workers: int = 8):
        self.node = node
        self.settings = settings
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                                  interceptors=[metrics.api_call_interceptor("exporter")])
        rpc.add_NodeExporterServicer_to_server(Servicer(node), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.serving(False)
        self.address: str | None = None
        self.port: int | None = None

    def start(self) -> int:
        """Bind and start; returns the port. ``OSError`` if it cannot listen, ``TlsError`` for bad TLS files."""
        self.port = southbound_tls.server_port(self.server, self.settings.listen, self.settings.tls)
        host = self.settings.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{self.port}"
        self.server.start()
        event = {"event": "listening", "node": self.node.exporter.config.node, "address": self.address,
                 "tls": self.settings.tls is not None}
        print(json.dumps(event), file=sys.stdout, flush=True)
        log.info("listening", extra={k: v for k, v in event.items() if k != "event"})
        return self.port

    def serving(self, on: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if on else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    def stop(self, grace: float = 2.0) -> None:
        """NOT_SERVING, then stop (in-flight calls get ``grace`` seconds)."""
        self.serving(False)
        self.server.stop(grace).wait()
