"""The collector's topology graph: its logic, and the thin ArangoDB layer as far as it runs without a server.

ArangoDB cannot run here; this exercises the graph logic through the in-memory
implementation of GraphStore (MemoryGraph). ArangoGraph's AQL and python-arango
calls run only against a real ArangoDB (docker compose). What is tested of
ArangoGraph here: its settings resolution, the clear error when the URL is
unreachable (a real closed TCP port), and the error for refused credentials,
against a FAKE HTTP server that answers every request 401 as ArangoDB does.
"""

from __future__ import annotations

import http.server
import json
import re
import threading

import pytest

from srv6pm import records
from srv6pm.collector import graph as g
from srv6pm.collector.arango import ArangoGraph, ArangoSettings
from srv6pm.collector.config import parse
from srv6pm.config import ConfigError
from srv6pm.records import DelayResult, LossResult

NOW = 1_764_000_000_123_456_789


def topology(paths=None, nodes=("r1", "r2", "r3", "r4"), links=(("r1", "r2"), ("r2", "r3"), ("r3", "r4"), ("r1", "r4"))):
    if paths is None:
        paths = [
            g.PathSpec("flow", "f1", "r1", "r4", ("r2", "r3"), ("fcff:2::1", "fcff:3::1", "fcff:4::100")),
            g.PathSpec("stamp", "s1", "r1", "r4", ("r2", "r3"), ("fcff:2::1", "fcff:3::1"), return_via=("r3", "r2")),
        ]
    return g.Topology(tuple(g.NodeSpec(n, f"127.0.0.1:{50050 + i}", f"fcff:{i}::2", (f"fcff:{i}::1",))
                            for i, n in enumerate(nodes, 1)),
                      tuple(g.LinkSpec(a, b, 20.0 if (a, b) == ("r2", "r3") else None) for a, b in links),
                      tuple(paths))


@pytest.fixture
def graph():
    store = g.MemoryGraph(clock_ns=lambda: NOW)
    store.ensure()
    store.sync_topology(topology())
    return store


def loss(flow="f1", period=100, tx=1000, rx=997, complete=True):
    lost = tx - rx if complete else None
    return LossResult(flow=flow, period=period, period_start="2025-11-24T16:00:00Z", period_s=2.0,
                      ingress="r1", egress="r4" if complete else None, tx_packets=tx, rx_packets=rx if complete else None,
                      tx_bytes=tx * 100, rx_bytes=rx * 100 if complete else None, lost_packets=lost,
                      loss_ratio=lost / tx if complete else None, complete=complete,
                      missing=None if complete else "egress").to_dict()


def delay(session="s1", period=100, direction="forward", mean=20_000.0, samples=20):
    stats = dict(min_us=mean - 50, mean_us=mean, max_us=mean + 80, p50_us=mean, p99_us=mean + 70, jitter_us=12.5)
    if samples == 0:
        stats = dict.fromkeys(stats)
    return DelayResult(session=session, period=period, period_start="2025-11-24T16:00:00Z", period_s=2.0,
                       direction=direction, sender="r1", reflector="r4", samples=samples, lost=0, **stats).to_dict()


def path(store, key):
    return next(p for p in store.snapshot()["paths"] if p["_key"] == key)


# ------------------------------------------------------------------ topology


def test_sync_creates_nodes_links_and_paths(graph):
    snap = graph.snapshot()
    assert [n["_key"] for n in snap["nodes"]] == ["r1", "r2", "r3", "r4"]
    assert snap["nodes"][0]["alive"] is None and snap["nodes"][0]["sids"] == ["fcff:1::1"]
    link = next(li for li in snap["links"] if li["_key"] == "r2--r3")
    assert (link["_from"], link["_to"], link["delay_ms"]) == ("nodes/r2", "nodes/r3", 20.0)
    f1, s1 = path(graph, "flow:f1"), path(graph, "stamp:s1")
    assert (f1["_from"], f1["_to"], f1["kind"], f1["via"], f1["loss"]) == ("nodes/r1", "nodes/r4", "flow", ["r2", "r3"], None)
    assert (s1["kind"], s1["return_via"], s1["delay"], s1["delay_us"]) == ("stamp", ["r3", "r2"], None, None)


