"""How the lab shows results: a table for people, JSON lines for programs.

The JSON objects are exactly the records of the result topics.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

__all__ = ["JsonLines", "LossTable"]


class JsonLines:
    def __init__(self, out: TextIO = sys.stdout):
        self.out = out

    def header(self) -> None:
        pass

    def row(self, result: dict) -> None:
        self.out.write(json.dumps(result, separators=(",", ":")) + "\n")
        self.out.flush()


class LossTable:
    """A fixed-width table, one line per (flow, period) result, printed as results arrive."""

    COLUMNS = (("period start (UTC)", 24), ("flow", 12), ("period", 12), ("tx", 9), ("rx", 9),
               ("lost", 7), ("loss %", 8), ("", 0))

    def __init__(self, out: TextIO = sys.stdout):
        self.out = out

    def header(self) -> None:
        self._line([name for name, _ in self.COLUMNS])
        self._line(["-" * width for _, width in self.COLUMNS[:-1]] + [""])

    def row(self, r: dict) -> None:
        def num(v):
            return "-" if v is None else str(v)
        if r.get("complete"):
            ratio = r.get("loss_ratio")
            pct = "-" if ratio is None else f"{100 * ratio:.3f}"
            note = "LOSS" if r.get("lost_packets") else ""
        else:
            pct, note = "-", f"incomplete (no {r.get('missing') or 'partner'} block)"
        self._line([r.get("period_start", "")[:23], r.get("flow", ""), str(r.get("period", "")),
                    num(r.get("tx_packets")), num(r.get("rx_packets")), num(r.get("lost_packets")), pct, note])

    def _line(self, cells: list[str]) -> None:
        parts = []
        for (name, width), cell in zip(self.COLUMNS, cells):
            parts.append(cell if not width else (cell.ljust(width) if name in ("period start (UTC)", "flow")
                                                 else cell.rjust(width)))
        self.out.write("  ".join(parts).rstrip() + "\n")
        self.out.flush()
