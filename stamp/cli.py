"""The ``stamp`` commands: ``srv6pm stamp reflector`` and ``srv6pm stamp sender``.

:func:`add_commands` adds them to the ``srv6pm`` command (the interface of
:mod:`srv6pm.commands`). Each handler validates its input first and raises
bad input (an address, an unreadable key file, a bad SID list, a size that
cannot be built) as a :class:`UsageError`: one line on stderr, ``srv6pm:
...``, and exit status 2 (:mod:`srv6pm.exits`); 1 is a runtime failure (e.g. the port is in use, or the reflector's default ``ebpf`` backend
cannot run here: the message says what is missing and names ``--backend
socket``, followed by the verifier's log if it refused the program), 130
after SIGINT (Ctrl-C) and 143 after SIGTERM, once stopped cleanly (the sender
still prints its summary). ``python -m srv6pm.stamp`` runs them alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from typing import Callable

from srv6pm.commands import Common, component
from srv6pm.errors import EXIT_OK, InputError, OperationError, Srv6pmError
from srv6pm.netns import NetnsError
from srv6pm.stamp.backends import BACKENDS, DEFAULT_BACKEND, make_reflector, open_reflector
from srv6pm.stamp.ebpf import ATTACH_MODES
from srv6pm.stamp.errors import StampError
from srv6pm.stamp.keys import load_key
from srv6pm.stamp.reflector import DEFAULT_PORT, ReflectorConfig
from srv6pm.stamp.sender import Sample, Sender, SenderConfig, summarize
from srv6pm.stamp.srh import parse_segments
from srv6pm.stamp.timestamp import TimestampFormat
from srv6pm.stopping import Stop

__all__ = ["add_commands", "cmd_reflector", "cmd_sender"]


KEY_HELP = ("file holding the shared HMAC-SHA-256 key: one line of hexadecimal digits (16 to 1024 octets; "
            "'#' comment lines allowed), e.g. made with: python3 -c 'import secrets; print(secrets.token_hex(32))'. "
            "Enables authenticated mode (RFC 8762 §4.4); both ends need the same key. Keys are never taken "
            "from the command line.")


class UsageError(InputError, ValueError):
    """Bad command-line input; ``str()`` is the one-line message."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} not in 1..65535")
    return value


