"""The addressing plan of a lab scenario: pure data, no side effects.

:func:`plan` turns a validated :class:`~srv6pm.lab.scenario.Scenario` into a
:class:`Plan` that says exactly what :mod:`srv6pm.lab.network` will create.
The rules (``i`` = 1-based position of a node in ``scenario.nodes``, ``j`` =
1-based position of a link in ``scenario.links``, ``n`` = 1-based position of a
flow in ``scenario.flows``; every number is written in hexadecimal in addresses):

* Node ``i`` is a namespace named after the node. Its SRv6 locator is
  ``fcff:i::/32``, its End SID ``fcff:i::1`` (seg6local ``End``) and its
  decapsulation SID ``fcff:i::100`` (seg6local ``End.DX6`` towards its host).
* Link ``j`` between ``a`` and ``b`` is a veth pair on ``fd00:0:j::/64``:
  ``fd00:0:j::1`` on ``a``'s end, ``fd00:0:j::2`` on ``b``'s end. The interface in
  node ``A`` towards node ``B`` is named ``B``.
* A node that is the ingress or the egress of some flow gets a host namespace
  ``<node>-host`` joined by a veth (``host`` in the node, ``eth0`` in the host)
  on ``fd01:i::/64``: router ``fd01:i::1``, host ``fd01:i::2``, whose default
  route is via ``fd01:i::1``.
* Flow ``n`` from ingress ``s`` to egress ``e`` has its own destination address
  ``fd01:e::(0x100+n)`` on ``e``'s host, so it has its own route at the ingress:
  ``dst/128 encap seg6 mode encap segs [End SIDs of via..., decap SID of e]``.
  It is identified by source ``fd01:s::2/128`` and destination ``dst/128``
  (:meth:`Plan.flow_match`).
* The seg6local ``End`` route of a node uses the node's first link interface
  as its device, not ``lo``: on the kernel of these machines (6.18) an ``End``
  route on ``dev lo`` drops every packet after processing the SRH
  (``IP_INNOROUTES`` from ``ip6_pkt_discard``), although the next segment has a
  route. ``End.DX6`` uses ``dev host``.
* Every node routes the locator of every other node it can reach via a
  shortest path (hop count). Ties are broken deterministically: among the
  neighbours that are one hop closer to the destination, the one that comes
  first in ``scenario.nodes`` wins.

Addresses are strings in compressed form (``str(ipaddress.IPv6Address)``);
prefixes are strings ``"addr/len"``.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from types import MappingProxyType
from dataclasses import asdict, dataclass, field
from typing import Mapping

from srv6pm import netspec
from srv6pm.lab.scenario import Scenario

__all__ = [
    "EncapRoute",
    "FlowPlan",
    "HostPlan",
    "Interface",
    "LinkPlan",
    "NodePlan",
    "Plan",
    "Route",
    "StampPlan",
    "plan",
    "HOST_IFNAME",
    "HOST_NS_SUFFIX",
    "HOST_PEER_IFNAME",
]

HOST_NS_SUFFIX = "-host"
HOST_IFNAME = "host"      # in the node, towards its host namespace
HOST_PEER_IFNAME = "eth0"  # in the host namespace, towards the node
LOCATOR_LEN = 32
LINK_PREFIX_LEN = 64
HOST_PREFIX_LEN = 64
FLOW_ADDRESS_BASE = 0x100


def _addr(text: str) -> str:
    return str(ipaddress.IPv6Address(text))


def _net(text: str) -> str:
    return str(ipaddress.IPv6Network(text))


@dataclass(frozen=True)
class Interface:
    """One end of a veth pair inside a namespace: ``address`` is ``addr/len``."""

    name: str
    address: str
    peer: str          # the node (or host namespace) at the other end
    peer_address: str  # the other end's address, without length


@dataclass(frozen=True)
class Route:
    """A static route ``dst via gateway dev dev`` in a node."""

    dst: str
    gateway: str
    dev: str


@dataclass(frozen=True)
class EncapRoute:
    """``dst encap seg6 mode encap segs <segments> dev <dev>`` at a flow's ingress."""

    flow: str
    dst: str
    segments: tuple[str, ...]
    dev: str


