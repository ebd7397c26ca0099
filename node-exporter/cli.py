"""``srv6pm exporter run`` and ``srv6pm exporter check``: the node exporter's commands.

Added to the ``srv6pm`` command by :func:`add_commands` (the interface of
:mod:`srv6pm.commands`). Both commands check what they are given with one
function, :func:`inputs` (the configuration file with ``--node``, ``--period``,
``--dataplane``, ``--buffer-size`` and ``--buffer-dir`` over it, the southbound
API's listen address and TLS files, the Kafka settings, the metrics port), so
``check`` refuses exactly what ``run`` would refuse (``check`` takes every option
of ``run``) before ``run`` touches the data plane.
"""

from __future__ import annotations

import argparse
import json

from srv6pm import inputs as inputs_
from srv6pm import metrics
from srv6pm.commands import Common, add_check, component
from srv6pm.config import ConfigError, KafkaSettings, given
from srv6pm.netspec import DATAPLANES
from srv6pm.stopping import Stop

__all__ = ["add_commands", "cmd_check", "cmd_run", "exporter_config_of", "inputs"]


def add_commands(subparsers, common: Common | None = None) -> argparse.ArgumentParser:
    """Add ``exporter run`` and ``exporter check`` to ``subparsers``; returns the ``exporter`` parser."""
    exporter, actions = component(
        subparsers, "exporter", help="node exporter: alternate marking and counting",
        description="The node exporter, one per SRv6 router: it applies SIDs, policies, monitored flows and "
        "STAMP sessions given over its southbound gRPC API, marks and counts the flows' packets per "
        "alternate-marking period and publishes the counts (srv6pm.counters) and STAMP samples "
        "(srv6pm.stamp) to Kafka. 'run' starts it; it prints one JSON line on stdout when its API "
        "listens, and nothing else there (logs go to stderr).")
    erun = actions.add_parser(
        "run", help="serve the southbound API; mark and count flows, run STAMP, publish to Kafka (root)",
        description="Serve the southbound gRPC API (srv6pm.southbound.v1.NodeExporter and the standard "
        "health service), through which SRv6 SIDs, policies, monitored flows and STAMP sessions are applied; "
        "the configuration file's flows and STAMP settings are applied at start. Count the flows with the "
        "data plane chosen (ebpf, the default: tc programs and pinned BPF maps; nftables: the srv6pm table), "
        "in the configured network namespace, switch the marking colour at every "
        "period boundary and publish each finished block at its guard time. Routes, the programs or table and their "
        "counters outlive the process; baselines and the applied state are kept beside the state file and "
        "re-applied at start, so a restart neither loses periods needlessly nor invents loss. The API "
        "listens on [::]:50051 unless told otherwise and needs TLS (--grpc-tls-cert/--grpc-tls-key, "
        "with --grpc-tls-client-ca for mutual TLS) or an explicit --grpc-plaintext; --grpc-listen none "
        "runs without it (the file's flows and STAMP only). Flags override the file's grpc section; the "
        "node's name is --node, else $SRV6PM_NODE, else the file's node (e.g. a Kubernetes node name from the "
        "downward API), and --period overrides the file's period. When "
        "the API listens, one JSON line {\"event\": \"listening\", \"address\": ..., \"tls\": ...} "
        "is printed on stdout; nothing else is (logs go to stderr).")
    erun.add_argument("--config", required=True, metavar="FILE", help="exporter configuration (YAML/JSON)")
    erun.add_argument("--node", metavar="NAME",
                      help="this node's name in the records (default: $SRV6PM_NODE, else the file's node)")
    erun.add_argument("--period", metavar="S", help="alternate-marking period in seconds (default: the file's)")
    erun.add_argument("--dataplane", choices=DATAPLANES,
                      help="counting backend: ebpf (RFC 9343 option, counting at every hop, the customer's DSCP "
                           "untouched) or nftables (kernels without BPF; the colour rewrites the DSCP) "
                           "(default: $SRV6PM_DATAPLANE, else the file's dataplane, else ebpf)")
    erun.add_argument("--buffer-size", metavar="SIZE",
                      help="most bytes of records kept on disk while they cannot be published (the broker away), "
                           "e.g. 256MiB; beyond it the oldest are dropped and counted (default: $SRV6PM_BUFFER_SIZE, "
                           "else the file's buffer_size, else 256MiB)")
    erun.add_argument("--buffer-dir", metavar="DIR",
                      help="directory of those records, kept across restarts (default: $SRV6PM_BUFFER_DIR, else the "
                           "file's buffer_dir, else <state_file>.buffer)")
    erun.add_argument("--grpc-listen", metavar="HOST:PORT",
                      help="address of the southbound API (default: the file's grpc.listen, else [::]:50051; "
                           "port 0: any free port; 'none' or '': no API)")
    erun.add_argument("--grpc-tls-cert", metavar="FILE", help="server certificate (PEM) of the API")
    erun.add_argument("--grpc-tls-key", metavar="FILE", help="private key (PEM) of that certificate")
    erun.add_argument("--grpc-tls-client-ca", metavar="FILE",
                      help="CA (PEM) whose client certificates are required (mutual TLS)")
    erun.add_argument("--grpc-plaintext", action="store_true",
                      help="serve the API without TLS (only on a trusted network, e.g. the lab on one machine)")
    metrics.add_metrics_argument(erun)
    erun.set_defaults(handler=cmd_run)
    if common is not None:
        common(exporter)  # -v and --log-format before the action too, as every component takes them
        common(erun)
    KafkaSettings.add_arguments(erun)
    add_check(actions, erun, cmd_check,
        help="validate the configuration and options of 'exporter run'; print the settings as JSON",
        description="Validate everything 'exporter run' is given (the configuration file, "
        "every option, the TLS files, the Kafka settings) exactly as 'exporter run' does before it starts, "
        "and print the settings it would run with as one JSON object on stdout (no secrets). Touches no data "
        "plane, connects to nothing, needs no root. Exit status 2 with one line naming the file's field or "
        "the option otherwise.")
    return exporter


