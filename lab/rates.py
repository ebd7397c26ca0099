"""Did each flow's test traffic reach its configured rate? From what the generators really sent.

The generators (:mod:`srv6pm.lab.traffic`) count per flow the packets sent
and the packets their schedule had reached (``due``). A flow is *below its
rate* when it sent fewer than :data:`REACHED` of its due packets (less one,
the packet that may be in flight at the instant of the report). Each change
(a flow falls below, or gets back) is a ``traffic`` record::

    {"record": "traffic", "flow": "f1", "rate": 100000.0, "sent_rate": 23456.7,
     "sent": 234567, "due": 1000001, "seconds": 10.0, "reached": false}

``rate`` is the configured rate, ``sent_rate`` = ``sent / seconds`` (packets
per second since the flow started), ``reached`` the verdict. The lab shows
these records as table rows (or JSON lines), and the summary names the flows
still below their rate at the end (:meth:`RateWatch.final`).
"""

from __future__ import annotations

__all__ = ["REACHED", "RateWatch", "record"]

REACHED = 0.95


def record(flow: str, counts: dict, seconds: float) -> dict:
    """The ``traffic`` record of one flow's generator counts."""
    sent, due = counts["sent"], counts["due"]
    return {"record": "traffic", "flow": flow, "rate": counts["rate"],
            "sent_rate": round(sent / seconds, 1) if seconds > 0 else None,
            "sent": sent, "due": due, "seconds": seconds, "reached": sent >= REACHED * due - 1}


class RateWatch:
    """Turns successive generator reports (``Lab.traffic_sent()``) into ``traffic`` records on changes."""

    def __init__(self) -> None:
        self.below: set[str] = set()

    def update(self, report: dict) -> list[dict]:
        """Records of the flows whose verdict changed since the last report (a flow starts as reaching)."""
        changed = []
        for flow, counts in sorted(report["flows"].items()):
            r = record(flow, counts, report["seconds"])
            if r["reached"] == (flow in self.below):
                (self.below.discard if r["reached"] else self.below.add)(flow)
                changed.append(r)
        return changed

    def final(self, report: dict) -> list[dict]:
        """The records of every flow in the final report (the summary shows those below their rate)."""
        self.update(report)
        return [record(flow, counts, report["seconds"]) for flow, counts in sorted(report["flows"].items())]
