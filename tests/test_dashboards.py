"""The committed dashboard JSON: current, complete, on the right datasource.

These check the JSON that Grafana loads; whether Grafana itself renders it
cannot be tested here (no Grafana on these machines). That every query runs
and returns the right numbers is tests/test_dashboard_queries.py.
"""

import json
import shutil

import pytest

from srv6pm import cli
from srv6pm.dashboards import generate
from srv6pm.dashboards.common import DATASOURCE_UID
from srv6pm.dashboards.panels import GRAFANA_MACROS, interpolate, panels, queries, variable_names, variables_used

UIDS = ("srv6pm-overview", "srv6pm-flow", "srv6pm-delay", "srv6pm-pipeline")


def committed():
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(generate.JSON_DIR.glob("*.json"))}


def test_committed_json_equals_a_fresh_generation():
    fresh = generate.build_all()
    assert sorted(fresh) == sorted(f"{uid}.json" for uid in UIDS)
    stale = [str(p) for p in generate.stale()]
    assert not stale, f"stale dashboards (run 'srv6pm dashboards generate' and commit): {stale}"
    for name, text in fresh.items():
        assert (generate.JSON_DIR / name).read_text(encoding="utf-8") == text


def test_generation_is_deterministic_sorted_and_indented():
    first, second = generate.build_all(), generate.build_all()
    assert first == second
    for text in first.values():
        doc = json.loads(text)
        assert text == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("name", [f"{uid}.json" for uid in UIDS])