def _exporter_api(args, config):
    """The exporter's API settings from flags over the file's grpc section; None: no API."""
    from srv6pm.exporter.api import ServerSettings
    from srv6pm.southbound import DEFAULT_PORT
    from srv6pm.southbound.tls import ServerTls, TlsError
    file = config.grpc
    listen = args.grpc_listen if args.grpc_listen is not None else file.listen
    listen = f"[::]:{DEFAULT_PORT}" if listen is None else listen.strip()
    if listen.lower() in ("", "none"):
        if not config.flows and not config.reflector and not config.sessions:
            raise ConfigError(f"{args.config}: nothing to do: no flows, no stamp, and the API is off (--grpc-listen "
                              f"{listen or repr(listen)})")
        return None
    inputs_.host_port(listen, "--grpc-listen" if args.grpc_listen is not None else f"{args.config}: grpc.listen",
                      any_port=True)
    cert = args.grpc_tls_cert or file.cert
    key = args.grpc_tls_key or file.key
    client_ca = args.grpc_tls_client_ca or file.client_ca
    tls_flags = bool(args.grpc_tls_cert or args.grpc_tls_key or args.grpc_tls_client_ca)
    if args.grpc_plaintext and tls_flags:
        raise ConfigError("--grpc-plaintext: give either it or the --grpc-tls-* files, not both")
    plaintext = args.grpc_plaintext or (file.plaintext and not tls_flags)  # flags override the file's grpc section
    if plaintext and (file.cert or file.key or file.client_ca) and not args.grpc_plaintext:
        raise ConfigError(f"{args.config}: grpc.plaintext: give either it or grpc.tls, not both")
    if plaintext:
        return ServerSettings(listen, None)
    if not cert or not key:
        raise ConfigError("the southbound API needs TLS: give --grpc-tls-cert and --grpc-tls-key (and "
                          "--grpc-tls-client-ca for mutual TLS), or --grpc-plaintext on a trusted network, "
                          "or --grpc-listen none to run without the API")
    tls = ServerTls(cert, key, client_ca)
    try:
        tls.credentials()  # the files are read now, so a bad one stops the start with its name
    except TlsError as exc:
        raise ConfigError(f"--grpc-tls: {exc}") from None
    return ServerSettings(listen, tls)


