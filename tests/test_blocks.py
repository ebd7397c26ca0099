from srv6pm.exporter.blocks import Baselines, Block


def test_first_reading_of_each_colour_is_only_a_baseline():
    b = Baselines()
    assert b.advance("ingress", 0, 10, "g1", {"f1": (100, 1000)}) == []
    assert b.advance("ingress", 1, 11, "g1", {"f1": (50, 500)}) == []
    assert b.advance("ingress", 0, 12, "g1", {"f1": (130, 1300)}) == [Block("f1", 30, 300)]
    assert b.advance("ingress", 1, 13, "g1", {"f1": (50, 500)}) == [Block("f1", 0, 0)]


def test_roles_are_separate():
    b = Baselines()
    b.advance("ingress", 0, 10, "g", {"f1": (1, 1)})
    assert b.advance("egress", 0, 12, "g", {"f1": (5, 5)}) == []


def test_missed_guard_read_rebaselines_instead_of_merging_two_blocks():
    b = Baselines()
    b.advance("egress", 0, 10, "g", {"f1": (100, 100)})
    # period 12 was not read; the counters now hold periods 12 and 14
    assert b.advance("egress", 0, 14, "g", {"f1": (300, 300)}) == []
    assert b.advance("egress", 0, 16, "g", {"f1": (350, 350)}) == [Block("f1", 50, 50)]


def test_recreated_counters_rebaseline():
    b = Baselines()
    b.advance("egress", 0, 10, "gen-1", {"f1": (100, 100)})
    assert b.advance("egress", 0, 12, "gen-2", {"f1": (150, 150)}) == []


def test_counter_going_backwards_is_not_exported_and_new_flows_start_with_a_baseline():
    b = Baselines()
    b.advance("egress", 0, 10, "g", {"f1": (100, 100), "f2": (5, 5)})
    out = b.advance("egress", 0, 12, "g", {"f1": (90, 90), "f2": (8, 8), "f3": (1, 1)})
    assert out == [Block("f2", 3, 3)]


def test_baselines_survive_a_restart_through_the_state_file(tmp_path):
    path = tmp_path / "state.json"
    b = Baselines(path)
    b.advance("ingress", 0, 10, "g", {"f1": (100, 1000)})
    b.advance("ingress", 1, 11, "g", {"f1": (7, 70)})
    b.save()
    again = Baselines(path)  # the exporter restarted within the period
    assert again.advance("ingress", 0, 12, "g", {"f1": (160, 1600)}) == [Block("f1", 60, 600)]
    # ... but a restart that lost its state file only rebaselines (no invented loss)
    path.unlink()
    fresh = Baselines(path)
    assert fresh.advance("ingress", 1, 13, "g", {"f1": (17, 170)}) == []


def test_corrupt_state_file_starts_clean(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    b = Baselines(path)
    assert b.advance("ingress", 0, 10, "g", {"f1": (1, 1)}) == []


def test_forgetting_all_readings_rebaselines_every_role_and_colour_and_is_saved_at_once(tmp_path):
    """After a counting gap (a tc filter handed over to tcx) no block spans the gap, even across a crash."""
    path = tmp_path / "state.json"
    b = Baselines(path)
    for role in ("ingress", "transit"):
        b.advance(role, 0, 10, "g", {"f1": (100, 1000)})
        b.advance(role, 1, 11, "g", {"f1": (7, 70)})
    b.save()
    b.forget_all()
    again = Baselines(path)  # no save() after forget_all: the state file already has no readings
    for x in (b, again):
        assert x.advance("ingress", 0, 12, "g", {"f1": (160, 1600)}) == []
        assert x.advance("transit", 1, 13, "g", {"f1": (9, 90)}) == []
        assert x.advance("ingress", 0, 14, "g", {"f1": (170, 1700)}) == [Block("f1", 10, 100)]