def test_every_panel_has_an_influxql_query_on_the_srv6pm_datasource(name):
    doc = committed()[name]
    assert doc["uid"] == name[:-5]
    all_panels = list(panels(doc))
    assert all_panels
    ids = [p["id"] for p in all_panels]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    for panel in all_panels:
        assert panel["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["gridPos"]["w"] > 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
            assert target["rawQuery"] is True and target["query"].startswith("SELECT "), target
            assert "$timeFilter" in target["query"], f"{panel['title']!r} ignores the time range"
            assert 'FROM "' in target["query"]


@pytest.mark.parametrize("name", [f"{uid}.json" for uid in UIDS])
def test_every_variable_used_is_defined_and_query_variables_use_the_datasource(name):
    doc = committed()[name]
    defined = variable_names(doc)
    for panel, target in queries(doc):
        missing = variables_used(target["query"]) - defined - set(GRAFANA_MACROS)
        assert not missing, f"{panel['title']!r} uses undefined variables {missing}"
        # and the panel titles' variables too (Grafana expands them)
        assert not variables_used(panel["title"]) - defined, panel["title"]
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
            assert variable["query"].startswith("SHOW TAG VALUES FROM ")
        else:
            assert variable["type"] == "textbox" and variable["current"]["value"] == variable["query"]


def test_the_detail_dashboards_have_their_variables():
    docs = committed()
    assert variable_names(docs["srv6pm-flow.json"]) == {"flow"}
    assert variable_names(docs["srv6pm-delay.json"]) == {"session"}
    assert variable_names(docs["srv6pm-overview.json"]) == {"loss_threshold", "p99_threshold_us"}


def test_interpolate_expands_grafanas_macros_and_variables():
    q = 'SELECT sum("x") * 1000 / $__interval_ms FROM "m" WHERE "f" = \'$flow\' AND $timeFilter GROUP BY time($__interval)'
    assert interpolate(q, {"flow": "f1"}, 1000, 2000, 10) == (
        'SELECT sum("x") * 1000 / 10000 FROM "m" WHERE "f" = \'f1\' AND time >= 1000ms and time <= 2000ms '
        'GROUP BY time(10s)')
    assert "time(500ms)" in interpolate("GROUP BY time($__interval)", {}, 0, 1, 0.5)
    with pytest.raises(KeyError, match=r"\$flow"):
        interpolate("WHERE f = '${flow}'", {}, 0, 1, 1)


def test_generate_check_lists_stale_files_and_exits_1(tmp_path, capsys):
    out = tmp_path / "json"
    assert cli.main(["dashboards", "generate", "--out", str(out), "--check"]) == 1
    err = capsys.readouterr().err
    assert all(f"stale: {out / f'{uid}.json'}" in err for uid in UIDS), err
    assert cli.main(["dashboards", "generate", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{uid}.json" for uid in UIDS)
    assert cli.main(["dashboards", "generate", "--out", str(out), "--check"]) == 0
    # a hand edit and a dashboard's file that no dashboard makes any more are both stale; another file in the
    # folder (a provisioning folder's other dashboard) is not this command's
    shutil.copy(out / "srv6pm-flow.json", out / "srv6pm-old.json")
    (out / "other.json").write_text("{}\n")
    (out / "srv6pm-delay.json").write_text("{}\n")
    capsys.readouterr()
    assert cli.main(["dashboards", "generate", "--out", str(out), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"stale: {out / 'srv6pm-delay.json'}" in err and f"stale: {out / 'srv6pm-old.json'}" in err
    assert "srv6pm-flow.json" not in err and "other.json" not in err
    assert f"run 'srv6pm dashboards generate --out {out}'" in err
    assert cli.main(["dashboards", "generate", "--out", str(out)]) == 0  # does what the hint says
    assert f"removed {out / 'srv6pm-old.json'}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{uid}.json" for uid in UIDS), "other.json"])
    assert cli.main(["dashboards", "generate", "--out", str(out), "--check"]) == 0


def test_generate_refuses_a_file_as_the_output_folder(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert cli.main(["dashboards", "generate", "--out", str(target)]) == 2
    assert f"--out {target}: not a folder" in capsys.readouterr().err


SEGMENT_PANEL = "Lost packets per segment (from → to) per period"


def test_the_flow_dashboard_shows_segment_loss_with_the_writers_names():
    from srv6pm.influx_schema import SEGMENT_LOSS
    doc = committed()["srv6pm-flow.json"]
    ((panel, target),) = [(p, t) for p, t in queries(doc) if p["title"] == SEGMENT_PANEL]
    q = target["query"]
    assert f'FROM "{SEGMENT_LOSS.measurement}"' in q and "\"flow\" = '$flow'" in q
    assert f'"{SEGMENT_LOSS.complete}" = true' in q  # an incomplete segment is never shown as loss
    assert q.endswith(f'GROUP BY "{SEGMENT_LOSS.from_node}", "{SEGMENT_LOSS.to_node}"')
    assert target["alias"] == "$tag_from → $tag_to"


@pytest.mark.services
def test_the_segment_panel_query_returns_the_complete_segments_written_by_the_processor(influxdb):
    import uuid

    from srv6pm.config import InfluxSettings
    from srv6pm.influx import InfluxWriter, influxql
    from srv6pm.processor.store import segment_points
    from srv6pm.records import LossResult, Segment

    name = "t" + uuid.uuid4().hex[:12]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    settings = InfluxSettings(url=influxdb.url, bucket=name)

    def result(flow, period, segments):
        return LossResult(flow=flow, period=period, period_start="", period_s=1.0, ingress="r1", egress="r3",
                          tx_packets=None, rx_packets=None, tx_bytes=None, rx_bytes=None, lost_packets=None,
                          loss_ratio=None, complete=False, segments=tuple(segments))

    writer = InfluxWriter(settings)
    try:
        writer.write(segment_points(result("f1", 1000, [Segment("r1", "r2", 10, 9, 1, True),
                                                        Segment("r2", "r3", 9, 9, 0, True)]))
                     + segment_points(result("f1", 1001, [Segment("r1", "r2", 10, None, None, False),
                                                          Segment("r2", "r3", None, 7, None, False)]))
                     + segment_points(result("f2", 1000, [Segment("r1", "r2", 5, 0, 5, True)])))
    finally:
        writer.close()
    ((_, target),) = [(p, t) for p, t in queries(committed()["srv6pm-flow.json"]) if p["title"] == SEGMENT_PANEL]
    (res,) = influxql(settings, interpolate(target["query"], {"flow": "f1"}, 0, 2_000_000, 1.0))
    got = {(s["tags"]["from"], s["tags"]["to"]): s["values"] for s in res["series"]}
    assert got == {("r1", "r2"): [[1000 * 10**9, 1]], ("r2", "r3"): [[1000 * 10**9, 0]]}


DIRECTION_PANELS = ("Lost forward (sender → reflector)", "Lost backward (reflector → sender)",
                    "Periods with lost test packets", "Lost test packets per direction per period")


@pytest.mark.services
def test_the_delay_dashboard_shows_where_test_packets_were_lost_and_never_an_unknown_direction_as_0(influxdb):
    """The processor's delay points of a session with Direct Measurement (a period split 2 forward + 1
    backward, one whose split is not known, one with a lost packet in neither direction, one without loss)
    and of a session without it, through the delay dashboard's loss panels."""
    import uuid

    from srv6pm.config import InfluxSettings
    from srv6pm.influx import InfluxWriter, influxql
    from srv6pm.processor.store import delay_point
    from srv6pm.records import DelayResult

    name = "t" + uuid.uuid4().hex[:12]
    influxql(InfluxSettings(url=influxdb.url), f'CREATE DATABASE "{name}"', database="_internal")
    settings = InfluxSettings(url=influxdb.url, bucket=name)
    periods = {"s1": [(1000, 3, 2, 1), (1001, 2, None, None), (1002, 1, 0, 0), (1003, 0, 0, 0)],
               "s2": [(1000, 4, None, None), (1001, 0, None, None)]}
    writer = InfluxWriter(settings)
    try:
        writer.write([delay_point(DelayResult(session, period, "", 1.0, direction, "r1", "r4", 10 - lost, lost,
                                              5.0, 6.0, 9.5, 6.0, 9.0, 0.5, lost_forward=fwd, lost_backward=bwd))
                      for session, rows in periods.items() for period, lost, fwd, bwd in rows
                      for direction in ("forward", "backward", "round_trip")])
    finally:
        writer.close()
    doc = committed()["srv6pm-delay.json"]

    def run(title, session):
        out = []
        for panel, target in queries(doc):
            if panel["title"] == title:
                (res,) = influxql(settings, interpolate(target["query"], {"session": session}, 0, 2_000_000, 1.0))
                out.append([row for s in res.get("series", []) for row in s["values"]])
        return out

    s = 10**9
    assert run(DIRECTION_PANELS[0], "s1") == [[[0, 2]]] and run(DIRECTION_PANELS[1], "s1") == [[[0, 1]]]
    assert run(DIRECTION_PANELS[2], "s1") == [[[0, 3]], [[0, 2]]]  # 3 periods lost packets, 2 say where
    assert run(DIRECTION_PANELS[3], "s1") == [
        [[1000 * s, 2, 1], [1002 * s, 0, 0], [1003 * s, 0, 0]],  # 1001: no bar, never a 0
        [[1000 * s, 3], [1001 * s, 2], [1002 * s, 1], [1003 * s, 0]]]
    # no Direct Measurement: nothing to show, never 0 ("not measured")
    assert run(DIRECTION_PANELS[0], "s2") == [[]] and run(DIRECTION_PANELS[1], "s2") == [[]]
    assert run(DIRECTION_PANELS[2], "s2") == [[[0, 1]], []]  # the stat shows its noValue "0"
    assert run(DIRECTION_PANELS[3], "s2") == [[], [[1000 * s, 4], [1001 * s, 0]]]
    no_value = {p["title"]: p["fieldConfig"]["defaults"]["noValue"] for p in panels(doc) if p["title"] in DIRECTION_PANELS[:3]}
    assert no_value == dict(zip(DIRECTION_PANELS[:3], ("not measured", "not measured", "0"), strict=True))