def test_sync_again_is_a_no_op_and_keeps_figures_and_status(graph):
    graph.update_loss(loss())
    graph.update_delay(delay())
    graph.set_node_status("r1", True, "boot-1", NOW)
    assert graph.sync_topology(topology()) == {"added": 0, "changed": 0, "removed": 0}
    assert path(graph, "flow:f1")["loss"]["lost_packets"] == 3
    assert path(graph, "stamp:s1")["delay_us"] == 20_000.0
    r1 = graph.snapshot()["nodes"][0]
    assert (r1["alive"], r1["boot_id"]) == (True, "boot-1")


def test_sync_adds_and_removes_and_keeps_figures_of_remaining_paths(graph):
    graph.update_loss(loss())
    graph.update_delay(delay())
    f2 = g.PathSpec("flow", "f2", "r4", "r1", ("r3",), ("fcff:3::1", "fcff:1::100"))
    # s1 removed, f2 and node r5 with a link added, link r1--r4 removed.
    new = topology(paths=[topology().paths[0], f2], nodes=("r1", "r2", "r3", "r4", "r5"),
                   links=(("r1", "r2"), ("r2", "r3"), ("r3", "r4"), ("r4", "r5")))
    counts = graph.sync_topology(new)
    assert counts == {"added": 3, "changed": 0, "removed": 2}
    snap = graph.snapshot()
    assert [p["_key"] for p in snap["paths"]] == ["flow:f1", "flow:f2"]
    assert [li["_key"] for li in snap["links"]] == ["r1--r2", "r2--r3", "r3--r4", "r4--r5"]
    assert path(graph, "flow:f1")["loss"]["period"] == 100  # kept
    assert path(graph, "flow:f2")["loss"] is None
    # A node removed goes with its edges.
    graph.sync_topology(topology(paths=[], nodes=("r1", "r2"), links=(("r1", "r2"),)))
    snap = graph.snapshot()
    assert [n["_key"] for n in snap["nodes"]] == ["r1", "r2"] and snap["paths"] == []


def test_a_path_whose_route_changed_loses_its_old_figures(graph):
    graph.update_delay(delay())
    rerouted = g.PathSpec("stamp", "s1", "r1", "r4", ("r2",), ("fcff:2::1",), return_via=("r2",))
    assert graph.sync_topology(topology(paths=[topology().paths[0], rerouted]))["changed"] == 1
    s1 = path(graph, "stamp:s1")
    assert (s1["via"], s1["delay"], s1["delay_us"]) == (["r2"], None, None)


@pytest.mark.parametrize("bad, field", [
    (g.Topology((g.NodeSpec("r1"), g.NodeSpec("r1"))), "nodes[1].name"),
    (g.Topology((g.NodeSpec("r 1"),)), "nodes[0].name"),
    (g.Topology((g.NodeSpec("r1"),), (g.LinkSpec("r1", "r9"),)), "links[0].b"),
    (g.Topology((g.NodeSpec("r1"), g.NodeSpec("r2")), (g.LinkSpec("r1", "r2"), g.LinkSpec("r2", "r1"))), "links[1]"),
    (g.Topology((g.NodeSpec("r1"), g.NodeSpec("r2")), (g.LinkSpec("r1", "r2", -1),)), "links[0].delay_ms"),
    (g.Topology((g.NodeSpec("r1"),), (), (g.PathSpec("flow", "f1", "r1", "r7"),)), "paths[0].dst"),
    (g.Topology((g.NodeSpec("r1"), g.NodeSpec("r2")), (), (g.PathSpec("stamp", "s", "r1", "r2", ("r3",)),)),
     "paths[0].via[0]"),
])
def test_a_bad_topology_is_refused_naming_the_field_and_nothing_changes(graph, bad, field):
    before = graph.snapshot()
    with pytest.raises(g.GraphError, match="^" + re.escape(field) + ": "):
        graph.sync_topology(bad)
    assert graph.snapshot() == before


