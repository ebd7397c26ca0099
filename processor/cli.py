"""``srv6pm processor run`` and ``srv6pm processor check``: the processor's commands.

Added to the ``srv6pm`` command by :func:`add_commands` (the interface of
:mod:`srv6pm.commands`). Both commands check what they are given with one
function, :func:`inputs` (every option, the health interval and the alarm
thresholds from their flags or ``SRV6PM_*`` variables, the Kafka and InfluxDB
settings, the metrics port), so ``check`` refuses exactly what ``run`` would
refuse before ``run`` connects (``check`` takes every option of ``run``).
"""

from __future__ import annotations

import argparse
import json

from srv6pm import metrics
from srv6pm.commands import Common, add_check, component
from srv6pm.config import ConfigError, InfluxSettings, KafkaSettings, given
from srv6pm.quote import quote
from srv6pm.stopping import Stop

__all__ = ["add_commands", "cmd_check", "cmd_run", "inputs"]


def add_commands(subparsers, common: Common | None = None) -> argparse.ArgumentParser:
    """Add ``processor run`` and ``processor check`` to ``subparsers``; returns the ``processor`` parser."""
    processor, actions = component(
        subparsers, "processor", help="processor: exact loss and delay statistics into Kafka and InfluxDB",
        description="The processor, a Kafka consumer group member: it turns the exporters' counters and STAMP "
        "samples into exact per-period loss and delay statistics, published on Kafka and stored in "
        "InfluxDB, and raises threshold alarms. Run as many as the topics have partitions. 'run' starts one; "
        "it prints nothing on stdout (results go to Kafka and InfluxDB, logs to stderr).")
    prun = actions.add_parser(
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
    prun.set_defaults(handler=cmd_run)
    if common is not None:
        common(processor)  # -v and --log-format before the action too, as every component takes them
        common(prun)
    KafkaSettings.add_arguments(prun)
    InfluxSettings.add_arguments(prun)
    add_check(actions, prun, cmd_check,
        help="validate the options of 'processor run'; print the settings as JSON",
        description="Validate every option and setting 'processor run' is given (flags and SRV6PM_* "
        "environment variables) exactly as 'processor run' does before it connects, and print the settings "
        "it would run with as one JSON object on stdout (no secrets). Connects to nothing. Exit status 2 "
        "with one line naming the option otherwise.")
    return processor


def inputs(args):
    """Everything ``processor run`` is given, checked: (options, Kafka settings, InfluxDB settings, metrics port).

    ``processor check`` calls the same. Raises ConfigError naming the option or environment variable.
    """
    from srv6pm import inputs as checks
    from srv6pm.processor.alarms import AlarmRules
    from srv6pm.processor.service import ProcessorOptions
    checks.seconds(args.pair_wait, "--pair-wait")
    checks.seconds(args.delay_lateness, "--delay-lateness", zero=True)
    checks.seconds(args.delay_idle, "--delay-idle")
    checks.count(args.ledger_records, "--ledger-records", 1, 100_000_000)
    checks.count(args.session_timeout_ms, "--session-timeout-ms", 1, 3_600_000)
    checks.count(args.heartbeat_interval_ms, "--heartbeat-interval-ms", 1, args.session_timeout_ms - 1,
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
        loss_ratio=_threshold(args, "alarm_loss_ratio", "SRV6PM_ALARM_LOSS_RATIO", 0.01, below=1),
        delay_p99_us=_threshold(args, "alarm_delay_p99_us", "SRV6PM_ALARM_DELAY_P99_US", None))
    return options, KafkaSettings.from_args(args), InfluxSettings.from_args(args), metrics.port_from_args(args)


def cmd_check(args) -> int:
    """``srv6pm processor check``: print the settings ``processor run`` would run with; 0."""
    import dataclasses
    options, kafka, influx, port = inputs(args)
    print(json.dumps({**dataclasses.asdict(options), "kafka": kafka.bootstrap, "influx_url": influx.url,
                      "influx_bucket": influx.bucket, "metrics_port": port}, indent=2))
    return 0


def cmd_run(args) -> int:
    """``srv6pm processor run``: run one processor until a signal; the exit status after it stopped."""
    from srv6pm import reach
    from srv6pm.processor.service import Processor, tune_gc
    options, kafka, influx, port = inputs(args)
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
    """Seconds between health points: ``--health-interval``, else ``$SRV6PM_HEALTH_INTERVAL``, else 10 (0: none)."""
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


def _threshold(args, attr: str, var: str, default: float | None, below: float = float("inf")) -> float | None:
    """An alarm threshold from flag ``attr``, else ``$var``, else ``default``: a number >= 0 and under ``below``
    (a threshold no figure can exceed raises no alarm), or None for 'off'."""
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
    if number >= below:
        raise ConfigError(f"{name} {quote(value)}: must be under {below:g} (no figure is above it), or 'off'")
    return number

