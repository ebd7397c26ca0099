"""The collector's configuration file (YAML): the network as it should be.

::

    dataplane: ebpf                    # optional: ebpf (default) or nftables, the exporters' counting back-end
    nodes:
      - name: r1
        grpc: "127.0.0.1:50051"        # the exporter's southbound address: host:port or [v6]:port
        pm_address: "fcff:1::2"        # optional: measurement address (STAMP source / reflector bind)
        sids:                          # the node's own SIDs (seg6local)
          - {sid: "fcff:1::1", behavior: End, device: r2}
          - {sid: "fcff:1::100", behavior: End.DX6, nexthop: "fd01:1::2", device: host}
    links:                             # [a, b] or {ends: [a, b], delay_ms: 20}  (topology graph only)
      - [r1, r2]
    flows:
      - name: f1
        from: r1                       # ingress: SRv6 policy + ingress monitoring
        to: r4                         # egress: egress monitoring
        via: [r2, r3]                  # segments: End SID of each via node, then the egress' decap SID
        # segments: ["fcff:2::1", ...] # or an explicit SID list (not together with via)
        source: "fd01:1::2/128"        # inner source prefix (counter match)
        destination: "fd01:4::101/128" # inner destination prefix (policy + counter match)
        device: ""                     # optional encap device
    stamp:
      - name: s1
        from: r1                       # Session-Sender (source = from's pm_address)
        to: r4                         # Session-Reflector (destination = to's pm_address)
        via: [r2, r3]                  # forward segments: End SIDs
        return_via: [r3, r2]           # Return Path TLV segments: End SIDs
        rate: 10                       # test packets per second
        timeout: 2                     # optional, seconds
        auth_key_file: /etc/srv6pm/stamp.key   # optional: a path on both nodes
        liveness: {down_after: 3, up_after: 3}  # optional: watch the path (true: these defaults)
        direct_measurement: true       # optional: RFC 8972 counters, loss per direction
        dscp: 46                       # optional: send with this DSCP, report re-marking
        ssid: 7                        # optional: the session's SSID (1..65535)
        stop_if_ssid_ignored: false    # optional: stop when the reflector returns SSID 0
    tls:                               # client TLS for the southbound API
      ca: /etc/srv6pm/ca.pem
      cert: /etc/srv6pm/collector.pem  # optional: mutual TLS (with key)
      key: /etc/srv6pm/collector.key
      plaintext: false                 # true: talk to the exporters without TLS

``dataplane`` says how the exporters count, and so what the collector sends
them (:mod:`srv6pm.collector.desired`): with ``ebpf`` (the default) every
flow has a FlowMonID (RFC 9343; allocated by the collector,
:mod:`srv6pm.collector.flowmon`) and is counted at its ingress, at every
``via`` node and at its egress; with ``nftables`` only at the ingress and
the egress, by DSCP colour (the FlowMonID then only names the flow's counters
and loss results). With ``ebpf`` a node may be
on a flow's path (``from``, ``via``, ``to``) only once, since it counts the
flow at one position.

Behaviour names are End, End.X, End.DT6 and End.DX6 (End.DT6 also takes
``table``). A node's *End SID* is its first SID with behaviour End, its *decap
SID* its first End.DX6 or End.DT6 SID.

:func:`load` validates the whole file before anything is done with it and
raises :class:`ConfigError` with one line ``<file>: <field>: <what is wrong>``,
for example ``c.yaml: flows[0].via[1]: node 'r3' has no End SID``. Unknown
fields, unknown or duplicate nodes, duplicate names, SIDs or addresses, and a
flow or session from a node to itself are errors. Every object the collector
will send is checked with :mod:`srv6pm.southbound.validate` here, so a bad
address in the file is a configuration error, not a failed RPC later; the
:class:`Config` holds the validated messages themselves (compressed addresses,
strict prefixes, the API's defaults: :data:`srv6pm.southbound.validate.DEFAULTS`),
which :mod:`srv6pm.collector.desired` only places on the nodes. A value YAML
gives of the wrong type is this module's error; a value of the right type
that breaks a rule is the rule's error, on the file's field. The rules the lab's scenarios share (names, node references, links,
paths, STAMP session basics) are those of :mod:`srv6pm.netspec`; here paths are
not checked against ``links``, which only feed the topology graph.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from srv6pm import netspec, yamlfile
from srv6pm.errors import InputError
from srv6pm.netspec import MAX_SEGMENTS, RFC8972_SETTINGS, Link, kind  # noqa: F401 -- MAX_SEGMENTS re-exported
from srv6pm.quote import quote
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb

__all__ = ["BEHAVIORS", "Config", "ConfigError", "Flow", "Link", "Node", "StampSession", "TlsConfig",
           "load", "parse"]

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")

BEHAVIORS = {
    "End": pb.SID_BEHAVIOR_END,
    "End.X": pb.SID_BEHAVIOR_END_X,
    "End.DT6": pb.SID_BEHAVIOR_END_DT6,
    "End.DX6": pb.SID_BEHAVIOR_END_DX6,
}
MAX_NODES = 1024


class ConfigError(InputError, ValueError):
    """The collector configuration is unreadable or invalid; ``str()`` is one line."""


_DECAP = (pb.SID_BEHAVIOR_END_DX6, pb.SID_BEHAVIOR_END_DT6)


@dataclass(frozen=True)
class Node:
    """A node: its southbound address, its measurement address and its own SIDs.

    ``sids`` are validated ``LocalSid`` messages (:func:`srv6pm.southbound.validate.local_sid`), as the
    exporter holds them; like every message of a :class:`Config` they are not to be modified.
    """

    name: str
    grpc: str  # host:port or [v6]:port
    pm_address: str | None = None
    sids: tuple[pb.LocalSid, ...] = field(default=(), hash=False)

    @property
    def end_sid(self) -> str | None:
        """The first SID with behaviour End, or None."""
        return next((s.sid for s in self.sids if s.behavior == pb.SID_BEHAVIOR_END), None)

    @property
    def decap_sid(self) -> str | None:
        """The first End.DX6 or End.DT6 SID, or None."""
        return next((s.sid for s in self.sids if s.behavior in _DECAP), None)


@dataclass(frozen=True)
class Flow:
    """A monitored flow: ``src`` steers ``destination`` into ``segments``; ``dst`` decapsulates.

    ``via`` are the transit nodes by name: as written, or, for an explicit
    ``segments`` list, the nodes owning those SIDs (other than ``dst``), in order.
    ``policy`` (placed at ``src``) and ``monitor`` (the ingress ``FlowMonitor``,
    without FlowMonID) are validated southbound messages; the flow's other
    counting points are ``monitor`` at another role and position
    (:func:`srv6pm.collector.desired.flow_monitors`).
    """

    name: str
    src: str
    dst: str
    via: tuple[str, ...]
    policy: pb.Policy = field(hash=False)
    monitor: pb.FlowMonitor = field(hash=False)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.policy.segments)

    @property
    def source(self) -> str:
        """The inner source prefix (counter match)."""
        return self.monitor.source_prefix

    @property
    def destination(self) -> str:
        """The inner destination prefix (policy and counter match)."""
        return self.policy.destination

    @property
    def device(self) -> str:
        return self.policy.device


@dataclass(frozen=True)
class StampSession(netspec.StampSession):
    """A STAMP session from ``src``'s to ``dst``'s measurement address, along the End SIDs of ``via``
    and back along those of ``return_via``.

    ``message`` is the validated ``StampSession`` placed at ``src``; ``reflector`` the validated
    ``StampReflector`` the session needs at ``dst``. The other attributes read them.
    """

    message: pb.StampSession = field(hash=False)
    reflector: pb.StampReflector = field(hash=False)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.message.segments)

    @property
    def return_segments(self) -> tuple[str, ...]:
        return tuple(self.message.return_segments)

    @property
    def timeout(self) -> float:
        return self.message.timeout_s

    @property
    def auth_key_file(self) -> str:
        return self.message.auth_key_file

    @property
    def direct_measurement(self) -> bool:
        return self.message.direct_measurement

    @property
    def dscp(self) -> int | None:
        return self.message.dscp if self.message.HasField("dscp") else None

    @property
    def ssid(self) -> int:
        return self.message.ssid

    @property
    def stop_if_ssid_ignored(self) -> bool:
        return self.message.stop_if_ssid_ignored


@dataclass(frozen=True)
class TlsConfig:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    plaintext: bool = False


@dataclass(frozen=True)
class Config:
    """A validated configuration; ``source`` names the file in messages.

    ``flowmon_ids`` (flow name -> FlowMonID) is not read from the file: the
    collector's allocator fills it in (:func:`srv6pm.collector.flowmon.assign`,
    through :meth:`with_flowmon_ids`), whatever the data plane; empty until then.
    """

    source: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...] = ()
    flows: tuple[Flow, ...] = ()
    stamp: tuple[StampSession, ...] = ()
    tls: TlsConfig | None = None
    dataplane: str = netspec.DEFAULT_DATAPLANE  # one of netspec.DATAPLANES
    flowmon_ids: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    _by_name: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _flows: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _sessions: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update((n.name, n) for n in self.nodes)
        self._flows.update((f.name, f) for f in self.flows)
        self._sessions.update((s.name, s) for s in self.stamp)

    def node(self, name: str) -> Node:
        """The node called ``name`` (KeyError if there is none)."""
        return self._by_name[name]

    def flow(self, name: str) -> Flow | None:
        """The flow called ``name``, or None (a lookup: the collector asks it for every ingress monitor)."""
        return self._flows.get(name)

    def session(self, name: str) -> StampSession | None:
        """The STAMP session called ``name``, or None."""
        return self._sessions.get(name)

    def with_flowmon_ids(self, ids: Mapping[str, int]) -> "Config":
        """A copy of this configuration with ``ids`` as its :attr:`flowmon_ids`."""
        return replace(self, flowmon_ids=MappingProxyType(dict(ids)))


def load(path: str | Path) -> Config:
    """Read and validate the configuration file at ``path``."""
    return parse(yamlfile.read(path, ConfigError), source=str(path))


def parse(text: str, source: str = "<config>") -> Config:
    """Parse and validate configuration YAML ``text``; ``source`` names it in errors."""
    return _Validator(source).config(yamlfile.parse(text, source, ConfigError))


def _is_host(text: str) -> bool:
    """Whether ``text`` is a host name or address by srv6pm.inputs.host (``999.1.1.1`` is neither)."""
    from srv6pm.config import ConfigError as SettingsError
    from srv6pm.inputs import host
    try:
        host(text, "host")
    except SettingsError:
        return False
    return True


class _Validator(netspec.Validator):
    """The shared network rules (:mod:`srv6pm.netspec`), raising ConfigError, and the collector's own.

    The links are the topology graph only: paths are not checked against them.
    """

    def __init__(self, source: str):
        super().__init__(source, ConfigError)

    def config(self, doc: Any) -> Config:
        if doc is None:
            raise self.fail("", "empty file")
        doc = self.mapping(doc, "", {"dataplane", "nodes", "links", "flows", "stamp", "tls"}, {"nodes"})
        dataplane = self.dataplane(doc)
        nodes = self.nodes(doc["nodes"])
        names = tuple(n.name for n in nodes)
        by_name = {n.name: n for n in nodes}
        links = self.links(doc.get("links") or [], names)
        flows = self.flows(doc.get("flows") or [], by_name, dataplane)
        stamp = self.sessions(doc.get("stamp") or [], by_name)
        tls = self.tls(doc["tls"]) if "tls" in doc else None
        return Config(self.source, nodes, links, flows, stamp, tls, dataplane)

    # ------------------------------------------------------------ nodes

    def nodes(self, value: Any) -> tuple[Node, ...]:
        nodes: list[Node] = []
        seen_names: set[str] = set()
        seen_grpc: dict[str, str] = {}
        seen_pm: dict[str, str] = {}
        seen_sids: dict[str, str] = {}
        for i, item in enumerate(self.node_list(value, MAX_NODES, "nodes")):
            f = f"nodes[{i}]"
            item = self.mapping(item, f, {"name", "grpc", "pm_address", "sids"}, {"name", "grpc"})
            name = self.unique(self.name(item["name"], f"{f}.name", "node"), f"{f}.name", seen_names, "node")
            grpc = self.grpc_address(item["grpc"], f"{f}.grpc")
            if grpc in seen_grpc:
                raise self.fail(f"{f}.grpc", f"{grpc} is already node {quote(seen_grpc[grpc])}'s address")
            seen_grpc[grpc] = name
            pm = None
            if item.get("pm_address") is not None:
                pm = self.checked(validate.stamp_reflector,
                                  pb.StampReflector(bind=self.text(item["pm_address"], f"{f}.pm_address",
                                                                   "an IPv6 address")),
                                  f"{f}.pm_address", {"bind": f"{f}.pm_address"}).bind
                if pm in seen_pm:
                    raise self.fail(f"{f}.pm_address", f"{pm} is already node {quote(seen_pm[pm])}'s address")
                seen_pm[pm] = name
            sids = self.sids(item.get("sids") or [], f"{f}.sids", name, seen_sids)
            nodes.append(Node(name, grpc, pm, sids))
        return tuple(nodes)

    def grpc_address(self, value: Any, field: str) -> str:
        """``host:port`` or ``[v6]:port``; IPv6 literals normalised."""
        value = self.text(value, field, "host:port")
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise self.fail(field, f"{quote(value)} is not host:port (IPv6 as [address]:port)")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise self.fail(field, f"port {quote(port)} is not a number from 1 to 65535")
        if host.startswith("[") and host.endswith("]"):
            try:
                host = f"[{ipaddress.IPv6Address(host[1:-1])}]"
            except ValueError:
                raise self.fail(field, f"{host[1:-1]!r} is not an IPv6 address") from None
        elif ":" in host:
            raise self.fail(field, f"{quote(value)}: write an IPv6 address in brackets, [address]:port")
        elif not _HOST.match(host) or not _is_host(host):
            raise self.fail(field, f"{quote(host)} is not a host name or IPv4 address")
        return f"{host}:{int(port)}"

    def sids(self, value: Any, field: str, node: str, seen: dict[str, str]) -> tuple[pb.LocalSid, ...]:
        sids: list[pb.LocalSid] = []
        for j, item in enumerate(self.sequence(value, field, "a list of SIDs")):
            f = f"{field}[{j}]"
            item = self.mapping(item, f, {"sid", "behavior", "nexthop", "table", "device"}, {"sid", "behavior"})
            behavior = item["behavior"]
            if behavior not in BEHAVIORS:
                raise self.fail(f"{f}.behavior", f"{quote(behavior)} is not one of {', '.join(BEHAVIORS)}")
            table = item.get("table", 0)
            if isinstance(table, bool) or not isinstance(table, int) or not 0 <= table < 2**32:
                raise self.fail(f"{f}.table", f"must be a routing table number, got {quote(table)}")
            msg = pb.LocalSid(sid=self.text(item["sid"], f"{f}.sid", "an IPv6 address"),
                              behavior=BEHAVIORS[behavior],
                              nexthop=self.text(item.get("nexthop") or "", f"{f}.nexthop", "an IPv6 address"),
                              table=table,
                              device=self.text(item.get("device") or "", f"{f}.device", "an interface name"))
            names = {k: f"{f}.{k}" for k in ("sid", "behavior", "nexthop", "table", "device")}
            msg = self.checked(validate.local_sid, msg, f, names)
            if msg.sid in seen:
                raise self.fail(f"{f}.sid", f"{msg.sid} is already a SID of node {quote(seen[msg.sid])}")
            seen[msg.sid] = node
            sids.append(msg)
        return tuple(sids)

    # ------------------------------------------------------------ flows

    def sid_of(self, nodes: dict[str, Node], name: Any, field: str, decap: bool = False) -> str:
        node = nodes[self.node_ref(name, field, tuple(nodes))]
        sid = node.decap_sid if decap else node.end_sid
        if sid is None:
            kind = "decap SID (End.DX6 or End.DT6)" if decap else "End SID"
            raise self.fail(field, f"node {quote(node.name)} has no {kind}")
        return sid

    def end_sids(self, via: tuple[str, ...], field: str, nodes: dict[str, Node]) -> tuple[str, ...]:
        """The End SIDs of the (checked) path ``via`` at ``field``."""
        return tuple(self.sid_of(nodes, v, f"{field}[{j}]") for j, v in enumerate(via))

    def flows(self, value: Any, nodes: dict[str, Node], dataplane: str) -> tuple[Flow, ...]:
        owner = {s.sid: n.name for n in nodes.values() for s in n.sids}
        flows: list[Flow] = []
        names: set[str] = set()
        ingress_routes: dict[tuple[str, str], str] = {}
        egress_matches: dict[tuple[str, str, str], str] = {}
        for i, item in enumerate(self.sequence(value, "flows")):
            f = f"flows[{i}]"
            item = self.mapping(item, f, {"name", "from", "to", "via", "segments", "source", "destination", "device"},
                                {"name", "from", "to", "source", "destination"})
            name, src, dst = self.endpoints(item, f, "flow", names, tuple(nodes))
            if "via" in item and "segments" in item:
                raise self.fail(f"{f}.segments", "give either 'via' or 'segments', not both")
            if "segments" in item:
                raw = item["segments"]
                if not isinstance(raw, list) or not raw:
                    raise self.fail(f"{f}.segments", "must be a non-empty list of SIDs")
                segments = tuple(self.text(s, f"{f}.segments[{j}]", "an IPv6 address") for j, s in enumerate(raw))
                seg_names = {"segments": f"{f}.segments"}
            else:
                via_names = self.path(item.get("via", []), f"{f}.via", src, dst, tuple(nodes), what="nodes")
                via_sids = self.end_sids(via_names, f"{f}.via", nodes)
                segments = (*via_sids, self.sid_of(nodes, dst, f"{f}.to", decap=True))
                seg_names = {f"segments[{j}]": f"{f}.via[{j}]" for j in range(len(via_sids))}
                seg_names[f"segments[{len(via_sids)}]"] = f"{f}.to"
                seg_names["segments"] = f"{f}.via"
            device = self.text(item.get("device") or "", f"{f}.device", "an interface name")
            policy = self.checked(validate.policy,
                                  pb.Policy(name=name, destination=self.text(item["destination"], f"{f}.destination",
                                                                             "an IPv6 prefix"),
                                            segments=segments, device=device),
                                  f, {"name": f"{f}.name", "destination": f"{f}.destination", **seg_names,
                                      "device": f"{f}.device"})
            monitor = self.checked(validate.flow_monitor,
                                   pb.FlowMonitor(flow=name, role=pb.ROLE_INGRESS,
                                                  source_prefix=self.text(item["source"], f"{f}.source",
                                                                          "an IPv6 prefix"),
                                                  destination_prefix=policy.destination),
                                   f, {"flow": f"{f}.name", "source_prefix": f"{f}.source",
                                       "destination_prefix": f"{f}.destination"})
            if (src, policy.destination) in ingress_routes:
                raise self.fail(f"{f}.destination", f"flow {quote(ingress_routes[(src, policy.destination)])} already "
                                f"steers {policy.destination} at {quote(src)} (one policy per destination and node)")
            ingress_routes[(src, policy.destination)] = name
            match = (dst, monitor.source_prefix, monitor.destination_prefix)
            if match in egress_matches:
                raise self.fail(f, f"same source and destination at egress {quote(dst)} as flow "
                                f"{quote(egress_matches[match])}: the counters could not tell them apart")
            egress_matches[match] = name
            segments = tuple(policy.segments)
            if "segments" in item:
                via_names = tuple(owner[s] for s in segments if s in owner and owner[s] != dst)
            if dataplane == "ebpf":
                self.counted_once(src, via_names, dst, f"{f}.segments" if "segments" in item else f"{f}.via")
            flows.append(Flow(name, src, dst, via_names, policy, monitor))
        return tuple(flows)

    # ------------------------------------------------------------ STAMP

    def sessions(self, value: Any, nodes: dict[str, Node]) -> tuple[StampSession, ...]:
        sessions: list[StampSession] = []
        names: set[str] = set()
        reflector_keys: dict[str, tuple[str, str]] = {}
        for i, item in enumerate(self.sequence(value, "stamp")):
            f = f"stamp[{i}]"
            r, item = self.stamp_session(item, f, names, tuple(nodes),
                                         more=frozenset({"timeout", "auth_key_file"}) | RFC8972_SETTINGS, what="nodes")
            for end, node in (("from", r.src), ("to", r.dst)):
                if nodes[node].pm_address is None:
                    raise self.fail(f"{f}.{end}", f"node {quote(node)} has no pm_address")
            timeout = item.get("timeout", 0)  # 0: the southbound default
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise self.fail(f"{f}.timeout", f"must be a number, got {kind(timeout)}")
            key_file = self.text(item.get("auth_key_file") or "", f"{f}.auth_key_file", "an absolute path")
            rfc8972 = self.rfc8972(item, f)
            msg = self.checked(validate.stamp_session,
                               pb.StampSession(name=r.name, destination=nodes[r.dst].pm_address,
                                               source=nodes[r.src].pm_address,
                                               segments=self.end_sids(r.via, f"{f}.via", nodes),
                                               return_segments=self.end_sids(r.return_via, f"{f}.return_via", nodes),
                                               rate=r.rate, reflector_node=r.dst,
                                               timeout_s=self.given(validate.stamp_timeout, timeout, "timeout" in item,
                                                                    f"{f}.timeout"),
                                               auth_key_file=key_file, **validate.liveness_fields(r.liveness), **rfc8972),
                               f, {"name": f"{f}.name", "segments": f"{f}.via", "return_segments": f"{f}.return_via",
                                   "rate": f"{f}.rate", "timeout_s": f"{f}.timeout",
                                   "auth_key_file": f"{f}.auth_key_file",
                                   **{name: f"{f}.{name}" for name in RFC8972_SETTINGS}})
            reflector = self.checked(validate.stamp_reflector,
                                     pb.StampReflector(bind=nodes[r.dst].pm_address, auth_key_file=msg.auth_key_file),
                                     f, {"auth_key_file": f"{f}.auth_key_file"})
            # One reflector per node: all sessions to a node must agree on its key file.
            if r.dst in reflector_keys and reflector_keys[r.dst][0] != msg.auth_key_file:
                other_key, other = reflector_keys[r.dst]
                raise self.fail(f"{f}.auth_key_file", f"session {quote(other)} to {quote(r.dst)} uses "
                                f"{other_key or 'no key file'!s}; the one reflector of a node has one key")
            reflector_keys.setdefault(r.dst, (msg.auth_key_file, r.name))
            sessions.append(StampSession(r.name, r.src, r.dst, r.via, r.return_via, msg.rate, liveness=r.liveness,
                                         message=msg, reflector=reflector))
        return tuple(sessions)

    # ------------------------------------------------------------ TLS

    def tls(self, value: Any) -> TlsConfig:
        value = self.mapping(value, "tls", {"ca", "cert", "key", "plaintext"}, set())
        files = {}
        for key in ("ca", "cert", "key"):
            if value.get(key) is not None:
                files[key] = self.text(value[key], f"tls.{key}", "a file path")
        plaintext = value.get("plaintext", False)
        if not isinstance(plaintext, bool):
            raise self.fail("tls.plaintext", f"must be true or false, got {kind(plaintext)}")
        if ("cert" in files) != ("key" in files):
            raise self.fail("tls.key" if "cert" in files else "tls.cert", "mutual TLS needs both cert and key")
        if plaintext and files:
            raise self.fail("tls.plaintext", "plaintext: true cannot go with ca/cert/key")
        return TlsConfig(files.get("ca"), files.get("cert"), files.get("key"), plaintext)