def test_topology_from_the_collector_config_file():
    cfg = parse("""
nodes:
  - {name: r1, grpc: "127.0.0.1:50051", pm_address: "fcff:1::2", sids: [{sid: "fcff:1::1", behavior: End}]}
  - {name: r2, grpc: "127.0.0.1:50052", sids: [{sid: "fcff:2::1", behavior: End}]}
  - name: r3
    grpc: "127.0.0.1:50053"
    pm_address: "fcff:3::2"
    sids: [{sid: "fcff:3::1", behavior: End}, {sid: "fcff:3::100", behavior: End.DT6}]
links: [[r1, r2], {ends: [r2, r3], delay_ms: 20}]
flows:
  - {name: f1, from: r1, to: r3, via: [r2], source: "fd01:1::2/128", destination: "fd01:3::101/128"}
stamp:
  - {name: s1, from: r1, to: r3, via: [r2], return_via: [r2], rate: 10}
""")
    store = g.MemoryGraph()
    store.ensure()
    store.sync_topology(cfg)
    snap = store.snapshot()
    assert snap["nodes"][2]["sids"] == ["fcff:3::1", "fcff:3::100"]
    assert [(li["_key"], li["delay_ms"]) for li in snap["links"]] == [("r1--r2", 0.0), ("r2--r3", 20.0)]
    f1, s1 = snap["paths"]
    assert (f1["_key"], f1["_from"], f1["_to"], f1["segments"]) == ("flow:f1", "nodes/r1", "nodes/r3",
                                                                   ["fcff:2::1", "fcff:3::100"])
    assert f1["destination"] == "fd01:3::101/128"
    assert (s1["_key"], s1["return_via"], s1["return_segments"]) == ("stamp:s1", ["r2"], ["fcff:2::1"])


def test_the_store_must_be_created_first():
    with pytest.raises(g.GraphStoreError, match="ensure"):
        g.MemoryGraph().sync_topology(topology())


# ------------------------------------------------------------------ results


def test_loss_is_stored_with_its_figures(graph):
    assert graph.update_loss(loss(tx=1000, rx=999)) == g.APPLIED
    assert path(graph, "flow:f1")["loss"] == {
        "period": 100, "period_start": "2025-11-24T16:00:00Z", "tx_packets": 1000, "rx_packets": 999,
        "lost_packets": 1, "loss_ratio": 0.001, "complete": True, "updated_at": "2025-11-24T16:00:00.123456789Z"}


def test_an_older_period_never_overwrites_a_newer_one_and_the_same_period_overwrites(graph):
    assert graph.update_loss(loss(period=101, rx=990)) == g.APPLIED
    assert graph.update_loss(loss(period=100, rx=900)) == g.STALE
    assert path(graph, "flow:f1")["loss"]["lost_packets"] == 10
    assert graph.update_loss(loss(period=101, rx=990)) == g.APPLIED  # re-read after a restart: same figures
    assert graph.update_loss(loss(period=102, rx=1000)) == g.APPLIED
    assert path(graph, "flow:f1")["loss"]["period"] == 102
    assert graph.stats["stale"] == 1 and graph.stats["loss"] == 3


def test_delay_directions_are_ordered_independently_and_forward_sets_the_weight(graph):
    assert graph.update_delay(delay(period=101, direction="backward", mean=21_000.0)) == g.APPLIED
    assert graph.update_delay(delay(period=100, direction="forward", mean=19_000.0)) == g.APPLIED
    assert graph.update_delay(delay(period=100, direction="backward", mean=1.0)) == g.STALE
    s1 = path(graph, "stamp:s1")
    assert s1["delay"]["forward"]["period"] == 100 and s1["delay"]["backward"]["mean_us"] == 21_000.0
    assert s1["delay_us"] == 19_000.0
    assert graph.update_delay(delay(period=99, direction="forward", mean=5.0)) == g.STALE
    assert path(graph, "stamp:s1")["delay_us"] == 19_000.0
    assert set(s1["delay"]) == {"forward", "backward", "updated_at"}
    assert s1["delay"]["forward"] == {"period": 100, "period_start": "2025-11-24T16:00:00Z", "samples": 20, "lost": 0,
                                      "min_us": 18_950.0, "mean_us": 19_000.0, "max_us": 19_080.0, "p50_us": 19_000.0,
                                      "p99_us": 19_070.0, "jitter_us": 12.5}


def test_a_forward_period_without_samples_or_with_negative_mean_leaves_no_weight(graph):
    graph.update_delay(delay(period=100, mean=20_000.0))
    graph.update_delay(delay(period=101, samples=0))
    assert path(graph, "stamp:s1")["delay_us"] is None
    graph.update_delay(delay(period=102, mean=-30.0))  # clocks not synchronised
    assert path(graph, "stamp:s1")["delay_us"] is None
    assert graph.lowest_delay_path("r1", "r4") is None


