"""The ``srv6pm`` command.

::

    srv6pm lab run SCENARIO [--duration S] [--json]   the whole pipeline on this machine
    srv6pm lab check SCENARIO                         validate a scenario, print its plan
    srv6pm lab clean SCENARIO                         remove namespaces a killed lab left
    srv6pm exporter run --config FILE                 node exporter (southbound API, marking, counting, STAMP)
    srv6pm exporter check --config FILE               validate what 'exporter run' is given, print its settings
    srv6pm processor run                              processor (Kafka -> loss and delay -> InfluxDB)
    srv6pm processor check                            validate what 'processor run' is given, print its settings
    srv6pm collector run --config FILE                collector (config -> exporters over gRPC, graph)
    srv6pm collector check --config FILE              validate a collector config, print desired state
    srv6pm stamp reflector --bind ADDR                STAMP Session-Reflector
    srv6pm stamp sender --dest ADDR                   STAMP Session-Sender
    srv6pm dashboards generate [--out DIR] [--check]  Grafana dashboards as JSON

Every command checks everything it is given (:mod:`srv6pm.inputs`) before it builds or connects to
anything, and each ``check`` takes the options of its ``run`` and refuses exactly what ``run`` would
refuse (one validation function per command, e.g. :func:`processor_inputs`). Commands that use Kafka,
InfluxDB or ArangoDB then check that they answer (:mod:`srv6pm.reach`) before they start work.

Exit status: 0 success, 1 runtime failure (e.g. a service that does not answer), 2 bad usage or bad input file,
130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM (both after a clean stop),
141 standard output was a pipe that its reader closed (see :mod:`srv6pm.stopping`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from srv6pm import __version__, logs, metrics
from srv6pm.config import ConfigError, InfluxSettings, KafkaSettings, given
from srv6pm.errors import EXIT_USAGE
from srv6pm.exits import guard
from srv6pm.quote import quote
from srv6pm.stopping import Stop, quiet_on_closed_pipe


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line (naming the argument), exit status 2."""

    def error(self, message: str):
        from srv6pm.quote import shorten
        command = self.prog.removeprefix("srv6pm").strip()
        self.exit(EXIT_USAGE, f"srv6pm: {command + ': ' if command else ''}{shorten(message)} "
                              f"(usage: {self.prog} --help)\n")


def same_options(source: argparse.ArgumentParser, target: argparse.ArgumentParser) -> None:
    """Give ``target`` (made with ``add_help=False``) every argument of ``source``: a ``check`` takes
    what its ``run`` takes, so that it can refuse exactly what ``run`` would refuse."""
    target._add_container_actions(source)  # what argparse's parents= does


