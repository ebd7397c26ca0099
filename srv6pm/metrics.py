"""Prometheus metrics of every long-running srv6pm component.

One small API for all components::

    from srv6pm import metrics
    metrics.add_metrics_argument(parser)           # --metrics-port N (env SRV6PM_METRICS_PORT)
    metrics.serve(metrics.port_from_args(args))    # None or 0: no endpoint
    m = metrics.get()                              # the metric families of this process
    m.records_in.labels("processor", "srv6pm.counters").inc()

:func:`get` returns the :class:`Metrics` registered on a registry (by default
prometheus_client's process-wide ``REGISTRY``, which also carries the
process and platform collectors), creating them once. Tests pass a fresh
``CollectorRegistry`` so that their counts start at zero.

Every family has a ``component`` label (``processor``, ``exporter``,
``collector``), so the series of different components never mix even when one
Prometheus scrapes them all, and a family that a component does not use shows
no series in its output.

=================================================  =============================  ==============================
metric                                             labels                         meaning
=================================================  =============================  ==============================
``srv6pm_records_in_total``                        component, topic               records consumed
``srv6pm_records_out_total``                       component, topic               records published
``srv6pm_errors_total``                            component, kind                failed attempts (publish, store,
                                                                                  ...), each retry counts
``srv6pm_deadletters_total``                       component, topic               input records dead-lettered
``srv6pm_consumer_lag``                            component, topic, partition    end offset − position
``srv6pm_period_latency_seconds``                  component, topic               end of a period → its result
                                                                                  stored and published (histogram)
``srv6pm_waiting``                                 component, what                1 while waiting for a service
                                                                                  that is away (``what``:
                                                                                  influxdb, kafka, ...)
``srv6pm_waits_total``                             component, what                waits begun (see
                                                                                  ``srv6pm.waiting``)
``srv6pm_store_misconfigured``                     component, cause               1 while InfluxDB refuses
                                                                                  every write for a reason the
                                                                                  operator must fix (cause:
                                                                                  unauthorized, forbidden,
                                                                                  not_found, refused)
``srv6pm_store_refused_points_total``              component, status              points InfluxDB refused as
                                                                                  data, their results
                                                                                  dead-lettered
``srv6pm_exporter_blocks_published_total``         component, node                counter blocks published
``srv6pm_exporter_guard_misses_total``             component, node                guard times missed
``srv6pm_api_calls_total``                         component, method, code        southbound gRPC calls (served
                                                                                  by the exporter, made by the
                                                                                  collector; the collector also
                                                                                  counts each ApplyBatch item as
                                                                                  the RPC it stands for, with
                                                                                  the item's code)
``srv6pm_collector_nodes_up``                      component                      nodes whose exporter answers
``srv6pm_collector_reconcile_actions_total``       component, action              changes the reconciler applied
``srv6pm_collector_apply_failures_total``          component, node                failed applies per node
=================================================  =============================  ==============================
"""

from __future__ import annotations

import argparse
import threading
from bisect import bisect_left
from collections.abc import Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from srv6pm.config import ConfigError, given
from srv6pm.errors import OperationError
from srv6pm.quote import quote

__all__ = ["ENV_PORT", "Metrics", "MetricsError", "add_metrics_argument", "api_call_interceptor", "get", "observe_all",
           "port_from_args", "serve"]

ENV_PORT = "SRV6PM_METRICS_PORT"

# Period latency is at least the guard time (half a period) plus the pairing
# wait; the buckets cover lab periods of 1 s to production periods of minutes.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class MetricsError(OperationError, RuntimeError):
    """The metrics endpoint could not be started; ``str()`` says why."""


class Metrics:
    """Every srv6pm metric family, registered on one registry (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

        def counter(name, text, labels):
            return Counter(name, text, ["component", *labels], registry=registry)

        # -- all components ----------------------------------------------------
        self.records_in = counter("srv6pm_records_in", "Records consumed, per topic.", ["topic"])
        self.records_out = counter("srv6pm_records_out", "Records published, per topic.", ["topic"])
        self.errors = counter("srv6pm_errors", "Failed attempts (each retry counts), per kind.", ["kind"])
        self.deadletters = counter("srv6pm_deadletters", "Input records sent to srv6pm.deadletter, per input topic.",
                                   ["topic"])
        self.consumer_lag = Gauge("srv6pm_consumer_lag", "Records on a partition not yet consumed "
                                  "(end offset minus position), per assigned partition.",
                                  ["component", "topic", "partition"], registry=registry)
        self.period_latency = Histogram("srv6pm_period_latency_seconds", "Seconds from the end of a period "
                                        "to its result being stored in InfluxDB and published, per result topic.", ["component", "topic"],
                                        buckets=LATENCY_BUCKETS, registry=registry)
        self.waiting = Gauge("srv6pm_waiting", "1 while the component waits for a service that is away "
                             "(influxdb, kafka, ...), else 0.", ["component", "what"], registry=registry)
        self.waits = counter("srv6pm_waits", "Waits begun for a service that was away.", ["what"])
        self.store_misconfigured = Gauge("srv6pm_store_misconfigured", "1 while InfluxDB refuses every write for "
                                         "a reason only the operator can fix (cause: unauthorized, forbidden, "
                                         "not_found, refused), else 0.", ["component", "cause"], registry=registry)
        self.store_refused = counter("srv6pm_store_refused_points", "Points InfluxDB refused as data (HTTP 400, "
                                     "413, 422), their results dead-lettered, per HTTP status.", ["status"])
        # -- node exporter -----------------------------------------------------
        self.blocks_published = counter("srv6pm_exporter_blocks_published",
                                        "Counter blocks published to srv6pm.counters.", ["node"])
        self.guard_misses = counter("srv6pm_exporter_guard_misses",
                                    "Guard times missed (the period is lost, reported incomplete).", ["node"])
        self.stamp_impossible_timestamps = counter(
            "srv6pm_stamp_impossible_timestamps", "STAMP replies whose t2/t3 cannot be right (left out of "
            "one-way delay): the exporter counts those its senders get, the processor those it takes.", ["session"])
        self.buffered = Gauge("srv6pm_exporter_buffered_records", "Records kept in the exporter's on-disk buffer, "
                              "not yet published.", ["component", "node"], registry=registry)
        self.buffer_dropped = counter("srv6pm_exporter_buffer_dropped", "Records dropped, oldest first, because "
                                      "the buffer was full (or a buffer file unreadable); their periods end up "
                                      "incomplete.", ["node"])
        self.broker_waiting = Gauge("srv6pm_exporter_broker_waiting", "1 while the exporter cannot publish and "
                                    "waits for the broker, else 0.", ["component", "node"], registry=registry)
        self.api_calls = counter("srv6pm_api_calls", "Southbound gRPC calls, by method and status code.",
                                 ["method", "code"])
        # -- collector ---------------------------------------------------------
        self.nodes_up = Gauge("srv6pm_collector_nodes_up", "Nodes whose exporter answers the collector.",
                              ["component"], registry=registry)
        self.reconcile_actions = counter("srv6pm_collector_reconcile_actions",
                                         "Changes the reconciler applied, per action.", ["action"])
        self.apply_failures = counter("srv6pm_collector_apply_failures",
                                      "Failed attempts to apply configuration to a node.", ["node"])


_lock = threading.Lock()
_by_registry: dict[int, Metrics] = {}


def get(registry: CollectorRegistry | None = None) -> Metrics:
    """The :class:`Metrics` on ``registry`` (default: the process-wide one), created on first use."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        metrics = _by_registry.get(id(registry))
        if metrics is None or metrics.registry is not registry:
            metrics = _by_registry[id(registry)] = Metrics(registry)
        return metrics


