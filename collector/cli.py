"""``srv6pm collector run`` and ``srv6pm collector check``.

Added to the ``srv6pm`` command by :func:`add_commands` (the interface of
:mod:`srv6pm.commands`): a bad configuration file, flag or TLS file ends the
command with one line on stderr, ``srv6pm: ...``, and exit status 2; 1 is a
runtime failure; 130 after SIGINT (Ctrl-C), 143 after SIGTERM (see
:mod:`srv6pm.exits` and :mod:`srv6pm.stopping`).

Both commands check what they are given with one function, :func:`inputs`,
so ``check`` refuses exactly what ``run`` would refuse before it connects
(``check`` takes every option of ``run``). ``run`` then checks that Kafka and,
when configured, ArangoDB answer (:mod:`srv6pm.reach`; exit status 1 and one
line naming the one that does not).

Settings: flags override ``SRV6PM_*`` environment variables, which override
defaults (Kafka: see :mod:`srv6pm.config`; ArangoDB: see
:mod:`srv6pm.collector.arango`, used when ``--arango-url`` or
``SRV6PM_ARANGO_URL`` is given, else the graph is kept in memory). The
ArangoDB password only comes from ``SRV6PM_ARANGO_PASSWORD`` or
``SRV6PM_ARANGO_PASSWORD_FILE``. The state directory (where the FlowMonIDs
are kept, :mod:`srv6pm.collector.flowmon`) is ``--state-dir``, else
``SRV6PM_COLLECTOR_STATE_DIR``, else :data:`DEFAULT_STATE_DIR`.
"""

from __future__ import annotations

import argparse
import json
import signal
from dataclasses import dataclass
from typing import Any

from srv6pm import metrics
from srv6pm.commands import Common, add_check, component
from srv6pm.config import ConfigError as SettingsError
from srv6pm.config import KafkaSettings, given, setting
from srv6pm.stopping import Stop, on_signal

__all__ = ["DEFAULT_STATE_DIR", "STATE_DIR_ENV", "add_commands", "cmd_check", "cmd_run", "inputs"]

DEFAULT_STATE_DIR = "/var/lib/srv6pm/collector"
STATE_DIR_ENV = "SRV6PM_COLLECTOR_STATE_DIR"


def _add_state_dir(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--state-dir", metavar="DIR",
                        help=f"directory of the collector's state: the FlowMonIDs of the flows ({what}; "
                             f"default ${STATE_DIR_ENV}, else {DEFAULT_STATE_DIR})")


def state_dir(args) -> str:
    """The state directory: ``--state-dir``, else ``$SRV6PM_COLLECTOR_STATE_DIR``, else the default."""
    return setting(args, "state_dir", STATE_DIR_ENV, DEFAULT_STATE_DIR)