@dataclass(frozen=True)
class HostPlan:
    """The host namespace attached to a node.

    ``flow_addresses`` are the extra /128 destination addresses of the flows
    that leave the network at this node (empty for an ingress-only host).
    """

    netns: str
    node: str
    subnet: str
    router_address: str
    address: str
    flow_addresses: tuple[str, ...]

    @property
    def interface(self) -> Interface:
        """The host's end of the veth (``eth0``)."""
        return Interface(HOST_PEER_IFNAME, f"{self.address}/{HOST_PREFIX_LEN}", self.node, self.router_address)


@dataclass(frozen=True)
class NodePlan:
    """Everything configured in one router namespace."""

    name: str
    index: int
    locator: str
    end_sid: str
    decap_sid: str
    interfaces: tuple[Interface, ...]   # link interfaces, in link order, then ``host`` if any
    routes: tuple[Route, ...]           # locator routes, in scenario node order
    encap_routes: tuple[EncapRoute, ...]
    host: HostPlan | None
    sid_dev: str  # device of the End SID route: the first link interface ("lo" if none)
    pm_addr: str = ""  # fcff:i::2 on lo: the node's own address for active measurement (STAMP)

    @property
    def netns(self) -> str:
        """The namespace name (the node name)."""
        return self.name

    def interface(self, name: str) -> Interface:
        """The interface called ``name``; ``KeyError`` if there is none."""
        for itf in self.interfaces:
            if itf.name == name:
                return itf
        raise KeyError(f"node {self.name!r} has no interface {name!r}")


@dataclass(frozen=True)
class LinkPlan:
    """Link ``index`` (1-based) between ``a`` and ``b``."""

    index: int
    a: str
    b: str
    prefix: str
    a_address: str
    b_address: str
    delay_ms: float = 0.0  # added in each direction


@dataclass(frozen=True)
class StampPlan:
    """A STAMP session: ``sender_addr`` on ``sender`` to ``reflector_addr`` on ``reflector``.

    ``segments`` are the End SIDs of the forward ``via`` nodes and
    ``return_segments`` those of the ``return_via`` nodes; the test packet's
    final destination is the reflector's (and the reply's the sender's)
    measurement address, which follows the SIDs in the SRH.
    """

    name: str
    sender: str
    reflector: str
    sender_addr: str
    reflector_addr: str
    segments: tuple[str, ...]
    return_segments: tuple[str, ...]
    rate: float


@dataclass(frozen=True)
class FlowPlan:
    """A flow's addressing: test traffic goes from ``src_addr`` in ``src_netns`` to ``dst_addr``.

    ``segments`` is the SRv6 segment list the ingress pushes (End SIDs of the
    ``via`` nodes, then the egress' decap SID); ``encap_dev`` the interface of
    the ingress's encap route (towards the first segment).
    """

    name: str
    index: int
    ingress: str
    egress: str
    via: tuple[str, ...]
    src_netns: str
    dst_netns: str
    src_addr: str
    dst_addr: str
    segments: tuple[str, ...]
    encap_dev: str
    rate: float
    dscp: int = 0  # the test traffic's DSCP

    @property
    def src_prefix(self) -> str:
        """The flow's source as a /128 prefix (as matched by the counters)."""
        return f"{self.src_addr}/128"

    @property
    def dst_prefix(self) -> str:
        """The flow's destination as a /128 prefix (as matched by the counters)."""
        return f"{self.dst_addr}/128"