def add_commands(subparsers, common: Common | None = None) -> argparse.ArgumentParser:
    """Add ``stamp reflector`` and ``stamp sender`` to ``subparsers``; returns the ``stamp`` parser.

    ``common`` (srv6pm.cli's adder of -v/--log-format) is applied to each new parser.
    """
    stamp, actions = component(
        subparsers, "stamp", help="STAMP delay measurement (RFC 8762/8972/9503): Session-Sender and Session-Reflector",
        description="Measure one-way and round-trip delay with STAMP, over SRv6 paths if wanted. "
        "Interoperates with other STAMP (and TWAMP-Light, unauthenticated) implementations. 'reflector' "
        "answers test packets, 'sender' sends them and prints the delays.",
        actions="which end of a STAMP session to run")

    ref = actions.add_parser(
        "reflector", help="answer STAMP test packets (Session-Reflector)",
        description="Run a STAMP Session-Reflector until Ctrl-C or SIGTERM. Replies carry the kernel's "
        "receive timestamp of each test packet and a transmit timestamp taken just before sending, echo the "
        "TTL/Hop Limit the packet arrived with, and follow a Return Path TLV's SRv6 segment list (RFC 9503). "
        "Malformed packets and packets whose HMAC does not verify are dropped and counted; the counters are "
        "printed as one JSON object on stderr at exit (and logged with -v), with the eBPF program's own under "
        "\"kernel\" (answered, and passed up by reason).")
    ref.add_argument("--bind", required=True, metavar="ADDR",
                     help="local address to listen on (IPv6 or IPv4; '::' for every address)")
    ref.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"UDP port (default {DEFAULT_PORT})")
    ref.add_argument("--auth-key", metavar="FILE", help=KEY_HELP)
    ref.add_argument("--stateful", action="store_true",
                     help="number replies per test session (sender address/port + SSID), starting at 0, instead "
                          "of copying the sender's sequence number (RFC 8762 §4.3.1); lets the sender tell "
                          "forward from backward loss")
    ref.add_argument("--netns", metavar="NAME",
                     help="open the socket in this named network namespace (/run/netns/NAME); the process "
                          "stays where it is")
    ref.add_argument("--timestamp-format", choices=("ntp", "ptp"), default="ntp",
                     help="format of the reflector's timestamps: NTP 64-bit (default) or PTPv2 truncated (TAI)")
    ref.add_argument("--honour-return-address", action="store_true",
                     help="send replies to the address in a Return Path TLV's Return Address sub-TLV (RFC 9503). "
                          "Off by default: an open reflector that does this can be abused to flood third parties")
    ref.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                     help="ebpf (default): an XDP or tc program answers in the kernel the test packets it can "
                          "(unauthenticated, IPv6, the TLVs it implements) and hands the rest, unchanged, to this "
                          "reflector's socket, so every answer is the same whichever path took the packet; it needs "
                          "root, the kernel's BTF and the program compiled by ./setup.sh, and where it cannot run "
                          "the command says why and exits 1 (it never falls back by itself). socket: every test "
                          "packet is answered in user space")
    ref.add_argument("--attach", choices=ATTACH_MODES, default="auto",
                     help="with --backend ebpf: the hook on every interface of the namespace. auto (default): tc "
                          "ingress on veth (native XDP there needs an XDP program on the peer, and passes up packets "
                          "with offloaded checksums), native XDP elsewhere, tc where XDP cannot attach; xdp: native "
                          "XDP; xdp-generic: the kernel's generic XDP; tc: tc clsact ingress")
    ref.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: run until stopped)")
    ref.set_defaults(handler=cmd_reflector)

    snd = actions.add_parser(
        "sender", help="send STAMP test packets and report delays (Session-Sender)",
        description="Send STAMP test packets to a Session-Reflector and print, per packet, the timestamps "
        "t1 (sent), t2 (received by the reflector), t3 (sent back), t4 (reply received) and the delays: "
        "forward t2-t1, backward t4-t3, round trip (t4-t1)-(t3-t2). One-way delays need synchronised clocks. "
        "A packet without a reply within --timeout is reported lost.",
        epilog="With --json: one object per test packet ({\"session\", \"seq\", \"t1\", \"t2\", \"t3\", \"t4\"} in "
        "ns since the Unix epoch, or \"lost\": true, plus timestamp kinds, TTLs and error estimates), then one "
        "object {\"summary\": true, ...} with counts and min/mean/max delays in µs.")
    snd.add_argument("--dest", required=True, metavar="ADDR", help="the Session-Reflector's address")
    snd.add_argument("--port", type=_port, default=DEFAULT_PORT,
                     help=f"the Session-Reflector's UDP port (default {DEFAULT_PORT})")
    snd.add_argument("--count", type=int, default=10, metavar="N",
                     help="test packets to send (default 10; 0: until Ctrl-C)")
    snd.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                     help="time between test packets (default 1)")
    snd.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                     help="a test packet without a reply after this long is lost (default 2)")
    snd.add_argument("--segments", metavar="SID,SID...",
                     help="forward SRv6 segment list: the test packets carry a Segment Routing Header and visit "
                          "these SIDs in order before the reflector (IPv6 only)")
    snd.add_argument("--return-segments", metavar="SID,SID...",
                     help="backward SRv6 segment list, sent in a Return Path TLV (RFC 9503): the reflector sends "
                          "its reply through these SIDs, then to this sender")
    snd.add_argument("--auth-key", metavar="FILE", help=KEY_HELP)
    snd.add_argument("--source", metavar="ADDR", help="local address to send from (default: the kernel's choice)")
    snd.add_argument("--size", type=int, metavar="OCTETS",
                     help="UDP payload size of each test packet, filled with an Extra Padding TLV (default: the "
                          "minimum, 44 octets unauthenticated / 112 authenticated, plus TLVs)")
    snd.add_argument("--netns", metavar="NAME", help="open the socket in this named network namespace")
    snd.add_argument("--session", default="stamp", metavar="NAME", help="session name put in every record")
    snd.add_argument("--ssid", type=int, default=0, metavar="N",
                     help="STAMP Session Identifier (RFC 8972), 1..65535 (default 0: none)")
    snd.add_argument("--stop-if-ssid-ignored", action="store_true",
                     help="end the session (exit 1) when the reflector returns SSID 0, i.e. does not implement "
                          "RFC 8972 (default: say so once and go on measuring)")
    snd.add_argument("--direct-measurement", action="store_true",
                     help="carry an RFC 8972 Direct Measurement TLV: the reflector's counters tell forward "
                          "from backward loss (sender_tx, reflector_rx, reflector_tx in --json rows)")
    snd.add_argument("--dscp", type=int, metavar="N",
                     help="send with DSCP N (0..63) and a Class of Service TLV asking for it on the reply; "
                          "rows say whether it arrived re-marked")
    snd.add_argument("--timestamp-format", choices=("ntp", "ptp"), default="ntp",
                     help="format of the sender's timestamp: NTP 64-bit (default) or PTPv2 truncated (TAI)")
    snd.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    snd.set_defaults(handler=cmd_sender)

    if common is not None:
        for parser in (stamp, ref, snd):
            common(parser)
    return stamp