def add_commands(subparsers, common: Common | None = None) -> argparse.ArgumentParser:
    """Add ``collector run`` and ``collector check`` to ``subparsers``; returns the ``collector`` parser."""
    from srv6pm.collector.arango import ArangoSettings

    collector, actions = component(
        subparsers, "collector", help="collector: the control plane (declarative config -> node exporters over gRPC)",
        description="Drive every node exporter over the southbound gRPC API until the network is what the "
        "configuration file says: SIDs, SRv6 policies, monitored flows, STAMP sessions. 'run' does it and prints "
        "nothing on stdout (its events go to srv6pm.events, logs to stderr); 'check' prints the desired state "
        "per node as JSON.")

    run = actions.add_parser(
        "run", help="reconcile the node exporters with the configuration; keep the topology graph",
        description="Poll every node exporter (GetState) every --interval seconds and apply what differs from "
        "the configuration, phase by phase across the network (SIDs; egress and transit monitors and reflectors; "
        "policies; ingress monitors and STAMP sessions). Unreachable exporters are retried with backoff; a "
        "restarted one gets everything again. Events (node up/down/restarted, applied, removed, failures, "
        "config loaded/rejected, converged) are logged and published on srv6pm.events. The configuration is "
        "reloaded on SIGHUP and when the file changes; an invalid one is rejected and the old one stays. "
        "The topology graph (nodes, links, monitored paths with their latest loss and delay) is kept in "
        "ArangoDB with --arango-url, else in memory (see --graph-dump). SIGTERM or Ctrl-C stops. Prints "
        "nothing on stdout: events go to Kafka, logs (warnings only, unless -v) to stderr.")
    run.add_argument("--config", required=True, metavar="FILE", help="collector configuration (YAML)")
    run.add_argument("--interval", type=float, default=2.0, metavar="S",
                     help="seconds between reconcile rounds (default 2)")
    run.add_argument("--timeout", type=float, default=5.0, metavar="S",
                     help="deadline of each southbound call (default 5)")
    run.add_argument("--retry-initial", type=float, default=0.5, metavar="S",
                     help="first retry delay for an unreachable node or a refused change; doubles, with "
                          "jitter (default 0.5)")
    run.add_argument("--retry-max", type=float, default=30.0, metavar="S", help="longest retry delay (default 30)")
    tls = run.add_argument_group("southbound TLS (override the configuration file's tls section)")
    tls.add_argument("--grpc-ca", metavar="FILE", help="CA (PEM) that signed the exporters' certificates")
    tls.add_argument("--grpc-cert", metavar="FILE", help="client certificate (PEM), for mutual TLS")
    tls.add_argument("--grpc-key", metavar="FILE", help="client private key (PEM), for mutual TLS")
    tls.add_argument("--grpc-plaintext", action="store_true",
                     help="talk to the exporters without TLS (only on a trusted network)")
    _add_state_dir(run, "created if missing; kept across restarts")
    run.add_argument("--graph-dump", metavar="FILE",
                     help="write the topology graph as JSON to FILE whenever it changes (atomic replace)")
    run.add_argument("--no-results", action="store_true",
                     help="do not consume srv6pm.loss / srv6pm.delay into the graph")
    run.add_argument("--session-timeout-ms", type=int, default=10_000, metavar="MS",
                     help="results consumer group session timeout (default 10000)")
    run.add_argument("--heartbeat-interval-ms", type=int, default=1_000, metavar="MS",
                     help="results consumer group heartbeat interval (default 1000)")
    metrics.add_metrics_argument(run)
    run.set_defaults(handler=cmd_run)
    KafkaSettings.add_arguments(run)
    ArangoSettings.add_arguments(run)

    check = add_check(actions, run, cmd_check,
        help="validate a configuration and print the desired state per node as JSON",
        description="Validate the configuration file and print, per node, the objects the collector would "
        "apply (normalised, with their phase) as JSON. Takes every option of 'collector run' and refuses "
        "exactly what 'collector run' would refuse before it connects (the file, the southbound TLS choice and "
        "files, the state directory, every option and SRV6PM_* setting); the state directory is only read. "
        "Exit status 2 with the first error otherwise.")

    if common is not None:
        for parser in (collector, run, check):
            common(parser)
    return collector


@dataclass(frozen=True)
class Inputs:
    """What ``collector run`` is given, checked (see :func:`inputs`)."""

    config: Any  # the collector.config.Config with its FlowMonIDs (as check shows them)
    tls: Any  # ClientTls or None (plaintext)
    kafka: KafkaSettings
    arango: Any  # ArangoSettings, or None: the graph in memory
    metrics_port: int | None