@dataclass(frozen=True)
class Plan:
    """The complete plan of a scenario's network.

    ``namespaces`` lists every namespace the network creates, in creation
    order: the nodes in scenario order, then the host namespaces in node order.
    """

    scenario: Scenario
    nodes: Mapping[str, NodePlan]
    links: tuple[LinkPlan, ...]
    flows: Mapping[str, FlowPlan]
    namespaces: tuple[str, ...]
    stamp: Mapping[str, StampPlan] = field(default_factory=lambda: MappingProxyType({}))
    _next_hops: Mapping[tuple[str, str], str] = field(repr=False, compare=False, default_factory=lambda: MappingProxyType({}))

    @property
    def hosts(self) -> tuple[HostPlan, ...]:
        """The host namespaces, in node order."""
        return tuple(n.host for n in self.nodes.values() if n.host is not None)

    def to_dict(self) -> dict:
        """The plan as plain JSON-able data (``srv6pm lab check``)."""
        return {
            "period": self.scenario.period,
            "dataplane": self.scenario.dataplane,
            "namespaces": list(self.namespaces),
            "nodes": {name: asdict(node) for name, node in self.nodes.items()},
            "links": [asdict(link) for link in self.links],
            "flows": {name: asdict(flow) for name, flow in self.flows.items()},
            "stamp": {name: {**asdict(session), **self._stamp_settings(name)} for name, session in self.stamp.items()},
        }

    def _stamp_settings(self, name: str) -> dict:
        """Session ``name``'s settings as the scenario gives them: ``liveness`` (``down_after``, ``up_after``;
        None when not watched) and the RFC 8972 ones (``dscp`` None when not asked for, ``ssid`` 0: none)."""
        session = next(s for s in self.scenario.stamp if s.name == name)
        liveness = None if session.liveness is None else dict(zip(("down_after", "up_after"), session.liveness, strict=True))
        return {"liveness": liveness, **{name: getattr(session, name) for name in sorted(netspec.RFC8972_SETTINGS)}}

    def flow(self, name: str) -> FlowPlan:
        """The plan of flow ``name``; ``KeyError`` naming the known flows otherwise."""
        try:
            return self.flows[name]
        except KeyError:
            raise KeyError(f"unknown flow {name!r} (flows: {', '.join(self.flows) or 'none'})") from None

    def flow_match(self, flow_name: str) -> tuple[str, str]:
        """``(src_prefix, dst_prefix)`` identifying the flow's inner packets (as ``FlowMatch``)."""
        f = self.flow(flow_name)
        return f.src_prefix, f.dst_prefix

    def next_hop(self, node: str, dst: str) -> str | None:
        """The neighbour of ``node`` on the chosen shortest path to ``dst`` (None if unreachable or same)."""
        return self._next_hops.get((node, dst))

    def flows_at(self, node: str, role: str) -> tuple[FlowPlan, ...]:
        """The flows whose ``role`` (``"ingress"`` or ``"egress"``) is ``node``, in scenario order."""
        if role not in ("ingress", "egress"):
            raise ValueError(f"role must be 'ingress' or 'egress', got {role!r}")
        return tuple(f for f in self.flows.values() if getattr(f, role) == node)


def _next_hops(scenario: Scenario) -> dict[tuple[str, str], str]:
    order = {n: i for i, n in enumerate(scenario.nodes)}
    adjacency = {n: sorted(scenario.neighbours(n), key=order.__getitem__) for n in scenario.nodes}
    hops: dict[tuple[str, str], str] = {}
    for dst in scenario.nodes:
        dist = {dst: 0}
        todo = deque([dst])
        while todo:
            n = todo.popleft()
            for m in adjacency[n]:
                if m not in dist:
                    dist[m] = dist[n] + 1
                    todo.append(m)
        for node in scenario.nodes:
            if node == dst or node not in dist:
                continue
            hops[(node, dst)] = next(m for m in adjacency[node] if dist.get(m) == dist[node] - 1)
    return hops