# -- shared -----------------------------------------------------------------------------

def _key(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return load_key(path)
    except StampError as exc:
        raise UsageError(str(exc)) from None


def _segments(text: str | None, option: str) -> tuple:
    if text is None:
        return ()
    try:
        return parse_segments(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


# The words a SenderConfig/ReflectorConfig error starts with, and the option they come from.
_FLAGS = (("destination address", "--dest"), ("source", "--source"), ("SSID", "--ssid"), ("size", "--size"),
          ("port", "--port"), ("return segments", "--return-segments"), ("segments", "--segments"),
          ("bind address", "--bind"), ("count", "--count"), ("interval", "--interval"), ("timeout", "--timeout"))


def _usage(exc: ValueError) -> UsageError:
    """A configuration's ValueError as a UsageError that names the option it came from (``--ssid: ...``)."""
    message = str(exc)
    flag = next((f for words, f in _FLAGS if message.startswith(words)), None)
    return UsageError(f"{flag}: {message}" if flag else message)


def _format(name: str) -> TimestampFormat:
    return TimestampFormat.PTP if name == "ptp" else TimestampFormat.NTP


def _explained(body: Callable[[], int]) -> int:
    """``body()``, its failures said in the terms of these commands.

    Here a missing namespace is a bad --netns value (a :class:`UsageError`),
    and an OS error says the kernel's reason alone (an
    :class:`~srv6pm.errors.OperationError`). An unusable backend
    (:class:`~srv6pm.stamp.backends.BackendUnavailable`) already says what
    is missing and names ``--backend socket``.
    """
    try:
        return body()
    except NetnsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        if exc.strerror and not isinstance(exc, (BrokenPipeError, Srv6pmError)):
            raise OperationError(exc.strerror) from exc
        raise


# -- reflector --------------------------------------------------------------------------

def cmd_reflector(args) -> int:
    """``srv6pm stamp reflector``: serve until a signal (or --duration); exit status."""

    def body() -> int:
        if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
            raise UsageError("--duration must be a positive number of seconds")
        if args.attach != "auto" and args.backend != "ebpf":
            raise UsageError("--attach is for --backend ebpf")
        try:
            config = ReflectorConfig(bind=args.bind, port=args.port, key=_key(args.auth_key), stateful=args.stateful,
                                     netns=args.netns, timestamp_format=_format(args.timestamp_format),
                                     honour_return_address=args.honour_return_address)
            reflector = make_reflector(config, args.backend, instance=f"cli-{args.netns or 'host'}-{args.port}",
                                       attach=args.attach)
        except ValueError as exc:
            raise _usage(exc) from None
        with Stop(reflector.stop) as stop:
            report = _serve(reflector, args, config)
        print(json.dumps(report), file=sys.stderr, flush=True)
        return stop.status(EXIT_OK)

    return _explained(body)


def _backend_text(reflector) -> str:
    """``socket backend`` or ``ebpf backend (tc on 2 interfaces)``."""
    attachments = getattr(reflector, "attachments", None)
    if attachments is None:
        return "socket backend"
    hooks = ", ".join(f"{how} on {n} interface{'s' if n != 1 else ''}" for how, n in sorted(attachments().items()))
    return f"ebpf backend ({hooks or 'no interface yet'})"


def _serve(reflector, args, config) -> dict:
    """Open ``reflector``, serve until it is stopped (a signal, --duration), close it; its counters."""
    timer = None
    try:
        open_reflector(reflector, "--backend socket")
        if args.duration:
            timer = threading.Timer(args.duration, reflector.stop)
            timer.daemon = True
            timer.start()
        print(f"srv6pm stamp reflector: listening on [{reflector.address[0]}]:{reflector.address[1]}"
              + (f" in network namespace {config.netns}" if config.netns else "")
              + (", authenticated" if config.key else "") + (", stateful" if config.stateful else "")
              + f", {_backend_text(reflector)}", file=sys.stderr, flush=True)
        reflector.run()
    finally:
        if timer is not None:
            timer.cancel()
        report = {"reflector": reflector.stats().to_dict()}
        if args.backend == "ebpf":
            report["kernel"] = reflector.kernel_counters()
        reflector.close()
    return report


# -- sender -----------------------------------------------------------------------------

def _us(ns: int | None) -> str:
    return "" if ns is None else f"{ns / 1000:.1f}"


class _Table:
    header = (f"{'session':<12} {'seq':>8}  {'forward µs':>12} {'backward µs':>12} {'round trip µs':>14} "
              f"{'ttl':>4}  timestamps (t1/t4)")

    def start(self) -> None:
        print(self.header)
        print("-" * len(self.header), flush=True)

    def row(self, s: Sample) -> None:
        if s.lost:
            print(f"{s.session:<12} {s.seq:>8}  {'lost':>12}", flush=True)
            return
        print(f"{s.session:<12} {s.seq:>8}  {_us(s.forward_ns):>12} {_us(s.backward_ns):>12} "
              f"{_us(s.round_trip_ns):>14} {s.ttl if s.ttl else '-':>4}  {s.t1_kind}/{s.t4_kind}"
              + ("" if s.return_path is not False else "  (return path not honoured)"), flush=True)

    def summary(self, summary: dict) -> None:
        sent = summary["sent"]
        ratio = 100.0 * summary["lost"] / sent if sent else 0.0
        print(f"\n{summary['session']}: {sent} sent, {summary['received']} received, {summary['lost']} lost "
              f"({ratio:.1f} %)")
        print(f"{'':<12} {'min µs':>12} {'mean µs':>12} {'max µs':>12}")
        for label, name in (("forward", "forward_us"), ("backward", "backward_us"), ("round trip", "round_trip_us")):
            s = summary[name]
            if s is None:
                print(f"{label:<12} {'-':>12} {'-':>12} {'-':>12}")
            else:
                print(f"{label:<12} {s['min']:>12.1f} {s['mean']:>12.1f} {s['max']:>12.1f}")
        sys.stdout.flush()


class _Json:
    def start(self) -> None:
        pass

    def row(self, s: Sample) -> None:
        print(json.dumps(s.to_dict(), separators=(",", ":")), flush=True)

    def summary(self, summary: dict) -> None:
        print(json.dumps({"summary": True, **summary}, separators=(",", ":")), flush=True)


def cmd_sender(args) -> int:
    """``srv6pm stamp sender``: run one session, print samples and a summary; exit status."""

    def body() -> int:
        if args.count < 0:
            raise UsageError("--count must be 0 (until stopped) or more")
        for option, value in (("--interval", args.interval), ("--timeout", args.timeout)):
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{option} must be a positive number of seconds")
        try:
            config = SenderConfig(
                dest=args.dest, port=args.port, session=args.session, source=args.source,
                count=args.count or None, interval=args.interval, size=args.size,
                segments=_segments(args.segments, "--segments"),
                return_segments=_segments(args.return_segments, "--return-segments"),
                key=_key(args.auth_key), timeout=args.timeout, netns=args.netns, ssid=args.ssid,
                timestamp_format=_format(args.timestamp_format), direct_measurement=args.direct_measurement,
                dscp=args.dscp, stop_if_ssid_ignored=args.stop_if_ssid_ignored)
        except ValueError as exc:
            raise _usage(exc) from None
        view = _Json() if args.json else _Table()
        sender = Sender(config)
        samples: list[Sample] = []
        with Stop(sender.stop) as stop:
            iterator = sender.samples()
            first = next(iterator, None)  # opens the socket: errors surface before the header
            view.start()
            if first is not None:
                samples.append(first)
                view.row(first)
            for sample in iterator:
                samples.append(sample)
                view.row(sample)
        view.summary({"session": config.session, **summarize(samples), **_extra(sender)})
        return stop.status(EXIT_OK)

    return _explained(body)


def _extra(sender: Sender) -> dict:
    stats = sender.stats()
    return {"auth_failures": stats.auth_failures, "bad_replies": stats.bad_replies,
            "late_replies": stats.late_replies, "send_errors": stats.send_errors,
            "ssid_ignored": stats.ssid_ignored, "impossible_timestamps": stats.impossible_timestamps}
