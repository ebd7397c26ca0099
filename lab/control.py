"""The lab's control plane: the collector configuration of a scenario.

In the lab, as in production, the node exporters start empty: every SRv6
SID, policy, monitored flow and STAMP session reaches them over the
southbound API from the collector. :func:`collector_config` turns a
:class:`~srv6pm.lab.topology.Plan` into the collector's declarative
configuration (the format of :mod:`srv6pm.collector.config`), which is the
scenario grown with what the collector needs to know:

* each node's southbound address (``grpc``: ``host:port`` of its exporter),
  its measurement address (``pm_address``) and its SIDs: ``End`` on the End
  SID (device: the node's first link, see :mod:`srv6pm.lab.topology` for why
  not ``lo``) and, where the node has a host, ``End.DX6`` to that host on the
  decap SID;
* each flow's inner source and destination prefixes (what the policy steers
  and the counters match);
* links, with their delay, and STAMP sessions as in the scenario (with
  their ``liveness`` and RFC 8972 settings);
* the scenario's ``dataplane`` (the exporters get the same, see
  :class:`~srv6pm.lab.runner.Lab`).

The underlay (addresses, locator routes, host namespaces) is what the lab
network builds itself (:mod:`srv6pm.lab.network`), like an IGP would.
"""

from __future__ import annotations

from typing import Mapping

from .topology import HOST_IFNAME, Plan

__all__ = ["collector_config", "host_port"]


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def collector_config(plan: Plan, grpc_ports: Mapping[str, int], host: str = "127.0.0.1",
                     flows: set[str] | None = None, stamp_timeout_s: float | None = None) -> dict:
    """The collector configuration of ``plan`` as plain data (dump it as YAML or JSON).

    ``grpc_ports`` maps every node to its exporter's southbound port on
    ``host``. ``flows`` limits the monitored flows to those names (None: all
    of the scenario's flows); the lab's tests use it to change the
    configuration while the lab runs. ``stamp_timeout_s`` is the STAMP
    senders' loss timeout (None: the collector's default).
    """
    nodes = []
    for name, node in plan.nodes.items():
        sids = [{"sid": node.end_sid, "behavior": "End", "device": node.sid_dev}]
        if node.host is not None:
            sids.append({"sid": node.decap_sid, "behavior": "End.DX6", "nexthop": node.host.address,
                         "device": HOST_IFNAME})
        nodes.append({"name": name, "grpc": host_port(host, grpc_ports[name]), "pm_address": node.pm_addr,
                      "sids": sids})
    links = [{"ends": [link.a, link.b], "delay_ms": link.delay_ms} if link.delay_ms else [link.a, link.b]
             for link in plan.links]
    flow_list = [{"name": f.name, "from": f.ingress, "to": f.egress, "via": list(f.via),
                  "source": f.src_prefix, "destination": f.dst_prefix}
                 for f in plan.flows.values() if flows is None or f.name in flows]
    stamp = [{"name": s.name, "from": s.src, "to": s.dst, "via": list(s.via), "return_via": list(s.return_via),
              "rate": s.rate, **({"timeout": stamp_timeout_s} if stamp_timeout_s else {}),
              **({"liveness": {"down_after": s.liveness[0], "up_after": s.liveness[1]}} if s.liveness else {}),
              **s.rfc8972()}
             for s in plan.scenario.stamp]
    return {"dataplane": plan.scenario.dataplane, "nodes": nodes, "links": links, "flows": flow_list,
            "stamp": stamp, "tls": {"plaintext": True}}
