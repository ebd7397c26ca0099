"""``srv6pm lab run``, ``srv6pm lab check`` and ``srv6pm lab clean``: the local lab's commands.

Added to the ``srv6pm`` command by :func:`add_commands` (the interface of
:mod:`srv6pm.commands`). ``run`` and ``check`` check what they are given with
one function, :func:`inputs` (the scenario file, every option, and the Kafka and
InfluxDB settings when they name external services), so ``check`` refuses
exactly what ``run`` would refuse before anything is built (``check`` takes
every option of ``run``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from srv6pm.commands import Common, add_check, component
from srv6pm.config import ConfigError, InfluxSettings, KafkaSettings, given
from srv6pm.ports import free_ports
from srv6pm.quote import quote
from srv6pm.stopping import Stop

__all__ = ["add_commands", "cmd_check", "cmd_clean", "cmd_run", "inputs"]


def add_commands(subparsers, common: Common | None = None) -> argparse.ArgumentParser:
    """Add ``lab run``, ``lab check`` and ``lab clean`` to ``subparsers``; returns the ``lab`` parser."""
    lab, actions = component(
        subparsers, "lab", help="the local lab: a whole pipeline in network namespaces",
        description="The local lab: a scenario file (nodes, links, flows, STAMP sessions; see "
        "scenarios/example.yaml) built as network namespaces on this machine, with the whole pipeline running "
        "on it. 'run' builds it and prints the results as a table (or JSON lines), 'check' validates a "
        "scenario and prints its addressing plan as JSON, 'clean' removes what a killed lab left behind.")
    run = actions.add_parser(
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
    run.set_defaults(handler=cmd_run)
    if common is not None:
        common(lab)  # -v and --log-format before the action too, as every component takes them
        common(run)
    KafkaSettings.add_arguments(run)
    InfluxSettings.add_arguments(run)
    add_check(actions, run, cmd_check,
        help="validate a scenario and print the addressing plan as JSON",
        description="Validate the scenario and print its addressing plan as one JSON object on stdout: the "
        "period, data plane, namespaces, nodes, links with their prefixes and addresses, and each "
        "flow's and STAMP session's path and segment list. Creates nothing, connects to nothing and needs "
        "no root. Takes every option of 'lab run' and refuses exactly what 'lab run' would refuse before "
        "building anything. Exit status 2 with the first error (one line on stderr naming the file and the "
        "field, or the flag) if the scenario or an option is not valid.")
    clean = actions.add_parser(
        "clean", help="delete what killed labs left behind: namespaces, eBPF pins, temporary folders (root)",
        description="Delete the network namespaces (nodes and NODE-host end hosts) and eBPF pins of the scenario "
        "that a lab killed with SIGKILL left behind, and everything any killed lab left: its temporary "
        "folders (srv6pm-lab-*, srv6pm-influxdb-*) with the namespaces and pins they name. A running "
        "lab's namespaces are refused (exit status 1); namespaces that do not exist are skipped. Prints "
        "nothing on success; errors are one line on stderr.")
    clean.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file (see scenarios/example.yaml)")
    clean.set_defaults(handler=cmd_clean)
    if common is not None:
        common(clean)
    return lab


def _external(args, prefix: str, var: str) -> bool:
    """Whether the lab uses an external service rather than its own: one of its flags (``--kafka*``,
    ``--influx-*``: the dests starting with ``prefix``) or ``$var`` is given (:func:`srv6pm.config.given`)."""
    return (any(given(args, attr) is not None for attr in vars(args) if attr.startswith(prefix))
            or given(None, prefix, var) is not None)


def inputs(args):
    """Everything ``lab run`` is given, checked before anything is built: (scenario, Kafka settings or
    None, InfluxDB settings or None); None: the lab's own embedded service.

    ``lab check`` calls the same. Raises ConfigError or ScenarioError naming the option, file or field.
    """
    from srv6pm import inputs as checks
    from srv6pm.lab import scenario as scenario_mod
    scenario = scenario_mod.load(args.scenario)
    checks.seconds(args.duration, "--duration", optional=True)
    checks.count(args.partitions, "--partitions", 1, 1000)
    checks.seconds(args.pair_wait, "--pair-wait", optional=True)
    args.grpc_host = checks.host(args.grpc_host, "--grpc-host")  # without brackets, as sockets take it
    try:
        free_ports(args.grpc_host, 1)  # the exporters' APIs listen there: refused now, before anything is built
    except OSError as exc:
        raise ConfigError(f"--grpc-host {quote(args.grpc_host)}: cannot listen on it here: "
                          f"{exc.strerror or exc}") from None
    if args.advertise_host is not None:
        args.advertise_host = checks.host(args.advertise_host, "--advertise-host")
    if args.external_collector:
        checks.new_file(args.external_collector, "--external-collector")
    kafka = KafkaSettings.from_args(args) if _external(args, "kafka", "SRV6PM_KAFKA_BOOTSTRAP") else None
    influx = InfluxSettings.from_args(args) if _external(args, "influx", "SRV6PM_INFLUX_URL") else None
    return scenario, kafka, influx


def cmd_run(args) -> int:
    """``srv6pm lab run``: build the lab, print its results until --duration or a signal, tear it down."""
    from srv6pm.lab.latency import DetectionLatency
    from srv6pm.lab.output import JsonLines, ResultTable
    from srv6pm.lab.runner import Lab
    from srv6pm import reach
    scenario, kafka, influx = inputs(args)
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


def cmd_check(args) -> int:
    """``srv6pm lab check``: print the scenario's addressing plan as JSON; 0."""
    from srv6pm.lab import topology
    plan = topology.plan(inputs(args)[0])
    print(json.dumps(plan.to_dict(), indent=2))
    return 0


def cmd_clean(args) -> int:
    """``srv6pm lab clean``: remove what killed labs left behind; 0."""
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

