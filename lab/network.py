"""Build and tear down a lab network (Linux network namespaces) from a :class:`~srv6pm.lab.topology.Plan`.

:func:`build` creates exactly what the plan describes, through netlink
(pyroute2), ``/proc/sys`` (from a thread inside each namespace, see
:mod:`srv6pm.netns`) and libnftables (:mod:`srv6pm.nft`):

1. every namespace of ``plan.namespaces`` (nodes, then hosts) -- refused with
   :class:`NetworkError`, before anything is created, if any of them exists;
2. sysctls: ``accept_dad=0`` everywhere; in nodes ``forwarding=1`` and
   ``seg6_enabled=1`` (all, default and on every interface);
3. veth pairs, created in the root namespace under temporary unique names,
   then moved into their namespaces and renamed (``lo`` and all links up);
4. addresses (``nodad``), the hosts' default routes and their extra flow
   destination addresses;
5. in each node (unless ``srv6=False``: the lab leaves this to the
   collector): seg6local ``End`` on the End SID (device: the first link
   interface, see :mod:`srv6pm.lab.topology` for why not ``lo``) and
   ``End.DX6`` (next hop the host, device ``host``) on the decap SID; one
   ``encap seg6`` route per flow at its ingress; one route per reachable
   locator. Note that pyroute2 writes ``segs`` verbatim into the SRH Segment
   List, which is in reverse path order, so the plan's segments are reversed
   here (iproute2's ``segs A,B,C`` does that itself);
6. in each host namespace, table ``ip6 srv6pm_host`` that silently drops UDP
   addressed to the host's flow destination addresses (input hook, counted),
   so the egress host never answers test traffic with ICMP errors; and, in
   the same transaction, the per-flow, per-DSCP arrival counters of
   :mod:`srv6pm.lab.arrivals` (table ``ip6 srv6pm_arrivals``);
7. on both ends of every link (and host link), a permanent neighbour entry
   for the far end's address, so that no packet ever waits for neighbour
   discovery across a delayed link (:meth:`_Builder.neighbours`).

If any step fails, everything created so far is removed before the
:class:`NetworkError` (naming the namespace and the object) propagates.

:func:`teardown` (alias :func:`clean`) deletes exactly the namespaces of the
plan that exist, which also deletes their veths (and the eBPF programs attached
to them), and the bpffs folders in which the exporters of the plan's nodes
pinned their maps (``/sys/fs/bpf/srv6pm-exporter/<node>`` and, for their eBPF
STAMP reflectors, ``/sys/fs/bpf/srv6pm-stamp/<node>``); it is idempotent.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable, Sequence
from typing import Iterator

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from srv6pm.errors import OperationError
from srv6pm import bpf
from srv6pm import netns as nsutil
from srv6pm import srv6
from srv6pm.exporter import ebpf
from srv6pm.stamp import ebpf as stamp_ebpf
from srv6pm.nft import Nft
from srv6pm.lab import arrivals
from srv6pm.lab.topology import HOST_IFNAME, HOST_PEER_IFNAME, HostPlan, NodePlan, Plan

__all__ = ["NetworkError", "build", "clean", "teardown", "teardown_names", "HOST_TABLE"]

HOST_TABLE = "srv6pm_host"
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80


class NetworkError(OperationError, RuntimeError):
    """Building or tearing down the lab network failed; ``str()`` names the namespace and object."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        return f"kernel refused: {os.strerror(exc.code) if exc.code > 0 else exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def _step(where: str, what: str) -> Iterator[None]:
    """Turn any failure inside into a NetworkError ``"<where>: <what>: <reason>"``."""
    try:
        yield
    except NetworkError:
        raise
    except Exception as exc:
        raise NetworkError(f"{where}: {what}: {_reason(exc)}") from exc


class _Builder:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.created: list[str] = []          # namespaces, in creation order
        self.root_veths: list[str] = []       # temporary names still in the root namespace
        self.threads: dict[str, nsutil.NetnsThread] = {}
        self.ipr: dict[str | None, IPRoute] = {}

    # -- resources -------------------------------------------------------
    def iproute(self, ns: str | None) -> IPRoute:
        if ns not in self.ipr:
            with _step(ns or "root namespace", "opening a netlink socket"):
                self.ipr[ns] = IPRoute(netns=ns, flags=0) if ns is not None else IPRoute()
        return self.ipr[ns]

    def thread(self, ns: str) -> nsutil.NetnsThread:
        if ns not in self.threads:
            self.threads[ns] = nsutil.NetnsThread(ns)
        return self.threads[ns]

    def close(self) -> None:
        for ipr in self.ipr.values():
            with contextlib.suppress(Exception):
                ipr.close()
        self.ipr.clear()
        for t in self.threads.values():
            t.close()
        self.threads.clear()

    def undo(self) -> None:
        """Remove what was created (best effort, never raises)."""
        if self.root_veths:
            with contextlib.suppress(Exception):
                ipr = self.iproute(None)
                for name in self.root_veths:
                    with contextlib.suppress(Exception):
                        idx = ipr.link_lookup(ifname=name)
                        if idx:
                            ipr.link("del", index=idx[0])
        self.close()
        for ns in reversed(self.created):
            with contextlib.suppress(Exception):
                _remove_netns(ns)

    # -- steps -----------------------------------------------------------
    def sysctl(self, ns: str, path: tuple[str, ...], value: str) -> None:
        full = os.path.join("/proc/sys", *path)

        def write() -> None:
            with open(full, "w", encoding="ascii") as f:
                f.write(value)

        with _step(ns, f"sysctl {'.'.join(path)}={value}"):
            self.thread(ns).call(write)

    def create_namespaces(self) -> None:
        for ns in self.plan.namespaces:
            with _step(ns, "creating the network namespace"):
                try:
                    pr_netns.create(ns)
                except FileExistsError:
                    raise  # created meanwhile by someone else: not ours to remove
                except BaseException:
                    self.created.append(ns)  # a half-made mount point is ours to remove
                    raise
            self.created.append(ns)

    def base_sysctls(self) -> None:
        nodes = {n.netns for n in self.plan.nodes.values()}
        for ns in self.plan.namespaces:
            for conf in ("all", "default"):
                self.sysctl(ns, ("net", "ipv6", "conf", conf, "accept_dad"), "0")
                if ns in nodes:
                    self.sysctl(ns, ("net", "ipv6", "conf", conf, "seg6_enabled"), "1")
            if ns in nodes:
                self.sysctl(ns, ("net", "ipv6", "conf", "all", "forwarding"), "1")

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        """A veth pair: ``name_a`` in ``ns_a`` and ``name_b`` in ``ns_b``, both up."""
        root = self.iproute(None)
        tmp_a, tmp_b = _temp_ifname(), _temp_ifname()
        with _step("root namespace", f"creating veth pair for {ns_a}:{name_a} <-> {ns_b}:{name_b}"):
            self.root_veths += [tmp_a, tmp_b]
            root.link("add", ifname=tmp_a, kind="veth", peer=tmp_b)
        for tmp, ns, name in ((tmp_a, ns_a, name_a), (tmp_b, ns_b, name_b)):
            with _step(ns, f"moving veth {tmp} into the namespace as {name}"):
                idx = root.link_lookup(ifname=tmp)
                if not idx:
                    raise NetworkError(f"{ns}: veth {tmp} vanished from the root namespace")
                root.link("set", index=idx[0], net_ns_fd=ns)
            self.root_veths.remove(tmp)
            ipr = self.iproute(ns)
            with _step(ns, f"renaming interface {tmp} to {name}"):
                idx = ipr.link_lookup(ifname=tmp)
                if not idx:
                    raise NetworkError(f"{ns}: interface {tmp} not found after moving it")
                ipr.link("set", index=idx[0], ifname=name)

    def links(self) -> None:
        for link in self.plan.links:
            self.veth(link.a, link.b, link.b, link.a)
        for host in self.plan.hosts:
            self.veth(host.node, HOST_IFNAME, host.netns, HOST_PEER_IFNAME)

    def ifindex(self, ns: str, name: str) -> int:
        idx = self.iproute(ns).link_lookup(ifname=name)
        if not idx:
            raise NetworkError(f"{ns}: interface {name} not found")
        return idx[0]

    def addr(self, ns: str, ifname: str, address: str) -> None:
        addr, _, plen = address.partition("/")
        with _step(ns, f"adding address {address} to {ifname}"):
            self.iproute(ns).addr("add", index=self.ifindex(ns, ifname), address=addr,
                                  prefixlen=int(plen or 128), flags=IFA_F_NODAD)

    def up(self, ns: str, ifname: str) -> None:
        with _step(ns, f"setting {ifname} up"):
            self.iproute(ns).link("set", index=self.ifindex(ns, ifname), state="up")

    def route(self, ns: str, what: str, **spec) -> None:
        with _step(ns, f"adding route {what}"):
            try:
                self.iproute(ns).route("add", **spec)
            except NetlinkError as exc:  # an SRv6 route on a kernel without them: the reason is that
                reason = srv6.explain(exc.code) if "encap" in spec else None
                if reason is None:
                    raise
                raise srv6.Srv6Unavailable(reason) from exc

    def configure_node(self, node: NodePlan, srv6: bool) -> None:
        ns = node.netns
        self.up(ns, "lo")
        if node.pm_addr:
            self.addr(ns, "lo", f"{node.pm_addr}/128")
        for itf in node.interfaces:
            self.sysctl(ns, ("net", "ipv6", "conf", itf.name, "seg6_enabled"), "1")
            self.sysctl(ns, ("net", "ipv6", "conf", itf.name, "accept_dad"), "0")
            self.addr(ns, itf.name, itf.address)
            self.up(ns, itf.name)
        for r in node.routes:
            self.route(ns, f"{r.dst} via {r.gateway} dev {r.dev}",
                       dst=r.dst, gateway=r.gateway, oif=self.ifindex(ns, r.dev))
        if srv6:
            self.srv6(node)

    def srv6(self, node: NodePlan) -> None:
        ns = node.netns
        # Not "dev lo": see srv6pm.lab.topology (End on lo drops on kernel 6.18).
        self.route(ns, f"{node.end_sid}/128 encap seg6local action End dev {node.sid_dev}",
                   dst=f"{node.end_sid}/128", oif=self.ifindex(ns, node.sid_dev),
                   encap={"type": "seg6local", "action": "End"})
        if node.host is not None:
            self.route(ns, f"{node.decap_sid}/128 encap seg6local action End.DX6 nh6 {node.host.address} "
                           f"dev {HOST_IFNAME}",
                       dst=f"{node.decap_sid}/128", oif=self.ifindex(ns, HOST_IFNAME),
                       encap={"type": "seg6local", "action": "End.DX6", "nh6": node.host.address})
        for e in node.encap_routes:
            segs = ",".join(e.segments)
            # pyroute2 copies "segs" verbatim into the SRH's Segment List, which
            # holds the path in reverse (Segment List[0] is the last segment);
            # iproute2's "segs A,B,C" reverses for you, pyroute2 does not.
            self.route(ns, f"{e.dst} encap seg6 mode encap segs {segs} dev {e.dev} (flow {e.flow})",
                       dst=e.dst, oif=self.ifindex(ns, e.dev),
                       encap={"type": "seg6", "mode": "encap", "segs": list(reversed(e.segments))})

    def configure_host(self, host: HostPlan) -> None:
        ns = host.netns
        self.up(ns, "lo")
        itf = host.interface
        self.sysctl(ns, ("net", "ipv6", "conf", itf.name, "accept_dad"), "0")
        self.addr(ns, itf.name, itf.address)
        for a in host.flow_addresses:
            self.addr(ns, itf.name, f"{a}/128")
        self.up(ns, itf.name)
        self.route(ns, f"default via {host.router_address} dev {itf.name}",
                   dst="::/0", gateway=host.router_address, oif=self.ifindex(ns, itf.name))
        self.host_table(host)

    def host_table(self, host: HostPlan) -> None:
        table = {"family": "ip6", "name": HOST_TABLE}
        commands: list[dict] = [
            {"add": {"table": table}},
            {"add": {"chain": {"family": "ip6", "table": HOST_TABLE, "name": "input", "type": "filter",
                               "hook": "input", "prio": 0, "policy": "accept"}}},
        ]
        if host.flow_addresses:
            commands.append({"add": {"rule": {"family": "ip6", "table": HOST_TABLE, "chain": "input", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                           "right": {"set": list(host.flow_addresses)}}},
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
                {"counter": None},
                {"drop": None},
            ]}}})
        commands += arrivals.commands(self.plan, host.netns)
        with _step(host.netns, f"installing nftables tables ip6 {HOST_TABLE} and {arrivals.TABLE}"):
            nft = Nft(host.netns)
            try:
                nft.run(commands)
            finally:
                nft.close()

    def build(self, srv6: bool) -> None:
        self.create_namespaces()
        self.base_sysctls()
        self.links()
        for node in self.plan.nodes.values():
            self.configure_node(node, srv6)
        for host in self.plan.hosts:
            self.configure_host(host)
        self.neighbours()

    def mac(self, ns: str, ifname: str) -> str:
        (link,) = self.iproute(ns).link("get", index=self.ifindex(ns, ifname))
        return link.get_attr("IFLA_ADDRESS")

    def neighbours(self) -> None:
        """A permanent neighbour entry for the far end of every link, on both sides.

        Without them the first packet towards a neighbour waits for neighbour
        discovery, whose solicitation and advertisement cross the link's delay
        element too: on a 20 ms link the first STAMP packets took 60 ms. Real
        routers have their neighbours resolved long before a measurement
        starts; so does the lab, from the first packet on.
        """
        ends = []  # (namespace, interface, the far end's namespace, interface and address)
        for node in self.plan.nodes.values():
            for itf in node.interfaces:
                if itf.name == HOST_IFNAME:
                    assert node.host is not None  # the host interface exists only with a host
                    ends.append((node.netns, itf.name, node.host.netns, HOST_PEER_IFNAME, itf.peer_address))
                else:
                    ends.append((node.netns, itf.name, self.plan.nodes[itf.peer].netns, node.name, itf.peer_address))
        for host in self.plan.hosts:
            itf = host.interface
            ends.append((host.netns, itf.name, self.plan.nodes[host.node].netns, HOST_IFNAME, itf.peer_address))
        for ns, ifname, far_ns, far_ifname, address in ends:
            with _step(ns, f"adding the permanent neighbour {address} on {ifname}"):
                self.iproute(ns).neigh("add", dst=address, lladdr=self.mac(far_ns, far_ifname),
                                       ifindex=self.ifindex(ns, ifname), state=NUD_PERMANENT)