def inputs(args) -> Inputs:
    """Everything ``collector run`` is given, checked before anything connects; ``collector check`` calls the same.

    Raises the collector's ConfigError, srv6pm.config.ConfigError or TlsError naming the file's field,
    the option or the setting.
    """
    from srv6pm import inputs as checks
    from srv6pm.collector import config, flowmon
    from srv6pm.collector.arango import ArangoSettings
    from srv6pm.collector.service import Collector
    from srv6pm.southbound.tls import ClientTls

    for name in ("interval", "timeout", "retry_initial", "retry_max"):
        checks.seconds(getattr(args, name), f"--{name.replace('_', '-')}")
    if args.retry_initial > args.retry_max:
        raise SettingsError("--retry-initial must not exceed --retry-max")
    checks.count(args.session_timeout_ms, "--session-timeout-ms", 1, 3_600_000)
    checks.count(args.heartbeat_interval_ms, "--heartbeat-interval-ms", 1, args.session_timeout_ms - 1,
                 " (below --session-timeout-ms)")
    files = [args.grpc_ca, args.grpc_cert, args.grpc_key]
    if args.grpc_plaintext and any(files):
        raise SettingsError("--grpc-plaintext: give either it or the --grpc-ca/--grpc-cert/--grpc-key files")
    if bool(args.grpc_cert) != bool(args.grpc_key):
        raise SettingsError("--grpc-cert and --grpc-key go together (mutual TLS)")
    for flag, path in (("--grpc-ca", args.grpc_ca), ("--grpc-cert", args.grpc_cert), ("--grpc-key", args.grpc_key)):
        if path:
            checks.readable_file(path, flag)
    if args.graph_dump:
        checks.new_file(args.graph_dump, "--graph-dump")
    tls = ClientTls(args.grpc_ca, args.grpc_cert, args.grpc_key) if any(files) else None
    loaded = config.load(args.config)
    tls = Collector._southbound_tls(tls, args.grpc_plaintext, loaded)  # what run refuses: no TLS choice, bad files
    allocator = flowmon.Allocator(flowmon.state_path(state_dir(args)))
    kafka = KafkaSettings.from_args(args)
    if given(args, "arango_url", "SRV6PM_ARANGO_URL") is not None:
        arango = ArangoSettings.from_args(args)
    else:
        ArangoSettings.unused(args)
        arango = None
    return Inputs(flowmon.assign(loaded, allocator, save=False), tls, kafka, arango, metrics.port_from_args(args))


def cmd_check(args) -> int:
    """``srv6pm collector check``: print the desired state per node as JSON; 0."""
    from srv6pm.collector import desired
    print(json.dumps(desired.to_json(desired.desired_state(inputs(args).config)), indent=2))
    return 0


def cmd_run(args) -> int:
    """``srv6pm collector run``: reconcile until a signal; the exit status after it stopped."""
    from srv6pm import reach
    from srv6pm.collector.reconcile import Backoff
    from srv6pm.collector.results import ResultsOptions
    from srv6pm.collector.service import Collector

    checked = inputs(args)
    reach.kafka(checked.kafka)
    if checked.arango is not None:
        reach.arango(checked.arango)
    graph = _graph(checked.arango)
    options = ResultsOptions(session_timeout_ms=args.session_timeout_ms,
                             heartbeat_interval_ms=args.heartbeat_interval_ms)
    with Stop() as stop:
        collector = Collector(args.config, checked.kafka, tls=checked.tls, plaintext=checked.tls is None,
                              interval=args.interval, graph=graph, graph_dump=args.graph_dump, timeout=args.timeout,
                              backoff=Backoff(args.retry_initial, args.retry_max), results=not args.no_results,
                              results_options=options, state_dir=state_dir(args))
        stop.attach(collector.stop)
        metrics.serve(checked.metrics_port, addr="0.0.0.0")  # metrics.serve's default addr "" does not resolve here
        on_signal(signal.SIGHUP, collector.request_reload)
        collector.run()
    return stop.status()


def _graph(settings):
    """ArangoGraph for ``settings`` (ArangoSettings), or None (the collector's MemoryGraph)."""
    if settings is None:
        return None
    from srv6pm.collector.arango import ArangoGraph
    return ArangoGraph.from_settings(settings)