def observe_all(histogram, values) -> None:
    """``histogram.observe(value)`` for each of ``values`` (a labelled Histogram), equal values at once.

    Results stored together share their latency; prometheus_client's Histogram keeps a sum and one
    counter per bucket, so n equal values are the sum and that bucket's counter increased n times
    over. Where this prometheus_client keeps them otherwise, each value is observed on its own.
    """
    buckets, bounds, total = (getattr(histogram, name, None) for name in ("_buckets", "_upper_bounds", "_sum"))
    if buckets is None or bounds is None or total is None or len(buckets) != len(bounds):
        for value in values:
            histogram.observe(value)
        return
    counts: dict[float, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    for value, n in counts.items():
        total.inc(value * n)
        buckets[bisect_left(bounds, value)].inc(n)


def serve(port: int | None, addr: str = "", registry: CollectorRegistry | None = None):
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; ``port`` None or 0: do nothing.

    ``addr`` "" means every IPv4 address (``0.0.0.0``, prometheus_client's default).

    Returns the HTTP server (``shutdown()`` stops it) or None. Raises
    :class:`MetricsError` naming the port when it cannot listen (taken, no
    permission, bad address).
    """
    if not port:
        return None
    if not isinstance(port, int) or not 0 < port < 65536:
        raise MetricsError(f"metrics port {quote(port)}: must be an integer from 1 to 65535")
    try:
        server, _thread = start_http_server(port, addr=addr or "0.0.0.0",
                                            registry=REGISTRY if registry is None else registry)
    except OSError as exc:
        raise MetricsError(f"metrics port {port}: cannot listen on {addr or '*'}:{port}: "
                           f"{exc.strerror or exc}") from None
    return server


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--metrics-port N`` (default: $SRV6PM_METRICS_PORT, else off) to a component's ``run`` parser."""
    parser.add_argument("--metrics-port", type=int, metavar="N",
                        help=f"serve Prometheus metrics on http://*:N/metrics (default ${ENV_PORT}, else off; 0: off)")


def port_from_args(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> int | None:
    """The metrics port from ``--metrics-port``, else ``$SRV6PM_METRICS_PORT``; None when off.

    Raises :class:`srv6pm.config.ConfigError` naming the setting when the value is not a port number.
    """
    found = given(args, "metrics_port", ENV_PORT, env)
    if found is None:
        return None
    name, value = found.source, found.value
    if isinstance(value, str):  # from the environment
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{ENV_PORT}={quote(value.strip())}: not a port number") from None
    if not 0 <= value < 65536:
        raise ConfigError(f"{name} {value}: must be from 0 (off) to 65535")
    return value or None


def api_call_interceptor(component: str, registry: CollectorRegistry | None = None):
    """A ``grpc.ServerInterceptor`` counting every unary call in ``srv6pm_api_calls_total``.

    Labels: ``method`` (the RPC's short name, e.g. ``ApplyPolicy``) and ``code``
    (the gRPC status name it ended with: ``OK``, ``INVALID_ARGUMENT``, …; a
    handler that raised without setting one counts as ``UNKNOWN``). Give it to
    ``grpc.server(..., interceptors=[...])``. Streaming methods pass uncounted.
    """
    import grpc

    counter = get(registry).api_calls

    class _Interceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            handler = continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler
            method = details.method.rsplit("/", 1)[-1]
            inner = handler.unary_unary

            def counted(request, context):
                try:
                    reply = inner(request, context)
                except Exception:
                    code = context.code()
                    counter.labels(component, method, code.name if code and code != grpc.StatusCode.OK
                                   else "UNKNOWN").inc()
                    raise
                code = context.code()
                counter.labels(component, method, code.name if code else "OK").inc()
                return reply

            return grpc.unary_unary_rpc_method_handler(counted, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)

    return _Interceptor()
