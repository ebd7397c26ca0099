"""How the lab shows results: a table for people, JSON lines for programs.

The JSON lines are exactly the records of the result topics
(``srv6pm.loss``, ``srv6pm.delay`` and ``srv6pm.alarms``; a delay record has
a ``direction``, an alarm a ``kind``; a loss record has its ``segments`` when
the flow's counters carry positions), and the lab's own records, which have a
``record`` field the topics' records do not have: ``traffic`` (a flow's test
traffic fell below its configured rate or got back to it, and at the end one
per flow: :mod:`srv6pm.lab.rates`) and, last, one ``summary`` with the
table's totals (:meth:`ResultTable.totals`). The schema of every line is
``srv6pm/schemas/srv6pm.lab-output.schema.json``. The table ends with a
summary per flow and per session, and names the flows whose traffic stayed
below its configured rate.

A loss row of a flow with segments names the segments that lost packets
(``r2→r3: 5``) and those that could not be measured (``r3→r4: ?``); the
summary names, per flow, the segments whose complete periods lost packets,
and gives the run's detection latency (``latency``) when it is given one.

A delay row of a session with RFC 8972 Direct Measurement (scenario key
``direct_measurement``) whose period lost test packets says which way they
were lost (``LOSS  forward 2, backward 1``; the record's ``lost_forward`` and
``lost_backward``, the same in the period's three direction rows); a lossy
period whose direction is not known says nothing more. When any row had
them, the summary adds per session and direction the lost forward and
backward over the periods where they were known (``-``: never known) and
the periods that lost test packets without saying which way.

A liveness alarm (a STAMP session watching its path) is a row of its own
(``ALARM  raised   liveness: path down, 3 test packets without a reply, 61.8 ms
after the last reply`` / ``ALARM  cleared  liveness: path up, 3 replies``);
the summary then gives, per such session, the path's state at the end, how
often it went down and up, and the longest silence before a down.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass, field
from typing import TextIO

from .latency import DetectionLatency

__all__ = ["JsonLines", "ResultTable"]


class JsonLines:
    """One JSON object per line: every record as it comes, then one ``summary`` record (module docstring)."""

    def __init__(self, out: TextIO = sys.stdout):
        self.out = out
        self._totals = ResultTable(io.StringIO())  # the same totals as the table's summary

    def header(self) -> None:
        pass

    def row(self, result: dict) -> None:
        self._totals.row(result)
        self._write(result)

    def traffic(self, record: dict) -> None:
        self._totals.traffic(record)
        self._write(record)

    def summary(self) -> None:
        self._write({"record": "summary", **self._totals.totals()})

    def _write(self, record: dict) -> None:
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.out.flush()


def _traffic(r: dict) -> str:
    """``sent 23456.7/s of 100000/s (23.5 %)``: a traffic record's rate against the configured one."""
    share = 100 * r["sent"] / r["due"] if r["due"] else 100.0
    return f"sent {_num(r['sent_rate'], '{:g}')}/s of {r['rate']:g}/s ({share:.1f} % of its packets)"