def plan(scenario: Scenario) -> Plan:
    """The addressing plan of ``scenario`` (see the module documentation for the rules)."""
    index = {name: i for i, name in enumerate(scenario.nodes, start=1)}
    hops = _next_hops(scenario)

    links: list[LinkPlan] = []
    itfs: dict[str, list[Interface]] = {n: [] for n in scenario.nodes}
    link_addr: dict[tuple[str, str], str] = {}  # (node, neighbour) -> neighbour's address on their link
    for j, link in enumerate(scenario.links, start=1):
        prefix = _net(f"fd00:0:{j:x}::/{LINK_PREFIX_LEN}")
        a_addr, b_addr = _addr(f"fd00:0:{j:x}::1"), _addr(f"fd00:0:{j:x}::2")
        links.append(LinkPlan(j, link.a, link.b, prefix, a_addr, b_addr, link.delay_ms))
        itfs[link.a].append(Interface(link.b, f"{a_addr}/{LINK_PREFIX_LEN}", link.b, b_addr))
        itfs[link.b].append(Interface(link.a, f"{b_addr}/{LINK_PREFIX_LEN}", link.a, a_addr))
        link_addr[(link.a, link.b)] = b_addr
        link_addr[(link.b, link.a)] = a_addr

    def end_sid(node: str) -> str:
        return _addr(f"fcff:{index[node]:x}::1")

    def decap_sid(node: str) -> str:
        return _addr(f"fcff:{index[node]:x}::100")

    def pm_addr(node: str) -> str:
        return _addr(f"fcff:{index[node]:x}::2")

    def host_addr(node: str, suffix: int) -> str:
        return _addr(f"fd01:{index[node]:x}::{suffix:x}")

    flows: dict[str, FlowPlan] = {}
    for n, flow in enumerate(scenario.flows, start=1):
        segments = (*(end_sid(v) for v in flow.via), decap_sid(flow.dst))
        first = flow.via[0] if flow.via else flow.dst
        flows[flow.name] = FlowPlan(
            name=flow.name,
            index=n,
            ingress=flow.src,
            egress=flow.dst,
            via=flow.via,
            src_netns=flow.src + HOST_NS_SUFFIX,
            dst_netns=flow.dst + HOST_NS_SUFFIX,
            src_addr=host_addr(flow.src, 2),
            dst_addr=host_addr(flow.dst, FLOW_ADDRESS_BASE + n),
            segments=segments,
            encap_dev=hops[(flow.src, first)],
            rate=flow.rate,
            dscp=flow.dscp,
        )

    nodes: dict[str, NodePlan] = {}
    for name in scenario.nodes:
        i = index[name]
        host = None
        if any(f.ingress == name or f.egress == name for f in flows.values()):
            host = HostPlan(
                netns=name + HOST_NS_SUFFIX,
                node=name,
                subnet=_net(f"fd01:{i:x}::/{HOST_PREFIX_LEN}"),
                router_address=host_addr(name, 1),
                address=host_addr(name, 2),
                flow_addresses=tuple(f.dst_addr for f in flows.values() if f.egress == name),
            )
            itfs[name].append(Interface(HOST_IFNAME, f"{host.router_address}/{HOST_PREFIX_LEN}",
                                        host.netns, host.address))
        routes = tuple(
            Route(_net(f"fcff:{index[dst]:x}::/{LOCATOR_LEN}"), link_addr[(name, hops[(name, dst)])], hops[(name, dst)])
            for dst in scenario.nodes
            if (name, dst) in hops
        )
        encap = tuple(
            EncapRoute(f.name, f.dst_prefix, f.segments, f.encap_dev) for f in flows.values() if f.ingress == name
        )
        nodes[name] = NodePlan(
            name=name,
            index=i,
            locator=_net(f"fcff:{i:x}::/{LOCATOR_LEN}"),
            end_sid=end_sid(name),
            decap_sid=decap_sid(name),
            interfaces=tuple(itfs[name]),
            routes=routes,
            encap_routes=encap,
            host=host,
            sid_dev=itfs[name][0].name if itfs[name] else "lo",
            pm_addr=pm_addr(name),
        )

    stamp = {
        s.name: StampPlan(s.name, s.src, s.dst, pm_addr(s.src), pm_addr(s.dst),
                          tuple(end_sid(v) for v in s.via), tuple(end_sid(v) for v in s.return_via), s.rate)
        for s in scenario.stamp
    }

    namespaces = (*scenario.nodes, *(n.host.netns for n in nodes.values() if n.host is not None))
    return Plan(scenario, MappingProxyType(nodes), tuple(links), MappingProxyType(flows), namespaces,
                MappingProxyType(stamp), MappingProxyType(hops))