def test_an_incomplete_loss_result_is_stored_as_incomplete_never_as_loss(graph):
    doc = loss(period=100, complete=False)
    doc["lost_packets"], doc["loss_ratio"] = 1000, 1.0  # even if a producer filled them in
    assert graph.update_loss(doc) == g.APPLIED
    stored = path(graph, "flow:f1")["loss"]
    assert (stored["complete"], stored["lost_packets"], stored["loss_ratio"], stored["rx_packets"]) == (False, None, None, None)
    assert stored["tx_packets"] == 1000


def test_results_for_unknown_subjects_are_ignored_counted_and_logged_once(graph, caplog):
    before = graph.snapshot()
    with caplog.at_level("WARNING", logger="srv6pm.collector.graph"):
        assert graph.update_loss(loss(flow="nope")) == g.UNKNOWN
        assert graph.update_loss(loss(flow="nope", period=101)) == g.UNKNOWN
        assert graph.update_delay(delay(session="f1")) == g.UNKNOWN  # a flow's name is not a session
        assert graph.set_node_status("r9", True, "b", NOW) == g.UNKNOWN
    assert graph.stats["unknown"] == 4
    assert len([r for r in caplog.records if "unknown" in r.getMessage()]) == 3
    assert graph.snapshot() == before


def test_an_invalid_result_is_refused_naming_the_field(graph):
    doc = loss()
    del doc["tx_packets"]
    with pytest.raises(records.RecordError, match="tx_packets"):
        graph.update_loss(doc)
    with pytest.raises(records.RecordError, match="direction"):
        graph.update_delay({**delay(), "direction": "sideways"})


def test_node_status_newer_wins(graph):
    assert graph.set_node_status("r2", True, "boot-a", NOW) == g.APPLIED
    assert graph.set_node_status("r2", False, None, NOW - 1) == g.STALE
    assert graph.set_node_status("r2", False, "boot-a", NOW + 5) == g.APPLIED
    r2 = graph.snapshot()["nodes"][1]
    assert (r2["alive"], r2["boot_id"], r2["status_at"]) == (False, "boot-a", "2025-11-24T16:00:00.123456794Z")
    with pytest.raises(g.GraphError, match="^alive: "):
        graph.set_node_status("r2", "yes", None, NOW)
    with pytest.raises(g.GraphError, match="^at_ns: "):
        graph.set_node_status("r2", True, None, -1)


# ------------------------------------------------------------------ lowest delay


def two_routes():
    """s_direct r1->r4 and the chain s_a r1->r2, s_b r2->r4; s_back r4->r1 for the other direction."""
    return topology(paths=[
        g.PathSpec("stamp", "s_direct", "r1", "r4"),
        g.PathSpec("stamp", "s_a", "r1", "r2"),
        g.PathSpec("stamp", "s_b", "r2", "r4", ("r3",)),
        g.PathSpec("stamp", "s_back", "r4", "r1"),
        g.PathSpec("flow", "f1", "r1", "r4"),  # a flow edge has no delay_us: never part of the answer
    ])


@pytest.mark.parametrize("direct, a, b, expect", [
    (30_000.0, 10_000.0, 5_000.0, (["r1", "r2", "r4"], 15_000.0, ["stamp:s_a", "stamp:s_b"])),
    (12_000.0, 10_000.0, 5_000.0, (["r1", "r4"], 12_000.0, ["stamp:s_direct"])),
])
def test_lowest_delay_path_picks_the_lower_delay_of_two_routes(direct, a, b, expect):
    store = g.MemoryGraph()
    store.ensure()
    store.sync_topology(two_routes())
    for name, mean in (("s_direct", direct), ("s_a", a), ("s_b", b)):
        store.update_delay(delay(session=name, mean=mean))
    found = store.lowest_delay_path("r1", "r4")
    assert (found.nodes, found.delay_us, found.paths) == expect


def test_lowest_delay_path_follows_the_direction_of_measurement():
    store = g.MemoryGraph()
    store.ensure()
    store.sync_topology(two_routes())
    for name in ("s_direct", "s_a", "s_b"):
        store.update_delay(delay(session=name, mean=1000.0))
    assert store.lowest_delay_path("r4", "r1") is None  # s_back not measured yet; r1->r4 edges do not count
    store.update_delay(delay(session="s_back", mean=7000.0))
    back = store.lowest_delay_path("r4", "r1")
    assert (back.nodes, back.delay_us, back.paths) == (["r4", "r1"], 7000.0, ["stamp:s_back"])
    assert store.lowest_delay_path("r1", "r4").delay_us == 1000.0
    assert store.lowest_delay_path("r2", "r1").nodes == ["r2", "r4", "r1"]