def _num(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _ms(us: float | None) -> str:
    return _num(None if us is None else us / 1000, "{:.3f}")


@dataclass
class _FlowTotals:
    complete: int = 0
    incomplete: int = 0
    tx: int = 0
    rx: int = 0
    lost: int = 0
    segments: dict[str, int] = field(default_factory=dict)  # "from→to": lost, summed where it was complete


def _segment_name(segment: dict) -> str:
    return f"{segment.get('from') or '?'}→{segment.get('to') or '?'}"


def _segments(r: dict, totals: _FlowTotals) -> str:
    """`` r2→r3: 5, r3→r4: ?``: the segments that lost packets or could not be measured (and count them)."""
    shown = []
    for segment in r.get("segments") or ():
        name = _segment_name(segment)
        if not segment.get("complete"):
            shown.append(f"{name}: ?")
            continue
        lost = segment.get("lost_packets") or 0
        totals.segments[name] = totals.segments.get(name, 0) + lost
        if lost:
            shown.append(f"{name}: {lost}")
    return ("  " + ", ".join(shown)) if shown else ""


@dataclass
class _DelayTotals:
    periods: int = 0
    samples: int = 0
    lost: int = 0
    weighted_mean_us: float = 0.0  # sum of mean_us * samples
    min_us: float | None = None
    max_us: float | None = None
    worst_p99_us: float | None = None
    lost_forward: int | None = None  # summed over the periods where it was known; None: never known
    lost_backward: int | None = None
    direction_unknown: int = 0  # periods that lost test packets without lost_forward / lost_backward


def _add(total: int | None, value: int | None) -> int | None:
    """``total + value`` where ``value`` is known; None while nothing was known."""
    return total if value is None else (total or 0) + value


@dataclass
class _LivenessTotals:
    up: bool = True
    downs: int = 0
    ups: int = 0
    longest_silence_ms: float | None = None  # time_ns - last_reply_ns of a down, the longest


def _lower(a, b):
    return b if a is None or (b is not None and b < a) else a


def _higher(a, b):
    return b if a is None or (b is not None and b > a) else a


class ResultTable:
    """One line per result, printed as results arrive; a summary per flow and session at the end."""

    def __init__(self, out: TextIO = sys.stdout, latency: DetectionLatency | None = None):
        self.out = out
        self.latency = latency  # printed with the summary
        self.flows: dict[str, _FlowTotals] = {}
        self.delays: dict[tuple[str, str], _DelayTotals] = {}
        self.alarms_raised: set[tuple] = set()
        self.liveness: dict[str, _LivenessTotals] = {}
        self.traffic_last: dict[str, dict] = {}  # flow -> its latest traffic record (srv6pm.lab.rates)

    def header(self) -> None:
        self._line("period start (UTC)", "flow/session", "period", "result")
        self._line("-" * 20, "-" * 12, "-" * 10, "-" * 60)

    def row(self, r: dict) -> None:
        if "kind" in r:
            self._line(r.get("period_start", "")[:20], r.get("subject", "?"), str(r.get("period", "")), self._alarm(r))
            return
        subject = r.get("flow") or r.get("session") or "?"
        self._line(r.get("period_start", "")[:20], subject, str(r.get("period", "")),
                   self._delay(r) if "direction" in r else self._loss(r))

    def _loss(self, r: dict) -> str:
        totals = self.flows.setdefault(r.get("flow") or "?", _FlowTotals())
        if not r.get("complete"):
            totals.incomplete += 1
            missing = r.get("missing") or "partner"
            what = "ingress or egress block" if missing == "both" else f"{missing} block"
            return (f"loss   incomplete: no {what} "
                    f"(tx {_num(r.get('tx_packets'))}, rx {_num(r.get('rx_packets'))})") + _segments(r, totals)
        totals.complete += 1
        totals.tx += r["tx_packets"]
        totals.rx += r["rx_packets"]
        totals.lost += r["lost_packets"]
        ratio = r.get("loss_ratio")
        text = (f"loss   tx {r['tx_packets']:>7}  rx {r['rx_packets']:>7}  lost {r['lost_packets']:>5}  "
                f"({_num(None if ratio is None else 100 * ratio, '{:.3f}')} %)")
        return text + ("  LOSS" if r.get("lost_packets") else "") + _segments(r, totals)

    def _delay(self, r: dict) -> str:
        totals = self.delays.setdefault((r.get("session") or "?", r["direction"]), _DelayTotals())
        samples = r.get("samples") or 0
        totals.periods += 1
        totals.samples += samples
        totals.lost += r.get("lost") or 0
        if samples and r.get("mean_us") is not None:
            totals.weighted_mean_us += r["mean_us"] * samples
        totals.min_us = _lower(totals.min_us, r.get("min_us"))
        totals.max_us = _higher(totals.max_us, r.get("max_us"))
        totals.worst_p99_us = _higher(totals.worst_p99_us, r.get("p99_us"))
        forward, backward = r.get("lost_forward"), r.get("lost_backward")
        totals.lost_forward = _add(totals.lost_forward, forward)
        totals.lost_backward = _add(totals.lost_backward, backward)
        text = (f"delay  {r['direction']:<10}  n {samples:>4}  lost {r.get('lost', 0):>3}  "
                f"min {_ms(r.get('min_us'))}  mean {_ms(r.get('mean_us'))}  p99 {_ms(r.get('p99_us'))}  "
                f"max {_ms(r.get('max_us'))}  jitter {_ms(r.get('jitter_us'))} ms")
        if not r.get("lost"):
            return text
        if forward is None or backward is None:
            totals.direction_unknown += 1
            return text + "  LOSS"
        return text + f"  LOSS  forward {forward}, backward {backward}"

    def _alarm(self, r: dict) -> str:
        key = (r.get("kind"), r.get("subject"), r.get("direction"))
        (self.alarms_raised.add if r.get("raised") else self.alarms_raised.discard)(key)
        what = r.get("kind", "?") + (f" {r['direction']}" if r.get("direction") else "")
        if r.get("kind") == "liveness":
            return self._liveness(r)
        if r.get("kind") == "delay_p99_us":
            value, threshold = f"{_ms(r.get('value'))} ms", f"{_ms(r.get('threshold'))} ms"
        else:
            value, threshold = _num(r.get("value"), "{:.4f}"), _num(r.get("threshold"), "{:.4f}")
        if r.get("raised"):
            return f"ALARM  raised   {what}: {value} > {threshold}"
        return f"ALARM  cleared  {what}: {value} <= {threshold}"

    def _liveness(self, r: dict) -> str:
        totals = self.liveness.setdefault(r.get("subject") or "?", _LivenessTotals())
        totals.up = not r.get("raised")
        if totals.up:
            totals.ups += 1
            return f"ALARM  cleared  liveness: path up, {_num(r.get('value'))} replies"
        totals.downs += 1
        silence = ""
        if r.get("time_ns") is not None and r.get("last_reply_ns") is not None:
            ms = (r["time_ns"] - r["last_reply_ns"]) / 1e6
            totals.longest_silence_ms = _higher(totals.longest_silence_ms, ms)
            silence = f", {ms:.1f} ms after the last reply"
        return f"ALARM  raised   liveness: path down, {_num(r.get('value'))} test packets without a reply{silence}"

    def traffic(self, r: dict) -> None:
        """A flow's test traffic fell below its configured rate, or got back to it (:mod:`srv6pm.lab.rates`)."""
        before = self.traffic_last.get(r["flow"])
        self.traffic_last[r["flow"]] = r
        if r["reached"] == (before["reached"] if before else True):
            return  # no change to show (e.g. the end-of-run record of a flow that kept its rate)
        self._line("", r["flow"], "", "traffic " + _traffic(r) + ("" if r["reached"] else "  RATE"))

    def totals(self) -> dict:
        """The summary's figures as one object (the JSON ``summary`` record; see the schema)."""
        flows = {flow: {"periods": t.complete, "incomplete": t.incomplete, "tx_packets": t.tx, "rx_packets": t.rx,
                        "lost_packets": t.lost, "loss_ratio": t.lost / t.tx if t.tx else None,
                        "segments": dict(t.segments)} for flow, t in sorted(self.flows.items())}
        sessions = [{"session": session, "direction": direction, "periods": t.periods, "samples": t.samples,
                     "lost": t.lost, "min_us": t.min_us,
                     "mean_us": t.weighted_mean_us / t.samples if t.samples else None,
                     "worst_p99_us": t.worst_p99_us, "max_us": t.max_us, "lost_forward": t.lost_forward,
                     "lost_backward": t.lost_backward, "direction_unknown_periods": t.direction_unknown}
                    for (session, direction), t in sorted(self.delays.items())]
        raised = [{"kind": kind, "subject": subject, "direction": direction}
                  for kind, subject, direction in sorted(self.alarms_raised, key=str)]
        paths = {session: {"up": t.up, "downs": t.downs, "ups": t.ups, "longest_silence_ms": t.longest_silence_ms}
                 for session, t in sorted(self.liveness.items())}
        below = [r for _, r in sorted(self.traffic_last.items()) if not r["reached"]]
        return {"flows": flows, "sessions": sessions, "paths": paths, "alarms_raised": raised,
                "traffic_below_rate": below}

    def summary(self) -> None:
        """Totals over the run: per flow (complete periods only), per session and direction, path liveness."""
        below = [r for _, r in sorted(self.traffic_last.items()) if not r["reached"]]
        if below:
            self.out.write("\ntraffic below its configured rate: "
                           + "; ".join(f"{r['flow']} {_traffic(r)}" for r in below) + "\n")
        if not self.flows and not self.delays and not self.liveness:
            self.out.write("\nno results yet\n")
            self.out.flush()
            return
        w = self.out.write
        if self.flows:
            row = "{:<12}  {:>7}  {:>10}  {:>10}  {:>10}  {:>8}  {:>6}"
            where = any(t.segments for t in self.flows.values())
            w("\n" + row.format("flow", "periods", "incomplete", "tx", "rx", "lost", "loss %")
              + ("  lost on segments" if where else "") + "\n")
            for flow, t in sorted(self.flows.items()):
                ratio = _num(100 * t.lost / t.tx if t.tx else None, "{:.3f}")
                lossy = ", ".join(f"{name}: {lost}" for name, lost in t.segments.items() if lost)
                line = row.format(flow, t.complete, t.incomplete, t.tx, t.rx, t.lost, ratio)
                w((f"{line}  {lossy or '-'}" if where and t.segments else line) + "\n")
        if self.delays:
            row = "{:<12}  {:<10}  {:>7}  {:>7}  {:>5}  {:>8}  {:>8}  {:>12}  {:>8}"
            # Direct Measurement (some session had it): lost forward / backward, and lossy periods without them
            directed = any(d.lost_forward is not None or d.lost_backward is not None for d in self.delays.values())
            more = "  {:>8}  {:>9}  {:>19}" if directed else ""
            w("\n" + (row + more).format("session", "direction", "periods", "samples", "lost", "min ms", "mean ms",
                                         "worst p99 ms", "max ms", "lost fwd", "lost back",
                                         "periods dir unknown") + "\n")
            for (session, direction), d in sorted(self.delays.items()):
                mean = d.weighted_mean_us / d.samples if d.samples else None
                w((row + more).format(session, direction, d.periods, d.samples, d.lost, _ms(d.min_us), _ms(mean),
                                      _ms(d.worst_p99_us), _ms(d.max_us), _num(d.lost_forward),
                                      _num(d.lost_backward), d.direction_unknown) + "\n")
        if self.liveness:
            row = "{:<12}  {:<4}  {:>5}  {:>5}  {:>24}\n"
            w("\n" + row.format("session", "path", "downs", "ups", "longest silence, ms"))
            for session, live in sorted(self.liveness.items()):
                w(row.format(session, "up" if live.up else "DOWN", live.downs, live.ups,
                             _num(live.longest_silence_ms, "{:.1f}")))
        if self.latency is not None:
            w("\n" + self.latency.summary() + "\n")
        if self.alarms_raised:
            w("\nalarms still raised: " + ", ".join(
                f"{subject} {kind}" + (f" {direction}" if direction else "")
                for kind, subject, direction in sorted(self.alarms_raised, key=str)) + "\n")
        self.out.flush()

    def _line(self, start: str, subject: str, period: str, result: str) -> None:
        self.out.write(f"{start:<20}  {subject:<12}  {period:>10}  {result}".rstrip() + "\n")
        self.out.flush()
