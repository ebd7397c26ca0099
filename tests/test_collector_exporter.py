"""The collector against REAL node exporters: `srv6pm exporter run` processes serving the southbound API
over 127.0.0.1, each driving its own network namespace (routes, nftables, STAMP), publishing to the real
embedded broker.

Two namespaces with random names, joined by a veth pair: r1 (ingress of flow f1, STAMP sender) and r2
(egress, reflector). The collector (in-process) brings both to the configured state; the kernel shows it.
Then r2's exporter is restarted WITHOUT a state file, so it comes back empty: the collector must see the new
boot_id and put everything back. Needs root.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from netns_support import skip_reason
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from srv6pm.collector.reconcile import Backoff
from srv6pm.collector.service import Collector
from srv6pm import bpf
from srv6pm.exporter import ebpf
from srv6pm.exporter.routes import Routes
from srv6pm.netns import NetnsThread
from srv6pm.southbound.client import ExporterClient

pytestmark = [pytest.mark.srv6, pytest.mark.netns, pytest.mark.services,
              pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

ROOT = Path(__file__).resolve().parent.parent
LINK = {"r1": "fc00:12::1", "r2": "fc00:12::2"}  # the veth pair's addresses: also the measurement addresses


def _configure(ns: str, ifname: str, address: str, other_locator: str, peer: str) -> None:
    def build():
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            index = ipr.link_lookup(ifname=ifname)[0]
            ipr.link("set", index=index, state="up")
            ipr.addr("add", index=index, address=address, prefixlen=64, flags=0x02)  # nodad
            ipr.route("add", dst=other_locator, gateway=peer, oif=index)
    with NetnsThread(ns) as t:
        t.call(build)


@pytest.fixture
def namespaces():
    tag = secrets.token_hex(3)
    names = {"r1": f"c1{tag}", "r2": f"c2{tag}"}
    ends = {"r1": f"c1{tag}v", "r2": f"c2{tag}v"}
    for ns in names.values():
        pr_netns.create(ns)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=ends["r1"], kind="veth", peer=ends["r2"])
            for node in ("r1", "r2"):
                ipr.link("set", index=ipr.link_lookup(ifname=ends[node])[0], net_ns_fd=names[node])
        _configure(names["r1"], ends["r1"], LINK["r1"], "fcff:2::/32", LINK["r2"])
        _configure(names["r2"], ends["r2"], LINK["r2"], "fcff:1::/32", LINK["r1"])
        yield names, ends
    finally:
        for ns in names.values():
            pr_netns.remove(ns)


class ExporterProcess:
    """`srv6pm exporter run` for one node, its API on a fixed port (so that a restart keeps the address)."""

    def __init__(self, node: str, ns: str, port: int, broker: str, tmp: Path):
        self.node, self.port = node, port
        self.config = tmp / f"{node}-exporter.yaml"
        self.config.write_text(yaml.safe_dump({"node": node, "netns": ns, "period": 1}))
        self.broker = broker
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ExporterProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "srv6pm", "exporter", "run", "--config", str(self.config), "--kafka", self.broker,
             "--grpc-listen", f"127.0.0.1:{self.port}", "--grpc-plaintext"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # the exporter's one "listening" line
        assert line, f"exporter {self.node} exited with {self.proc.wait()}"
        event = json.loads(line)
        assert event["event"] == "listening" and event["address"] == f"127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def until(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_collector_configures_real_exporters_and_restores_a_restarted_one(namespaces, broker, tmp_path, free_port):
    names, ends = namespaces
    ports = {n: free_port() for n in ("r1", "r2")}
    exporters = {n: ExporterProcess(n, names[n], ports[n], broker, tmp_path).start() for n in ("r1", "r2")}
    config = {
        "nodes": [
            {"name": "r1", "grpc": f"127.0.0.1:{ports['r1']}", "pm_address": LINK["r1"],
             "sids": [{"sid": "fcff:1::1", "behavior": "End", "device": ends["r1"]}]},
            {"name": "r2", "grpc": f"127.0.0.1:{ports['r2']}", "pm_address": LINK["r2"],
             "sids": [{"sid": "fcff:2::1", "behavior": "End", "device": ends["r2"]},
                      {"sid": "fcff:2::100", "behavior": "End.DT6"}]},
        ],
        "links": [["r1", "r2"]],
        "flows": [{"name": "f1", "from": "r1", "to": "r2", "source": "fd01::/64", "destination": "fd02::/64"}],
        "stamp": [{"name": "s1", "from": "r1", "to": "r2", "rate": 5}],
        "tls": {"plaintext": True},
    }
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    collector = Collector(path, broker, plaintext=True, interval=0.3, backoff=Backoff(0.2, 1.0), results=False)
    thread = threading.Thread(target=collector.run)
    thread.start()
    history = collector.events.history
    clients = {n: ExporterClient(f"127.0.0.1:{ports[n]}") for n in ("r1", "r2")}
    try:
        until(lambda: any(e.kind == "converged" or e.kind == "apply_failed" for e in history), what="converged")
        assert not [e for e in history if e.kind == "apply_failed"], [(e.object, e.detail) for e in history if e.kind == "apply_failed"][:1]
        until(lambda: any(e.kind == "converged" for e in history), what="converged")
        r1, r2 = clients["r1"].get_state(), clients["r2"].get_state()
        assert [p.name for p in r1.policies] == ["f1"] and list(r1.policies[0].segments) == ["fcff:2::100"]
        assert {(f.flow, f.role) for f in r1.flows} == {("f1", 1)} and {(f.flow, f.role) for f in r2.flows} == {("f1", 2)}
        assert {s.sid for s in r2.local_sids} == {"fcff:2::1", "fcff:2::100"}
        assert r2.HasField("stamp_reflector") and r2.stamp_reflector.bind == LINK["r2"]
        # In the kernels: r1 encapsulates fd02::/64 towards r2's decap SID; r2 has its seg6local SIDs.
        with Routes(names["r1"]) as routes:
            r1_routes = {r["dst"]: r for r in routes.dump()}
        assert "fd02::/64" in r1_routes and r1_routes["fd02::/64"]["device"] == ends["r1"]
        with Routes(names["r2"]) as routes:
            assert {"fcff:2::1/128", "fcff:2::100/128"} <= {r["dst"] for r in routes.dump()}
        # STAMP: the session at r1 gets its test packets reflected by r2.
        until(lambda: any(s.received > 0 for s in clients["r1"].get_state().session_status),
              what="STAMP replies at r1")

        # r2's exporter restarts with no state file: it comes back empty, with a new boot_id.
        old_boot = r2.info.boot_id
        exporters["r2"].stop()
        exporters["r2"].start()
        restarted = until(lambda: [e for e in history if e.kind == "node_restarted" and e.node == "r2"],
                          what="node_restarted")
        assert restarted[0].boot_id != old_boot
        until(lambda: len([e for e in history if e.kind == "converged"]) >= 2, what="converged after the restart")
        after = list(history)[list(history).index(restarted[0]):]
        reapplied = {e.object for e in after if e.kind == "applied" and e.node == "r2"}
        assert reapplied == {"local_sid fcff:2::1", "local_sid fcff:2::100", "flow f1 egress", "stamp_reflector"}
        r2 = clients["r2"].get_state()
        assert {s.sid for s in r2.local_sids} == {"fcff:2::1", "fcff:2::100"}
        assert {(f.flow, f.role) for f in r2.flows} == {("f1", 2)} and r2.HasField("stamp_reflector")
        with Routes(names["r2"]) as routes:
            assert {"fcff:2::1/128", "fcff:2::100/128"} <= {r["dst"] for r in routes.dump()}
    finally:
        collector.stop()
        thread.join(30)
        for c in clients.values():
            c.close()
        for e in exporters.values():
            e.stop()
        for n in ("r1", "r2"):  # the exporters' pinned eBPF maps
            bpf.unpin(ebpf.pin_dir(n))
    assert not thread.is_alive()
