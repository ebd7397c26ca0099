"""How the lab shows results: a table for people, JSON lines for programs.

The JSON objects are exactly the records of the result topics
(``srv6pm.loss`` and ``srv6pm.delay``; a delay record has a ``direction``).
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

__all__ = ["JsonLines", "ResultTable"]


class JsonLines:
    def __init__(self, out: TextIO = sys.stdout):
        self.out = out

    def header(self) -> None:
        pass

    def row(self, result: dict) -> None:
        self.out.write(json.dumps(result, separators=(",", ":")) + "\n")
        self.out.flush()


def _num(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


class ResultTable:
    """One line per result, printed as results arrive: loss per flow, delay per session and direction."""

    def __init__(self, out: TextIO = sys.stdout):
        self.out = out

    def header(self) -> None:
        self._line("period start (UTC)", "flow/session", "period", "result")
        self._line("-" * 20, "-" * 12, "-" * 10, "-" * 60)

    def row(self, r: dict) -> None:
        subject = r.get("flow") or r.get("session") or "?"
        self._line(r.get("period_start", "")[:20], subject, str(r.get("period", "")),
                   self._delay(r) if "direction" in r else self._loss(r))

    @staticmethod
    def _loss(r: dict) -> str:
        if not r.get("complete"):
            return (f"loss   incomplete: no {r.get('missing') or 'partner'} block "
                    f"(tx {_num(r.get('tx_packets'))}, rx {_num(r.get('rx_packets'))})")
        ratio = r.get("loss_ratio")
        text = (f"loss   tx {r['tx_packets']:>7}  rx {r['rx_packets']:>7}  lost {r['lost_packets']:>5}  "
                f"({_num(None if ratio is None else 100 * ratio, '{:.3f}')} %)")
        return text + ("  LOSS" if r.get("lost_packets") else "")

    @staticmethod
    def _delay(r: dict) -> str:
        def ms(key):
            return _num(None if r.get(key) is None else r[key] / 1000, "{:.3f}")
        text = (f"delay  {r['direction']:<10}  n {r.get('samples', 0):>4}  lost {r.get('lost', 0):>3}  "
                f"min {ms('min_us')}  mean {ms('mean_us')}  p99 {ms('p99_us')}  max {ms('max_us')}  "
                f"jitter {ms('jitter_us')} ms")
        return text + ("  LOSS" if r.get("lost") else "")

    def _line(self, start: str, subject: str, period: str, result: str) -> None:
        self.out.write(f"{start:<20}  {subject:<12}  {period:>10}  {result}".rstrip() + "\n")
        self.out.flush()
