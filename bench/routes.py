"""Benchmark: what does re-applying an unchanged SRv6 policy cost on a node with a full routing table?

Builds a network namespace of its own (random name; root needed) with one
veth, ``--routes`` unrelated IPv6 routes in table main (protocol 4, like a
routing daemon's) and one srv6pm policy, then times ``--applies`` calls of
``Routes.apply_policy`` with that unchanged policy (each answers ``False``:
nothing to do) two ways, in the same run:

* ``full dump``  the previous reading: every IPv6 route of every table through
                 pyroute2 (``IPRoute.route("dump")``), decoded, then filtered here;
* ``prefix``     srv6pm's reading (``srv6pm.exporter.routes``): the dump of table
                 main, filtered to that table by the kernel, with only the messages
                 to exactly the policy's prefix decoded.

Both read the same kernel state and must agree (checked). Prints the time per
apply and the ratio; asserts nothing about times. The namespace is removed at
the end.

    python bench/routes.py [--routes 10000] [--applies 20]
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import statistics
import sys
import time
from socket import AF_INET6

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from srv6pm.exporter.routes import MAIN_TABLE, Routes
from srv6pm.netns import NetnsThread
from srv6pm.southbound import validate
from srv6pm.southbound.v1 import southbound_pb2 as pb


class FullDumpRoutes(Routes):
    """Routes reading the kernel's routes to a prefix the way srv6pm did before: a full decoded dump."""

    def _routes_to(self, what, obj, dst, protocol=0):
        wanted = ipaddress.IPv6Network(dst) if dst is not None else None
        out = []
        for msg in self._thread.call(self._ipr.route, "dump", family=AF_INET6):
            if msg.get("table") != MAIN_TABLE or (protocol and msg["proto"] != protocol):
                continue
            if wanted is not None and (msg["dst_len"] != wanted.prefixlen or
                                       ipaddress.IPv6Address(msg.get("dst") or "::") != wanted.network_address):
                continue
            out.append(msg)
        return out


def populate(ns: str, count: int) -> None:
    def build():
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="v0", kind="veth", peer="v1")
            for name in ("v0", "v1"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            v0 = ipr.link_lookup(ifname="v0")[0]
            ipr.addr("add", index=v0, address="fc00:1::1", prefixlen=64, flags=0x02)  # nodad
            base = int(ipaddress.IPv6Address("2001:db8::"))
            for i in range(count):
                ipr.route("add", dst=f"{ipaddress.IPv6Address(base + (i << 64))}/64", oif=v0, proto=4)
    with NetnsThread(ns) as t:
        t.call(build)


def timed(routes: Routes, policy: pb.Policy, applies: int) -> list[float]:
    times = []
    for _ in range(applies):
        start = time.perf_counter()
        changed = routes.apply_policy(policy)
        times.append(time.perf_counter() - start)
        if changed:
            raise SystemExit("an unchanged policy was applied again: the readings disagree")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000, help="unrelated routes in table main")
    parser.add_argument("--applies", type=int, default=20, help="applies timed per way")
    args = parser.parse_args()
    if args.routes < 0 or args.applies < 1:
        parser.error("--routes must be >= 0 and --applies >= 1")

    ns = "bench-rt-" + secrets.token_hex(4)
    pr_netns.create(ns)
    try:
        print(f"adding {args.routes} routes to namespace {ns} ...", file=sys.stderr)
        populate(ns, args.routes)
        policy = validate.policy(pb.Policy(name="p1", destination="fd00:4::/64", segments=["fc00:1::9", "fcff:3::1"],
                                           device="v0"))
        with Routes(ns) as new, FullDumpRoutes(ns) as old:
            new.apply_policy(policy)
            if new.policy_route("fd00:4::/64") != old.policy_route("fd00:4::/64") or new.dump() != old.dump():
                raise SystemExit("the two readings disagree")
            timed(old, policy, 1), timed(new, policy, 1)  # warm up both
            results = {"full dump": timed(old, policy, args.applies), "prefix": timed(new, policy, args.applies)}
    finally:
        pr_netns.remove(ns)

    base = statistics.median(results["full dump"])
    print(f"{args.routes} unrelated routes, {args.applies} applies of an unchanged policy each")
    print(f"{'reading':<10} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'vs full dump':>13}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:<10} {median * 1e3:>10.2f} {min(times) * 1e3:>8.2f} {max(times) * 1e3:>8.2f} "
              f"{median / base:>13.3f}")
    print(f"speed-up: {base / statistics.median(results['prefix']):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
