"""A typed client of one node exporter's southbound API.

:class:`ExporterClient` wraps the generated ``NodeExporterStub``: one method
per kind of call, :meth:`~ExporterClient.apply` and
:meth:`~ExporterClient.remove` dispatching on the message's type. Every call
has a deadline (``timeout``) and fails fast when the exporter is not
reachable (no waiting for the channel to become ready). Failures are raised
as :class:`SouthboundError` carrying the gRPC status code;
``.unreachable`` tells "try again later" apart from "the exporter said no".
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from srv6pm.errors import OperationError
from srv6pm.southbound import validate
from srv6pm.southbound.tls import ClientTls, channel
from srv6pm.southbound.v1 import southbound_pb2 as pb
from srv6pm.southbound.v1 import southbound_pb2_grpc as rpc

__all__ = ["ExporterClient", "SouthboundError", "ref_of"]

log = logging.getLogger("srv6pm.southbound")

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

# message type -> name of the stub's method
_APPLY = {
    pb.LocalSid: "ApplyLocalSid",
    pb.Policy: "ApplyPolicy",
    pb.FlowMonitor: "StartFlowMonitoring",
    pb.StampSession: "StartStampSession",
    pb.StampReflector: "StartStampReflector",
}
_REMOVE = {
    pb.LocalSidRef: "RemoveLocalSid",
    pb.PolicyRef: "RemovePolicy",
    pb.FlowMonitorRef: "StopFlowMonitoring",
    pb.StampSessionRef: "StopStampSession",
    pb.StampReflectorRef: "StopStampReflector",
}


class SouthboundError(OperationError):
    """A southbound call failed. ``code`` is the ``grpc.StatusCode``; ``str()`` is ``"CODE: message"``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(code, message)
        self.code = code
        self.message = message

    @property
    def unreachable(self) -> bool:
        """True when the exporter did not answer (UNAVAILABLE, DEADLINE_EXCEEDED): worth retrying."""
        return self.code in _UNREACHABLE

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def ref_of(message):
    """The ``*Ref`` message that removes an applied object (``Policy`` -> ``PolicyRef`` of its name, ...).

    ``TypeError`` for a message that is not an applicable object.
    """
    if isinstance(message, pb.LocalSid):
        return pb.LocalSidRef(sid=message.sid)
    if isinstance(message, pb.Policy):
        return pb.PolicyRef(name=message.name)
    if isinstance(message, pb.FlowMonitor):
        return pb.FlowMonitorRef(flow=message.flow, role=message.role)
    if isinstance(message, pb.StampSession):
        return pb.StampSessionRef(name=message.name)
    if isinstance(message, pb.StampReflector):
        return pb.StampReflectorRef()
    raise TypeError(f"nothing removes a {type(message).__name__}")


class ExporterClient:
    """Client of the exporter at ``address`` (``host:port``); TLS with ``tls``, plaintext when None.

    The channel is created at once but connects lazily, at the first call.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, address: str, tls: ClientTls | None = None, timeout: float = 5.0):
        if not timeout > 0:
            raise ValueError(f"timeout: {timeout!r} is not a positive number of seconds")
        self.address = address
        self.timeout = timeout
        self._channel = channel(address, tls)
        self._stub = rpc.NodeExporterStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            log.debug("southbound call failed", extra={"address": self.address, "code": code.name,
                                                       "details": details})
            raise SouthboundError(code, details) from None

    def get_info(self) -> pb.NodeInfo:
        return self._call(self._stub.GetInfo, pb.GetInfoRequest())

    def get_state(self) -> pb.NodeState:
        return self._call(self._stub.GetState, pb.GetStateRequest())

    def apply(self, message) -> pb.ApplyReply:
        """Apply (or start) a ``LocalSid``, ``Policy``, ``FlowMonitor``, ``StampSession`` or ``StampReflector``."""
        try:
            name = _APPLY[type(message)]
        except KeyError:
            raise TypeError(f"cannot apply a {type(message).__name__}") from None
        return self._call(getattr(self._stub, name), message)

    def remove(self, message) -> pb.ApplyReply:
        """Remove (or stop) what a ``*Ref`` message names; an applied object stands for its ref (:func:`ref_of`)."""
        if type(message) in _APPLY:
            message = ref_of(message)
        try:
            name = _REMOVE[type(message)]
        except KeyError:
            raise TypeError(f"cannot remove by a {type(message).__name__}") from None
        return self._call(getattr(self._stub, name), message)

    def apply_batch(self, messages) -> list[pb.BatchResult]:
        """``ApplyBatch`` of objects to apply and ``*Ref`` s to remove, in order; one result per message.

        The deadline grows with the batch (``timeout`` plus 10 ms an item). An
        exporter without the RPC answers ``UNIMPLEMENTED`` (a SouthboundError).
        """
        request = pb.Batch(items=[validate.batch_item(m) for m in messages])
        reply = self._call(self._stub.ApplyBatch, request, self.timeout + 0.01 * len(request.items))
        if len(reply.results) != len(request.items):
            raise SouthboundError(grpc.StatusCode.INTERNAL, f"{len(reply.results)} results for "
                                                            f"{len(request.items)} items")
        return list(reply.results)

    def read_counters(self, flow: str = "") -> pb.Counters:
        """The data plane's counters of ``flow``, or of every flow when empty."""
        return self._call(self._stub.ReadCounters, pb.ReadCountersRequest(flow=flow))

    def health(self, service: str = "") -> str:
        """The serving status (grpc.health.v1) of ``service`` ("" = the whole server): "SERVING", "NOT_SERVING"..."""
        reply = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ExporterClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