def test_lowest_delay_path_refuses_unmeasured_edges_and_unknown_nodes():
    store = g.MemoryGraph()
    store.ensure()
    store.sync_topology(two_routes())
    store.update_delay(delay(session="s_a", mean=1000.0))
    assert store.lowest_delay_path("r1", "r4") is None  # s_b and s_direct unmeasured
    assert store.lowest_delay_path("r1", "r2").delay_us == 1000.0
    assert store.lowest_delay_path("r3", "r3") == g.DelayPath(["r3"], 0.0, [])
    with pytest.raises(g.GraphError, match="^dst: unknown node 'r9'"):
        store.lowest_delay_path("r1", "r9")


def test_snapshot_is_json(graph):
    graph.update_loss(loss())
    graph.update_delay(delay())
    graph.set_node_status("r1", True, "b1", NOW)
    snap = graph.snapshot()
    assert json.loads(json.dumps(snap, allow_nan=False)) == snap
    assert snap["graph"] == "srv6pm" and set(snap) == {"graph", "nodes", "links", "paths"}
    snap["paths"][0]["via"].append("mutated")
    assert graph.snapshot() != snap  # a copy, not the store's own documents


# ------------------------------------------------------------------ ArangoDB layer (no server)


def test_settings_read_the_password_from_env_or_file_and_never_default(tmp_path):
    with pytest.raises(ConfigError, match="SRV6PM_ARANGO_PASSWORD"):
        ArangoSettings.from_args(env={})
    assert ArangoSettings().password is None
    s = ArangoSettings.from_args(env={"SRV6PM_ARANGO_PASSWORD": "s3cret", "SRV6PM_ARANGO_URL": "https://db:8529",
                                      "SRV6PM_ARANGO_USER": "pm", "SRV6PM_ARANGO_DATABASE": "lab"})
    assert (s.url, s.database, s.user, s.password) == ("https://db:8529", "lab", "pm", "s3cret")
    assert "s3cret" not in repr(s)
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    s = ArangoSettings.from_args(env={"SRV6PM_ARANGO_PASSWORD_FILE": str(secret)})
    assert (s.url, s.database, s.user, s.password) == ("http://127.0.0.1:8529", "srv6pm", "root", "from-file")
    with pytest.raises(ConfigError, match="either SRV6PM_ARANGO_PASSWORD or SRV6PM_ARANGO_PASSWORD_FILE"):
        ArangoSettings.from_args(env={"SRV6PM_ARANGO_PASSWORD": "a", "SRV6PM_ARANGO_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigError, match="SRV6PM_ARANGO_PASSWORD_FILE=.*cannot read"):
        ArangoSettings.from_args(env={"SRV6PM_ARANGO_PASSWORD_FILE": str(tmp_path / "missing")})


def test_settings_flags_override_env_and_bad_values_are_named():
    import argparse
    parser = argparse.ArgumentParser()
    ArangoSettings.add_arguments(parser)
    args = parser.parse_args(["--arango-url", "http://flag:8529", "--arango-database", "flagdb"])
    s = ArangoSettings.from_args(args, env={"SRV6PM_ARANGO_URL": "http://env:8529", "SRV6PM_ARANGO_PASSWORD": "p"})
    assert (s.url, s.database) == ("http://flag:8529", "flagdb")
    with pytest.raises(ConfigError, match="SRV6PM_ARANGO_URL 'db:8529': must start with http"):
        ArangoSettings.from_args(env={"SRV6PM_ARANGO_URL": "db:8529", "SRV6PM_ARANGO_PASSWORD": "p"})
    with pytest.raises(ConfigError, match="ArangoDB database '1 bad'"):
        ArangoSettings.from_args(env={"SRV6PM_ARANGO_DATABASE": "1 bad", "SRV6PM_ARANGO_PASSWORD": "p"})


def test_arango_graph_names_an_unreachable_url(free_port):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(g.GraphStoreError, match=rf"^ArangoDB {url}: cannot connect: "):
        ArangoGraph(url, "srv6pm", "root", "pw", retries=0, timeout_s=2)


class _Refusing(http.server.BaseHTTPRequestHandler):
    """FAKE ArangoDB: answers every request 401 with ArangoDB's error body."""

    def _refuse(self):
        body = json.dumps({"error": True, "code": 401, "errorNum": 11, "errorMessage": "not authorized"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args):
        pass


def test_arango_graph_names_refused_credentials():
    """Against a FAKE HTTP server (ArangoDB cannot run here) that refuses like ArangoDB does."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(g.GraphStoreError, match=rf"^ArangoDB {url}: user 'pm': wrong user name or password"):
            ArangoGraph(url, "srv6pm", "pm", "wrong", retries=0, timeout_s=2)
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ segment loss onto the links


def seg(a, b, tx, rx, complete=True):
    return {"from": a, "to": b, "tx_packets": tx, "rx_packets": rx if complete else None,
            "lost_packets": tx - rx if complete else None, "complete": complete}


def loss_with_segments(segments, flow="f1", period=100):
    doc = loss(flow=flow, period=period)
    doc["segments"] = segments
    return doc


def link(store, key):
    return next(li for li in store.snapshot()["links"] if li["_key"] == key)


class CountingGraph(g.MemoryGraph):
    """MemoryGraph that counts document writes per collection."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.puts: dict[str, int] = {}

    def _put(self, collection, doc):
        self.puts[collection] = self.puts.get(collection, 0) + 1
        super()._put(collection, doc)


def test_the_latest_segment_loss_of_each_flow_goes_onto_its_links():
    store = CountingGraph(clock_ns=lambda: NOW)
    store.ensure()
    back = g.PathSpec("flow", "f9", "r4", "r1", ("r3", "r2"))
    store.sync_topology(topology(paths=[*topology().paths, back]))
    store.puts.clear()
    assert store.update_loss(loss_with_segments([seg("r1", "r2", 1000, 1000), seg("r2", "r3", 1000, 997),
                                                 seg("r3", "r4", 997, 997)])) == g.APPLIED
    # One write for the path edge and one per link: as batched as before, one document write each.
    assert store.puts == {g.PATHS: 1, g.LINKS: 3}
    entry = {"from": "r2", "to": "r3", "tx_packets": 1000, "rx_packets": 997, "lost_packets": 3, "complete": True,
             "period": 100, "period_start": "2025-11-24T16:00:00Z", "updated_at": "2025-11-24T16:00:00.123456789Z"}
    assert link(store, "r2--r3")["segment_loss"] == {"f1": entry}
    assert link(store, "r1--r2")["segment_loss"]["f1"]["lost_packets"] == 0
    assert link(store, "r1--r4")["segment_loss"] == {}  # f1 does not cross it
    assert path(store, "flow:f1")["loss"]["segments"][1] == seg("r2", "r3", 1000, 997)
    # The other direction of the same link: its own flow's entry, with its own from and to.
    store.update_loss(loss_with_segments([seg("r4", "r3", 50, 50), seg("r3", "r2", 50, 48), seg("r2", "r1", 48, 48)],
                                         flow="f9"))
    both = link(store, "r2--r3")["segment_loss"]
    assert sorted(both) == ["f1", "f9"]
    assert (both["f9"]["from"], both["f9"]["to"], both["f9"]["lost_packets"]) == ("r3", "r2", 2)


def test_segments_on_links_are_ordered_per_flow_and_incomplete_is_never_loss(graph):
    graph.update_loss(loss_with_segments([seg("r1", "r2", 10, 10), seg("r2", "r3", 10, 9)], period=101))
    assert graph.update_loss(loss_with_segments([seg("r1", "r2", 10, 0), seg("r2", "r3", 10, 0)], period=100)) == \
        g.STALE
    assert link(graph, "r2--r3")["segment_loss"]["f1"]["period"] == 101
    incomplete = seg("r2", "r3", 10, 0, complete=False)
    incomplete["lost_packets"] = 10  # even if a producer filled it in
    graph.update_loss(loss_with_segments([seg("r1", "r2", 10, 10), incomplete, seg("r3", None, 7, 0, False)],
                                         period=102))
    stored = link(graph, "r2--r3")["segment_loss"]["f1"]
    assert (stored["period"], stored["complete"], stored["lost_packets"], stored["tx_packets"]) == (102, False, None, 10)
    assert path(graph, "flow:f1")["loss"]["segments"][1]["lost_packets"] is None
    # A segment whose points are not the two ends of one link (r2 had no exporter) is on the path edge only.
    graph.update_loss(loss_with_segments([seg("r1", "r3", 10, 10), seg("r3", "r4", 10, 10)], period=103))
    assert link(graph, "r1--r2")["segment_loss"]["f1"]["period"] == 102
    assert link(graph, "r3--r4")["segment_loss"]["f1"]["period"] == 103
    assert [(s["from"], s["to"]) for s in path(graph, "flow:f1")["loss"]["segments"]] == [("r1", "r3"), ("r3", "r4")]


def test_a_result_without_segments_leaves_the_links_alone(graph):
    before = graph.snapshot()["links"]
    graph.update_loss(loss())
    assert graph.snapshot()["links"] == before
    assert "segments" not in path(graph, "flow:f1")["loss"]


def test_sync_keeps_segments_of_unchanged_flows_and_drops_those_of_rerouted_or_removed_ones(graph):
    f2 = g.PathSpec("flow", "f2", "r1", "r3", ("r2",))
    graph.sync_topology(topology(paths=[*topology().paths, f2]))
    graph.update_loss(loss_with_segments([seg("r1", "r2", 10, 10), seg("r2", "r3", 10, 9), seg("r3", "r4", 9, 9)]))
    graph.update_loss(loss_with_segments([seg("r1", "r2", 5, 5), seg("r2", "r3", 5, 5)], flow="f2"))
    assert sorted(link(graph, "r2--r3")["segment_loss"]) == ["f1", "f2"]
    assert graph.sync_topology(topology(paths=[*topology().paths, f2])) == {"added": 0, "changed": 0, "removed": 0}
    assert sorted(link(graph, "r2--r3")["segment_loss"]) == ["f1", "f2"]
    rerouted = g.PathSpec("flow", "f1", "r1", "r4", ("r2",), ("fcff:2::1", "fcff:4::100"))
    graph.sync_topology(topology(paths=[rerouted, topology().paths[1], f2]))
    assert sorted(link(graph, "r2--r3")["segment_loss"]) == ["f2"] and link(graph, "r3--r4")["segment_loss"] == {}
    graph.sync_topology(topology(paths=[rerouted, topology().paths[1]]))
    assert link(graph, "r2--r3")["segment_loss"] == {} and link(graph, "r1--r2")["segment_loss"] == {}


def test_a_batch_of_results_is_one_bulk_read_and_write_per_collection():
    """update_many: 300 results of 100 flows over 3 periods, out of order, give the same graph as one by one, in
    one _get_many and one _put_many per collection (ArangoDB: get_many and insert_many)."""
    MemoryGraph, Topology, NodeSpec, LinkSpec, PathSpec = g.MemoryGraph, g.Topology, g.NodeSpec, g.LinkSpec, g.PathSpec
    class Counting(MemoryGraph):
        def __init__(self):
            super().__init__(clock_ns=lambda: 1_000)
            self.calls = []

        def _get_many(self, collection, keys):
            self.calls.append(("get_many", collection))
            return super()._get_many(collection, keys)

        def _put_many(self, collection, docs):
            self.calls.append(("put_many", collection, len(docs)))
            return super()._put_many(collection, docs)

        def _put(self, collection, doc):
            self.calls.append(("put", collection))
            super()._put(collection, doc)

    nodes = tuple(NodeSpec(n) for n in ("r1", "r2"))
    topo = Topology(nodes, (LinkSpec("r1", "r2"),), tuple(PathSpec("flow", f"f{i}", "r1", "r2") for i in range(100)))
    seg = [{"from": "r1", "to": "r2", "tx_packets": 10, "rx_packets": 9, "lost_packets": 1, "complete": True}]
    results = [(records.LOSS, {**loss(f"f{i}", period), "segments": seg}) for period in (7, 9, 8) for i in range(100)]
    batched, single = Counting(), MemoryGraph(clock_ns=lambda: 1_000)
    for store in (batched, single):
        store.ensure()
        store.sync_topology(topo)
    batched.calls.clear()
    outcomes = batched.update_many(results)
    assert outcomes == [g.APPLIED] * 200 + [g.STALE] * 100
    assert [single.update_loss(r) for _, r in results] == outcomes
    assert batched.snapshot() == single.snapshot()
    assert batched.snapshot()["paths"][0]["loss"]["period"] == 9
    assert [c[:2] for c in batched.calls if c[0] != "put"] == [("get_many", g.PATHS), ("get_many", g.LINKS),
                                                                ("put_many", g.PATHS), ("put_many", g.LINKS)]


def liveness(raised, time_ns, session="s1", kind="liveness"):
    return records.Alarm(kind=kind, subject=session, direction=None, period=time_ns // 2_000_000_000,
                         period_start="2025-11-24T16:00:00Z", period_s=2.0, value=3, threshold=3, raised=raised,
                         time_ns=time_ns, last_reply_ns=time_ns - 60_000_000, sender="r1", reflector="r4").to_dict()


def test_a_liveness_alarm_marks_the_session_s_path_edge_down_then_up(graph):
    assert path(graph, "stamp:s1")["alive"] is None and path(graph, "stamp:s1")["liveness"] is None
    graph.update_delay(delay(period=100, mean=20_000.0))
    assert graph.update_liveness(liveness(True, NOW)) == g.APPLIED
    s1 = path(graph, "stamp:s1")
    assert s1["alive"] is False and s1["delay_us"] is None  # a down path is no route
    assert s1["liveness"] == {"up": False, "time_ns": NOW, "at": g.rfc3339_ns(NOW), "last_reply_ns": NOW - 60_000_000,
                              "count": 3, "threshold": 3, "updated_at": g.rfc3339_ns(NOW)}
    assert graph.lowest_delay_path("r1", "r4") is None
    graph.update_delay(delay(period=101, mean=20_000.0))  # a period measured before the cut, arriving late
    assert path(graph, "stamp:s1")["delay_us"] is None
    assert graph.update_liveness(liveness(False, NOW - 1)) == g.STALE  # older than the stored change
    assert graph.update_liveness(liveness(False, NOW + 1)) == g.APPLIED
    assert path(graph, "stamp:s1")["alive"] is True
    graph.update_delay(delay(period=102, mean=20_000.0))
    assert path(graph, "stamp:s1")["delay_us"] == 20_000.0
    assert graph.update_liveness(liveness(True, NOW, session="s9")) == g.UNKNOWN
    assert graph.stats["liveness"] == 2


def test_only_liveness_alarms_go_onto_the_graph(graph):
    other = liveness(True, NOW, kind="loss_ratio")  # to_dict() leaves out the liveness members
    with pytest.raises(g.GraphError, match="only liveness alarms"):
        graph.update_liveness(other)
    with pytest.raises(records.RecordError):
        graph.update_liveness({**liveness(True, NOW), "time_ns": "soon"})


def test_a_changed_route_drops_the_path_s_liveness(graph):
    graph.update_liveness(liveness(True, NOW))
    graph.sync_topology(topology())
    assert path(graph, "stamp:s1")["alive"] is False  # same route: kept
    moved = topology(paths=[g.PathSpec("stamp", "s1", "r1", "r4", ("r2",), ("fcff:2::1",), return_via=("r2",))])
    graph.sync_topology(moved)
    assert path(graph, "stamp:s1")["alive"] is None and path(graph, "stamp:s1")["liveness"] is None


def test_decoded_results_are_stored_without_being_validated_again_raw_ones_are_validated(monkeypatch):
    """update_many takes the records srv6pm.decode gives (what the results consumer hands over: their schema was
    checked when they were decoded) as they are, and validates results in their JSON form; both give the same
    graph, and a bad JSON-form result is refused before anything of its batch is stored."""
    from srv6pm import decode
    raw = [(records.LOSS, loss("f1", 100)), (records.DELAY, delay("s1", 100)), (records.LOSS, loss("f1", 99))]
    decoded = [(topic, decode.decode(topic, records.encode(r))) for topic, r in raw]
    assert all(isinstance(r, (LossResult, DelayResult)) for _, r in decoded)
    checked = []
    validate = records.validate
    monkeypatch.setattr(g.records, "validate", lambda topic, obj: checked.append(topic) or validate(topic, obj))
    stores = []
    for batch in (decoded, raw):
        store = g.MemoryGraph(clock_ns=lambda: 1_000)
        store.ensure()
        store.sync_topology(topology())
        assert store.update_many(batch) == [g.APPLIED, g.APPLIED, g.STALE]
        stores.append(store)
    assert checked == [records.LOSS, records.DELAY, records.LOSS]  # the JSON-form batch only
    assert stores[0].snapshot() == stores[1].snapshot()
    bad = {**loss("f2", 101), "tx_packets": -1}
    with pytest.raises(records.RecordError):
        stores[0].update_many([(records.LOSS, loss("f1", 101)), (records.LOSS, bad)])
    assert path(stores[0], "flow:f1")["loss"]["period"] == 100
    with pytest.raises(g.GraphError, match="LossResult"):
        stores[0].update_many([(records.LOSS, decoded[1][1])])  # a delay result is no loss result
