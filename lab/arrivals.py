"""What arrives: each flow's test packets counted at its destination host, by the DSCP they arrive with.

The sender marks each flow's traffic with the flow's ``dscp``
(:mod:`srv6pm.lab.traffic`); what the destination host receives shows what
the network did to it. With the ebpf data plane the colour travels in the
outer header's Alternate-Marking option and the inner packet should arrive
with the DSCP it was sent with; with the nftables data plane the ingress
rewrites the DSCP to the colour's code point (11 or 15 by default), and that
is what arrives.

In every host namespace that is the destination of some flow, the lab network
(:mod:`srv6pm.lab.network`) installs :func:`commands`: table ``ip6
srv6pm_arrivals`` with, per flow arriving there, 64 named counters
``arrived_<n>_<dscp>`` (``n`` the flow's 1-based index in the scenario) and
one rule in an input chain that runs before the host's drop rule (priority
-10): the flow's destination address and UDP, then the counter of the
packet's DSCP, chosen by a map over all 64 values, so every packet of the
flow is counted exactly once. The rule gives no verdict: the host's own table
(``srv6pm_host``) still drops the packet.

The map's key is the raw DSCP bits of the IPv6 header (``@nh,0,16 & 0x0fc0``,
keys ``dscp << 6``) rather than ``ip6 dscp``: libnftables 1.0.6 (Debian 12)
encodes ``ip6 dscp`` as a map or set key with a shift that makes every
packet look like DSCP 0.

:func:`read` reads the counters of every destination host (one nftables
list per host) into :class:`Arrivals`. Needs root, like the lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from srv6pm.nft import Nft

from .topology import FlowPlan, Plan

__all__ = ["Arrivals", "DSCP_MASK", "TABLE", "commands", "read"]

TABLE = "srv6pm_arrivals"
CHAIN = "input"
PRIORITY = -10  # before srv6pm_host's drop rule (priority 0)
DSCP_MASK = 0x0FC0  # the DSCP in the first 16 bits of the IPv6 header (version 4, traffic class 8, ...)
DSCP_VALUES = range(64)


def _counter(flow: FlowPlan, dscp: int) -> str:
    return f"arrived_{flow.index}_{dscp}"


@dataclass(frozen=True)
class Arrivals:
    """The packets of ``flow`` that reached its destination host so far, by DSCP (only DSCPs seen)."""

    flow: str
    by_dscp: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def total(self) -> int:
        return sum(self.by_dscp.values())

    def lines(self) -> list[str]:
        """``f1 arrived dscp 46: 1000 of 1000``, one line per DSCP seen, or ``f1 arrived: none``."""
        if not self.total:
            return [f"{self.flow} arrived: none"]
        return [f"{self.flow} arrived dscp {dscp}: {count} of {self.total}"
                for dscp, count in sorted(self.by_dscp.items())]


def _flows_to(plan: Plan, netns: str) -> list[FlowPlan]:
    return [f for f in plan.flows.values() if f.dst_netns == netns]


def commands(plan: Plan, netns: str) -> list[dict]:
    """The nftables commands (one transaction) that count the arrivals of the flows whose destination is
    host namespace ``netns``; [] if no flow ends there."""
    flows = _flows_to(plan, netns)
    if not flows:
        return []
    out: list[dict] = [
        {"add": {"table": {"family": "ip6", "name": TABLE}}},
        {"add": {"chain": {"family": "ip6", "table": TABLE, "name": CHAIN, "type": "filter", "hook": "input",
                           "prio": PRIORITY, "policy": "accept"}}},
    ]
    for flow in flows:
        out += [{"add": {"counter": {"family": "ip6", "table": TABLE, "name": _counter(flow, d)}}}
                for d in DSCP_VALUES]
        out.append({"add": {"rule": {"family": "ip6", "table": TABLE, "chain": CHAIN, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                       "right": flow.dst_addr}},
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
            {"counter": {"map": {
                "key": {"&": [{"payload": {"base": "nh", "offset": 0, "len": 16}}, DSCP_MASK]},
                "data": {"set": [[d << 6, _counter(flow, d)] for d in DSCP_VALUES]}}}},
        ]}}})
    return out


def read(plan: Plan) -> dict[str, Arrivals]:
    """Flow name -> :class:`Arrivals` for every flow of ``plan``, from its destination host's counters.

    Raises :class:`~srv6pm.nft.NftError` if a host's table cannot be listed (the lab is down).
    """
    counts: dict[str, int] = {}
    for netns in dict.fromkeys(f.dst_netns for f in plan.flows.values()):
        nft = Nft(netns)
        try:
            listed = nft.run([{"list": {"counters": {"family": "ip6", "table": TABLE}}}])
        finally:
            nft.close()
        counts.update((o["counter"]["name"], o["counter"].get("packets", 0)) for o in listed if "counter" in o)
    return {f.name: Arrivals(f.name, MappingProxyType({d: counts[_counter(f, d)] for d in DSCP_VALUES
                                                      if counts.get(_counter(f, d))}))
            for f in plan.flows.values()}