def exporter_config_of(args, environ=None):
    """The exporter's configuration: the --config file with --node (else $SRV6PM_NODE) and --period over it.

    ``environ`` defaults to ``os.environ``; an empty SRV6PM_NODE counts as not set.
    Raises the exporter's ConfigError (one line, naming the file's field or the override).
    """
    from srv6pm.exporter import config as exporter_config

    def override(attr: str, var: str | None = None):
        found = given(args, attr, var, environ)
        return None if found is None else exporter_config.Override(found.value, found.source)
    return exporter_config.load(args.config, node=override("node", "SRV6PM_NODE"), period=override("period"),
                                dataplane=override("dataplane", "SRV6PM_DATAPLANE"),
                                buffer_size=override("buffer_size", "SRV6PM_BUFFER_SIZE"),
                                buffer_dir=override("buffer_dir", "SRV6PM_BUFFER_DIR"))


def inputs(args):
    """Everything ``exporter run`` is given, checked: (config, Kafka settings, API settings or None, metrics port).

    ``exporter check`` calls the same. Raises ConfigError (or the exporter's) naming the option or field.
    """
    config = exporter_config_of(args)
    found = given(args, "buffer_dir", "SRV6PM_BUFFER_DIR")
    _local_files(config, args.config, found.source if found is not None else None)
    return config, KafkaSettings.from_args(args), _exporter_api(args, config), metrics.port_from_args(args)


def _local_files(config, source: str, buffer_origin: str | None) -> None:
    """The files the configuration names, on this machine: the key files can be read, the state file and the
    buffer's folder can be made (or are there, of their kind); ``buffer_origin``: the flag or variable that
    gave the buffer's folder (None: the file)."""
    for i, session in enumerate(config.sessions):
        if session.auth_key_file:
            inputs_.readable_file(session.auth_key_file, f"{source}: stamp.sessions[{i}].auth_key_file")
    if config.reflector is not None and config.reflector.auth_key_file:
        inputs_.readable_file(config.reflector.auth_key_file, f"{source}: stamp.reflector.auth_key_file")
    if config.state_file:
        inputs_.creatable(config.state_file, f"{source}: state_file")
    buffer = config.buffer_path()
    if buffer:
        origin = buffer_origin or (f"{source}: buffer_dir" if config.buffer_dir else f"{source}: state_file's buffer")
        inputs_.creatable(buffer, origin, folder=True)


def cmd_check(args) -> int:
    """``srv6pm exporter check``: print the settings ``exporter run`` would run with; 0."""
    config, kafka, api, port = inputs(args)
    print(json.dumps({
        "node": config.node, "period_s": config.period, "dataplane": config.dataplane,
        "flows": [f.flow for f in config.flows], "stamp_sessions": [s.name for s in config.sessions],
        "reflector": config.reflector is not None, "kafka": kafka.bootstrap,
        "api": None if api is None else {"listen": api.listen, "tls": api.tls is not None},
        "metrics_port": port}, indent=2))
    return 0


def cmd_run(args) -> int:
    """``srv6pm exporter run``: run the exporter until a signal; the exit status after it stopped."""
    from srv6pm.exporter.service import Exporter
    config, kafka, api, port = inputs(args)
    metrics.serve(port)
    with Stop() as stop:
        exporter = Exporter(config, kafka, api=api)
        stop.attach(exporter.stop)
        exporter.run()
    return stop.status()