def _add_common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # Sub-commands accept the same options; SUPPRESS keeps a sub-command's
    # default from overwriting what was given before the sub-command's name.
    default = 0 if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more log output on stderr (-v info and the client libraries' warnings, -vv debug, "
                             "-vvv the libraries' debug too); default: srv6pm's own warnings only")
    parser.add_argument("--log-format", choices=("logfmt", "json"), default=None if top else argparse.SUPPRESS,
                        help="log line format (default logfmt, or $SRV6PM_LOG_FORMAT)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="srv6pm", description="Performance monitoring for SRv6 networks: exact per-flow packet loss "
        "(RFC 9341 alternate marking) through Kafka into InfluxDB. Each command prints its results on stdout "
        "and its logs on stderr; its --help says exactly what it prints.",
        epilog="Run 'srv6pm COMMAND --help' for the options of each command.")
    parser.add_argument("--version", action="version", version=f"srv6pm {__version__}")
    _add_common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     help="the component or tool to run")

    lab = commands.add_parser(
        "lab", help="the local lab: a whole pipeline in network namespaces",
        description="The local lab: a scenario file (nodes, links, flows, STAMP sessions; see "
        "scenarios/example.yaml) built as network namespaces on this machine, with the whole pipeline running "
        "on it. 'run' builds it and prints the results as a table (or JSON lines), 'check' validates a "
        "scenario and prints its addressing plan as JSON, 'clean' removes what a killed lab left behind.")
    lab_cmds = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True, help="what to do")
    run = lab_cmds.add_parser(
        "run", help="build the scenario's network and run the pipeline on it (root)",
        description="Build the scenario's network as network namespaces named after its nodes (plus "
        "NODE-host namespaces for the flows' end hosts), configure SRv6 through netlink, start an embedded "
        "Kafka-compatible broker on 127.0.0.1:9092 and an embedded InfluxDB on 127.0.0.1:8086 (unless "
        "--kafka / --influx-url name external ones), run a node exporter on every node, the collector "
        "(which configures SIDs, policies, monitored flows and STAMP sessions on the exporters over gRPC), "
        "a processor and the test traffic (one generator per source host), and print on stdout every loss "
        "and delay result and alarm as it arrives, a row when a flow's traffic falls below its configured rate, "
        "then a summary and the packets that reached each flow's destination host (with --json: JSON lines, "
        "see --json); progress lines go to stderr. Everything "
        "is torn down at the end, on Ctrl-C and on errors (what a lab killed with SIGKILL leaves, the next "
        "'lab run' or 'lab clean' removes). The first results appear about three periods after the start: the "
        "first reading of each colour is only a baseline.")
    run.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file (see scenarios/example.yaml)")
    run.add_argument("--duration", type=float, metavar="S", help="seconds to run (default: until Ctrl-C)")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object per line instead of a table: the srv6pm.loss, srv6pm.delay and "
                          "srv6pm.alarms records as they arrive, 'traffic' records (a flow below its configured "
                          "rate; one per flow at the end) and one 'summary' record last (schema: "
                          "srv6pm/schemas/srv6pm.lab-output.schema.json)")
    run.add_argument("--partitions", type=int, default=4, metavar="N",
                     help="partitions of the counters and loss topics (default 4)")
    run.add_argument("--pair-wait", type=float, metavar="S",
                     help="seconds the processor waits for a block's partner (default max(3, 2 x period))")
    run.add_argument("--external-collector", metavar="FILE",
                     help="run no collector of the lab's own: write the collector configuration to FILE for "
                          "an external collector (docker compose) and wait for it to converge")
    run.add_argument("--no-processor", action="store_true",
                     help="run no processor of the lab's own (external processors consume its records)")
    run.add_argument("--grpc-host", default="127.0.0.1", metavar="HOST",
                     help="address the node exporters' southbound API listens on (default 127.0.0.1)")
    run.add_argument("--advertise-host", metavar="HOST",
                     help="host name of the exporters in the collector configuration (default: --grpc-host)")
    _add_common(run)
    KafkaSettings.add_arguments(run)
    InfluxSettings.add_arguments(run)
    check = lab_cmds.add_parser(
        "check", help="validate a scenario and print the addressing plan as JSON", add_help=False,
        description="Validate the scenario and print its addressing plan as one JSON object on stdout: the "
        "period, data plane, namespaces, nodes, links with their prefixes and addresses, and each "
        "flow's and STAMP session's path and segment list. Creates nothing, connects to nothing and needs "
        "no root. Takes every option of 'lab run' and refuses exactly what 'lab run' would refuse before "
        "building anything. Exit status 2 with the first error (one line on stderr naming the file and the "
        "field, or the flag) if the scenario or an option is not valid.")
    same_options(run, check)
    clean = lab_cmds.add_parser(
        "clean", help="delete what killed labs left behind: namespaces, eBPF pins, temporary folders (root)",
        description="Delete the network namespaces (nodes and NODE-host end hosts) and eBPF pins of the scenario "
        "that a lab killed with SIGKILL left behind, and everything any killed lab left: its temporary "
        "folders (srv6pm-lab-*, srv6pm-influxdb-*) with the namespaces and pins they name. A running "
        "lab's namespaces are refused (exit status 1); namespaces that do not exist are skipped. Prints "
        "nothing on success; errors are one line on stderr.")
    clean.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file (see scenarios/example.yaml)")
    _add_common(clean)

    exporter = commands.add_parser(
        "exporter", help="node exporter: alternate marking and counting",
        description="The node exporter, one per SRv6 router: it applies SIDs, policies, monitored flows and "
        "STAMP sessions given over its southbound gRPC API, marks and counts the flows' packets per "
        "alternate-marking period and publishes the counts (srv6pm.counters) and STAMP samples "
        "(srv6pm.stamp) to Kafka. 'run' starts it; it prints one JSON line on stdout when its API "
        "listens, and nothing else there (logs go to stderr).")
    exp_cmds = exporter.add_subparsers(dest="exporter_command", metavar="ACTION", required=True,
                                       help="what to do")
    erun = exp_cmds.add_parser(
        "run", help="serve the southbound API; mark and count flows, run STAMP, publish to Kafka (root)",
        description="Serve the southbound gRPC API (srv6pm.southbound.v1.NodeExporter and the standard "
        "health service), through which SRv6 SIDs, policies, monitored flows and STAMP sessions are applied; "
        "the configuration file's flows and STAMP settings are applied at start. Count the flows in the "
        "srv6pm nftables table (in the configured network namespace), switch the marking colour at every "
        "period boundary and publish each finished block at its guard time. Routes, the table and its "
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
    erun.add_argument("--dataplane", choices=("ebpf", "nftables"),
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
    _add_common(erun)
    KafkaSettings.add_arguments(erun)
    echeck = exp_cmds.add_parser(
        "check", help="validate the configuration and options of 'exporter run'; print the settings as JSON",
        add_help=False, description="Validate everything 'exporter run' is given (the configuration file, "
        "every option, the TLS files, the Kafka settings) exactly as 'exporter run' does before it starts, "
        "and print the settings it would run with as one JSON object on stdout (no secrets). Touches no data "
        "plane, connects to nothing, needs no root. Exit status 2 with one line naming the file's field or "
        "the option otherwise.")
    same_options(erun, echeck)

    from srv6pm.stamp.cli import add_commands as add_stamp_commands
    add_stamp_commands(commands, common=_add_common)
    from srv6pm.collector.cli import add_commands as add_collector_commands
    add_collector_commands(commands, common=_add_common)

    processor = commands.add_parser(
        "processor", help="processor: exact loss and delay statistics into Kafka and InfluxDB",
        description="The processor, a Kafka consumer group member: it turns the exporters' counters and STAMP "
        "samples into exact per-period loss and delay statistics, published on Kafka and stored in "
        "InfluxDB, and raises threshold alarms. Run as many as the topics have partitions. 'run' starts one; "
        "it prints nothing on stdout (results go to Kafka and InfluxDB, logs to stderr).")
    proc_cmds = processor.add_subparsers(dest="processor_command", metavar="ACTION", required=True,
                                         help="what to do")
    prun = proc_cmds.add_parser(
        "run", help="consume srv6pm.counters and srv6pm.stamp, publish srv6pm.loss and srv6pm.delay",
        description="A member of a Kafka consumer group on srv6pm.counters and srv6pm.stamp. Pairs the "
        "ingress and egress blocks of each (flow, period) into the exact loss (srv6pm.loss, measurement "
        "loss) and turns each STAMP session's samples into per-period delay statistics per direction "
        "(srv6pm.delay, measurement delay). Commits offsets only after results are published and stored. "
        "A block whose partner does not arrive within --pair-wait is published as incomplete (never as "
        "loss). Threshold alarms are raised and cleared on srv6pm.alarms (--alarm-*). Bad records go to "
        "srv6pm.deadletter with the reason. Prints nothing on stdout: results go to Kafka and InfluxDB, "
        "logs (warnings only, unless -v) to stderr.")
    prun.add_argument("--group", default="srv6pm-processor", help="consumer group (default srv6pm-processor)")
    prun.add_argument("--client-id", help="Kafka client id (default srv6pm-processor-HOSTNAME)")
    prun.add_argument("--pair-wait", type=float, default=10.0, metavar="S",
                      help="seconds to wait for a block's partner before the period is incomplete (default 10)")
    prun.add_argument("--delay-lateness", type=float, default=5.0, metavar="S",
                      help="seconds after a period's end (in STAMP send time) before its delay statistics "
                           "are closed; must exceed the senders' loss timeout plus publishing delay (default 5)")
    prun.add_argument("--delay-idle", type=float, default=30.0, metavar="S",
                      help="close a period's delay statistics when its session sent nothing for this long (default 30)")
    prun.add_argument("--ledger-records", type=int, default=50_000, metavar="N",
                      help="results per partition remembered to suppress duplicates after a restart "
                           "(default 50000; must exceed the results of one pairing wait)")
    prun.add_argument("--session-timeout-ms", type=int, default=10_000, metavar="MS",
                      help="consumer group session timeout (default 10000)")
    prun.add_argument("--heartbeat-interval-ms", type=int, default=1_000, metavar="MS",
                      help="consumer group heartbeat interval (default 1000)")
    prun.add_argument("--max-poll-interval-ms", type=int, default=60_000, metavar="MS",
                      help="consumer group max poll interval: a member that does not poll for this long is "
                           "removed from the group (default 60000; the processor polls on while InfluxDB or "
                           "the brokers are away)")
    prun.add_argument("--health-interval", type=float, metavar="S",
                      help="seconds between the processor's health points in InfluxDB (measurements pipeline "
                           "and exporter; default $SRV6PM_HEALTH_INTERVAL, else 10; 0: none)")
    prun.add_argument("--alarm-loss-ratio", metavar="R|off",
                      help="raise a loss_ratio alarm on srv6pm.alarms when a flow's complete period has a loss "
                           "ratio above R, and clear it when a later one is back at or under R (default "
                           "$SRV6PM_ALARM_LOSS_RATIO, else 0.01; 0: any lost packet; off: no loss alarms)")
    prun.add_argument("--alarm-delay-p99-us", metavar="US|off",
                      help="raise a delay_p99_us alarm per STAMP session and direction when a period's p99 "
                           "delay is above US microseconds, clear it when back at or under (default "
                           "$SRV6PM_ALARM_DELAY_P99_US, else off)")
    metrics.add_metrics_argument(prun)
    _add_common(prun)
    KafkaSettings.add_arguments(prun)
    InfluxSettings.add_arguments(prun)
    pcheck = proc_cmds.add_parser(
        "check", help="validate the options of 'processor run'; print the settings as JSON", add_help=False,
        description="Validate every option and setting 'processor run' is given (flags and SRV6PM_* "
        "environment variables) exactly as 'processor run' does before it connects, and print the settings "
        "it would run with as one JSON object on stdout (no secrets). Connects to nothing. Exit status 2 "
        "with one line naming the option otherwise.")
    same_options(prun, pcheck)
    from srv6pm.dashboards.cli import add_commands as add_dashboard_commands
    add_dashboard_commands(commands, common=_add_common)
    return parser


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
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--grpc-listen: {quote(listen)} is not HOST:PORT (IPv6 in brackets: [::]:50051)")
    from srv6pm.inputs import host as check_host
    check_host(host, "--grpc-listen" if args.grpc_listen is not None else f"{args.config}: grpc.listen")
    cert = args.grpc_tls_cert or file.cert
    key = args.grpc_tls_key or file.key
    client_ca = args.grpc_tls_client_ca or file.client_ca
    plaintext = args.grpc_plaintext or file.plaintext
    if plaintext and (args.grpc_tls_cert or args.grpc_tls_key or args.grpc_tls_client_ca):
        raise ConfigError("--grpc-plaintext: give either it or the --grpc-tls-* files, not both")
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


def exporter_inputs(args):
    """Everything ``exporter run`` is given, checked: (config, Kafka settings, API settings or None, metrics port).

    ``exporter check`` calls the same. Raises ConfigError (or the exporter's) naming the option or field.
    """
    config = exporter_config_of(args)
    return config, KafkaSettings.from_args(args), _exporter_api(args, config), metrics.port_from_args(args)


def cmd_exporter_check(args) -> int:
    config, kafka, api, port = exporter_inputs(args)
    print(json.dumps({
        "node": config.node, "period_s": config.period, "dataplane": config.dataplane,
        "flows": [f.name for f in config.flows], "stamp_sessions": [s.name for s in config.sessions],
        "reflector": config.reflector is not None, "kafka": kafka.bootstrap,
        "api": None if api is None else {"listen": api.listen, "tls": api.tls is not None},
        "metrics_port": port}, indent=2))
    return 0


def cmd_exporter_run(args) -> int:
    from srv6pm.exporter.service import Exporter
    config, kafka, api, port = exporter_inputs(args)
    metrics.serve(port)
    with Stop() as stop:
        exporter = Exporter(config, kafka, api=api)
        stop.attach(exporter.stop)
        exporter.run()
    return stop.status()


def processor_inputs(args):
    """Everything ``processor run`` is given, checked: (options, Kafka settings, InfluxDB settings, metrics port).

    ``processor check`` calls the same. Raises ConfigError naming the option or environment variable.
    """
    from srv6pm import inputs
    from srv6pm.processor.alarms import AlarmRules
    from srv6pm.processor.service import ProcessorOptions
    inputs.seconds(args.pair_wait, "--pair-wait")
    inputs.seconds(args.delay_lateness, "--delay-lateness", zero=True)
    inputs.seconds(args.delay_idle, "--delay-idle")
    inputs.count(args.ledger_records, "--ledger-records", 1, 100_000_000)
    inputs.count(args.session_timeout_ms, "--session-timeout-ms", 1, 3_600_000)
    inputs.count(args.heartbeat_interval_ms, "--heartbeat-interval-ms", 1, args.session_timeout_ms - 1,
                 " (below --session-timeout-ms)")
    for flag, value in (("--group", args.group), ("--client-id", args.client_id)):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} {quote(value)}: must not be empty")
    options = ProcessorOptions(group=args.group, pair_wait_s=args.pair_wait, ledger_records=args.ledger_records,
                               delay_lateness_s=args.delay_lateness, delay_idle_s=args.delay_idle,
                               session_timeout_ms=args.session_timeout_ms,
                               heartbeat_interval_ms=args.heartbeat_interval_ms,
                               max_poll_interval_ms=args.max_poll_interval_ms)
    if args.client_id:
        options.client_id = args.client_id
    options.health_interval_s = _health_interval(args) or None
    options.alarms = AlarmRules(
        loss_ratio=_threshold(args, "alarm_loss_ratio", "SRV6PM_ALARM_LOSS_RATIO", 0.01),
        delay_p99_us=_threshold(args, "alarm_delay_p99_us", "SRV6PM_ALARM_DELAY_P99_US", None))
    return options, KafkaSettings.from_args(args), InfluxSettings.from_args(args), metrics.port_from_args(args)


def cmd_processor_check(args) -> int:
    import dataclasses
    options, kafka, influx, port = processor_inputs(args)
    print(json.dumps({**dataclasses.asdict(options), "kafka": kafka.bootstrap, "influx_url": influx.url,
                      "influx_bucket": influx.bucket, "metrics_port": port}, indent=2))
    return 0


def cmd_processor_run(args) -> int:
    from srv6pm import reach
    from srv6pm.processor.service import Processor, tune_gc
    options, kafka, influx, port = processor_inputs(args)
    reach.kafka(kafka)
    reach.influx(influx)
    metrics.serve(port)
    from srv6pm.processor import liveness
    with Stop() as stop:
        processor = Processor(kafka, influx, options)
        store, thread = liveness.start(kafka, influx, options.group, options.client_id)  # liveness points
        tune_gc()
        def stop_both() -> None:
            processor.stop()
            store.stop()

        stop.attach(stop_both)
        try:
            processor.run()
        finally:
            store.stop()
            thread.join(timeout=10)
    return stop.status()


def _health_interval(args) -> float:
    found = given(args, "health_interval", "SRV6PM_HEALTH_INTERVAL")
    if found is None:
        return 10.0
    value = found.value
    if isinstance(value, str):  # from the environment
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{found.source}={quote(value.strip())}: not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{found.source} {value:g}: must be a finite number of seconds >= 0 (0: no health points)")
    return value


def _threshold(args, attr: str, var: str, default: float | None) -> float | None:
    """An alarm threshold from flag ``attr``, else ``$var``, else ``default``: a number >= 0, or None for 'off'."""
    found = given(args, attr, var)
    if found is None:
        return default
    name, value = found.source, found.value.strip()
    if value.lower() == "off":
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 <= number < float("inf"):
        raise ConfigError(f"{name} {quote(value)}: must be a number >= 0, or 'off'")
    return number


def _external(args, prefix: str, env_var: str) -> bool:
    import os
    return any(getattr(args, a) for a in vars(args) if a.startswith(prefix)) or bool(os.environ.get(env_var))


def lab_inputs(args):
    """Everything ``lab run`` is given, checked before anything is built: (scenario, Kafka settings or
    None, InfluxDB settings or None); None: the lab's own embedded service.

    ``lab check`` calls the same. Raises ConfigError or ScenarioError naming the option, file or field.
    """
    from srv6pm import inputs
    from srv6pm.lab import scenario as scenario_mod
    scenario = scenario_mod.load(args.scenario)
    inputs.seconds(args.duration, "--duration", optional=True)
    inputs.count(args.partitions, "--partitions", 1, 1000)
    inputs.seconds(args.pair_wait, "--pair-wait", optional=True)
    inputs.host(args.grpc_host, "--grpc-host")
    if args.advertise_host is not None:
        inputs.host(args.advertise_host, "--advertise-host")
    if args.external_collector:
        inputs.new_file(args.external_collector, "--external-collector")
    kafka = KafkaSettings.from_args(args) if _external(args, "kafka", "SRV6PM_KAFKA_BOOTSTRAP") else None
    influx = InfluxSettings.from_args(args) if _external(args, "influx", "SRV6PM_INFLUX_URL") else None
    return scenario, kafka, influx


def cmd_lab_run(args) -> int:
    from srv6pm.lab.latency import DetectionLatency
    from srv6pm.lab.output import JsonLines, ResultTable
    from srv6pm.lab.runner import Lab
    from srv6pm import reach
    scenario, kafka, influx = lab_inputs(args)
    if kafka is not None:  # external services: they answer, or nothing is built
        reach.kafka(kafka)
    if influx is not None:
        reach.influx(influx)
    # A signal ends the loop of _show_results (one while building lets the build finish, so that the
    # teardown knows everything built); the lab then tears down and the status tells which signal it was.
    with Stop(then=_keep_going) as stop:
        lab = Lab(scenario, kafka=kafka, influx=influx, partitions=args.partitions, pair_wait_s=args.pair_wait,
                  verbosity=args.verbose, grpc_host=args.grpc_host, advertise_host=args.advertise_host,
                  external_collector=Path(args.external_collector) if args.external_collector else None,
                  processor=not args.no_processor)
        print(f"srv6pm lab: building {len(scenario.nodes)} nodes, {len(scenario.links)} links, "
              f"{len(scenario.flows)} flows, {len(scenario.stamp)} STAMP sessions (period {scenario.period:g} s)…",
              file=sys.stderr, flush=True)
        assert lab.pair_wait_s is not None, "Lab fills in its default pair wait when it is made"
        latency = DetectionLatency(lab.pair_wait_s)
        view = JsonLines() if args.json else ResultTable(latency=latency)
        with lab:
            _show_results(lab, view, latency, args, scenario.period, stop)
    return stop.status()


def _keep_going() -> None:
    """What the lab does at once on a signal: nothing; its loop sees :attr:`Stop.stopping`."""


def _show_results(lab, view, latency, args, period: float, stop: Stop) -> None:
    """Print the lab's results until ``--duration`` ends or a signal comes, then the summary and arrivals.

    Traffic below its configured rate is a row when it starts and ends, and a summary line
    (:mod:`srv6pm.lab.rates`).
    """
    from srv6pm.lab.rates import RateWatch
    reader = lab.results(alarms=True)
    print(f"srv6pm lab: running; first results in about {3 * period + 1:g} s"
          + (f", stopping after {args.duration:g} s" if args.duration else "; Ctrl-C stops") + ".",
          file=sys.stderr, flush=True)
    view.header()
    deadline = time.monotonic() + args.duration if args.duration else None
    rates = RateWatch()
    try:
        while not stop.stopping and (deadline is None or time.monotonic() < deadline):
            for result, published_s in reader.poll_timed(0.5):
                if "flow" in result and "kind" not in result:
                    latency.add(result, published_s)
                view.row(result)
            for record in rates.update(lab.traffic_sent()):
                view.traffic(record)
            lab.check_children()
    finally:
        reader.close()
        for record in rates.final(lab.traffic_sent()):
            view.traffic(record)
        view.summary()
        if not args.json:  # JSON lines are records only
            _print_arrivals(lab)
        print("srv6pm lab: tearing down…", file=sys.stderr, flush=True)


def _print_arrivals(lab) -> None:
    """What reached each flow's destination host, by DSCP (``f1 arrived dscp 46: 1000 of 1000``)."""
    try:
        arrivals = lab.arrivals()
    except Exception as exc:  # the lab's namespaces may be gone after a failure
        print(f"srv6pm lab: arrivals unavailable: {exc}", file=sys.stderr, flush=True)
        return
    print("\n" + "\n".join(line for a in arrivals.values() for line in a.lines()), flush=True)


def cmd_lab_check(args) -> int:
    from srv6pm.lab import topology
    plan = topology.plan(lab_inputs(args)[0])
    print(json.dumps(plan.to_dict(), indent=2))
    return 0


def cmd_lab_clean(args) -> int:
    from srv6pm.lab import leftovers, network, topology
    from srv6pm.lab import scenario as scenario_mod
    plan = topology.plan(scenario_mod.load(args.scenario))
    leftovers.sweep()  # every killed lab's namespaces, pins and temporary folders
    live = leftovers.live_namespaces()
    taken = [f"{ns} (pid {live[ns]})" for ns in plan.namespaces if ns in live]
    if taken:
        raise network.NetworkError(f"namespace(s) of a running lab, not removed: {', '.join(taken)}; "
                                   f"stop that lab instead")
    network.teardown(plan)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``srv6pm`` command; its exit status. A closed output pipe ends it quietly with 141."""
    return quiet_on_closed_pipe(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.verbose, args.log_format)
    if args.command == "stamp":
        return args.stamp_handler(args)  # handles its own errors and exit status
    if args.command == "collector":
        return args.collector_handler(args)  # handles its own errors and exit status
    if args.command == "dashboards":
        return args.dashboards_handler(args)  # handles its own errors and exit status
    handlers: dict[tuple[str, str | None], Callable[[argparse.Namespace], int]] = {
        ("lab", "run"): cmd_lab_run, ("lab", "check"): cmd_lab_check, ("lab", "clean"): cmd_lab_clean,
        ("exporter", "run"): cmd_exporter_run, ("processor", "run"): cmd_processor_run,
        ("exporter", "check"): cmd_exporter_check, ("processor", "check"): cmd_processor_check,
    }
    handler = handlers[(args.command, getattr(args, "lab_command", None) or getattr(args, "exporter_command", None)
                        or getattr(args, "processor_command", None))]
    return guard(lambda: handler(args))  # exit status and one line from the error's class (srv6pm.errors)

if __name__ == "__main__":
    sys.exit(main())