def _temp_ifname() -> str:
    return "s6pm" + secrets.token_hex(5)  # 14 characters, under IFNAMSIZ


def _remove_netns(name: str) -> None:
    path = nsutil.netns_path(name)
    try:
        pr_netns.remove(name)  # lazy unmount, then unlink
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT or os.path.lexists(path):
            raise


def check_free(plan: Plan) -> None:
    """Raise :class:`NetworkError` if any namespace of ``plan`` already exists."""
    clashes = [ns for ns in plan.namespaces if nsutil.exists(ns)]
    if clashes:
        raise NetworkError(
            f"network namespace(s) already exist: {', '.join(clashes)}; remove them first "
            f"(srv6pm lab clean SCENARIO, or ip netns del NAME) or rename the scenario's nodes")


def build(plan: Plan, srv6: bool = True) -> None:
    """Create the network of ``plan``; all or nothing.

    With ``srv6=False`` only the underlay is built (namespaces, links,
    addresses, locator routes, hosts): the SIDs and policies of step 5 are
    left to the collector, which applies them through the node exporters.

    Raises :class:`NetworkError` if a namespace of the plan already exists
    (nothing is created then) or if any step fails (everything created so far
    is removed first).
    """
    check_free(plan)
    builder = _Builder(plan)
    try:
        builder.build(srv6)
    except BaseException:
        builder.undo()
        raise
    builder.close()


def teardown(plan: Plan) -> list[str]:
    """Delete the namespaces of ``plan`` that exist (and with them their veths); idempotent.

    Returns the names removed. Raises :class:`NetworkError` naming the
    namespaces that could not be removed (after trying all of them).
    """
    return teardown_names(plan.namespaces, plan.scenario.nodes)


def teardown_names(namespaces: Sequence[str], nodes: Iterable[str]) -> list[str]:
    """:func:`teardown` by name: the ``namespaces`` that exist (in reverse order), the pins of ``nodes``."""
    removed, failed = [], []
    for ns in reversed(namespaces):
        if not nsutil.exists(ns):
            continue
        try:
            _remove_netns(ns)
            removed.append(ns)
        except OSError as exc:
            failed.append(f"{ns} ({_reason(exc)})")
    for node in nodes:  # pinned maps outlive the namespaces (and a killed exporter)
        bpf.unpin(ebpf.pin_dir(node))
        bpf.unpin(stamp_ebpf.PIN_ROOT / node)  # the exporter's eBPF STAMP reflector, named after the node
    if failed:
        raise NetworkError(f"cannot remove network namespace(s): {', '.join(failed)}")
    return removed


clean = teardown
