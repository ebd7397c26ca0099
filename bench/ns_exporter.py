"""What the exporter benchmarks share: one real node exporter in a network namespace of its own (root).

:func:`exporter` makes the namespace (``lo`` up, a veth pair ``v0``/``v1`` up:
a device for the policies' routes; the SIDs go on ``lo``), starts a
:class:`~srv6pm.exporter.service.Exporter` there (its API on a free port of
127.0.0.1, publishing to ``broker``, its state in a temporary directory) and,
on leaving, closes it and removes its pinned maps and the namespace.

Run the benchmarks as ``python bench/NAME.py``: this module is then importable beside them.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator

__all__ = ["exporter", "rss_mib"]


def rss_mib() -> float:
    """This process's resident memory, MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _links() -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ipr.link("add", ifname="v0", kind="veth", peer="v1")
        for dev in ("v0", "v1"):
            ipr.link("set", index=ipr.link_lookup(ifname=dev)[0], state="up")


@contextlib.contextmanager
def exporter(prefix: str, broker: str, *, dataplane: str = "ebpf", node: str | None = None) -> Iterator:
    """A started exporter (node ``node``, default ``prefix`` + random hex) in a fresh namespace named ``prefix`` +
    random hex, with data plane ``dataplane``; everything it made is removed on leaving."""
    from pyroute2 import netns as pr_netns

    from srv6pm import bpf
    from srv6pm.config import KafkaSettings
    from srv6pm.exporter import ebpf as ebpf_mod
    from srv6pm.exporter.api import ServerSettings
    from srv6pm.exporter.config import parse
    from srv6pm.exporter.service import Exporter
    from srv6pm.netns import NetnsThread

    ns, node = prefix + secrets.token_hex(4), node or prefix + secrets.token_hex(3)
    pr_netns.create(ns)
    state = tempfile.mkdtemp(prefix="srv6pm-bench-")
    started = None
    try:
        with NetnsThread(ns) as t:
            t.call(_links)
        started = Exporter(parse(f"node: {node}\nnetns: {ns}\nperiod: 10\ndataplane: {dataplane}\n"
                                 f"state_file: {state}/state.json\n"),
                           KafkaSettings(bootstrap=broker), api=ServerSettings("127.0.0.1:0", None))
        started.start()
        yield started
    finally:
        if started is not None:
            started.close()  # the namespace's removal takes the programs off its interfaces
            bpf.unpin(ebpf_mod.pin_dir(node))
        pr_netns.remove(ns)
        shutil.rmtree(state, ignore_errors=True)
