from srv6pm.processor.delay import DelayWindows, statistics
from srv6pm.records import StampSample

T = 1.0
P = 1_800_000_000  # a period index (T = 1 s)
BASE = P * 10**9


def sample(seq, t1_offset_ms, fwd_us=100, bwd_us=200, refl_us=10, lost=False, session="s1"):
    t1 = BASE + int(t1_offset_ms * 1e6)
    if lost:
        return StampSample(session, seq, T, t1, None, None, None, True, "r1", "r4")
    t2 = t1 + fwd_us * 1000
    t3 = t2 + refl_us * 1000
    t4 = t3 + bwd_us * 1000
    return StampSample(session, seq, T, t1, t2, t3, t4, False, "r1", "r4")


def test_statistics_nearest_rank_and_jitter():
    s = statistics([10_000, 30_000, 20_000, 40_000])  # ns, in sequence order
    assert s == {"min_us": 10.0, "mean_us": 25.0, "max_us": 40.0, "p50_us": 20.0, "p99_us": 40.0,
                 "jitter_us": 16.667}  # (20 + 10 + 20) / 3, rounded to the ns
    assert statistics([5000])["jitter_us"] is None
    assert statistics([]) == dict.fromkeys(("min_us", "mean_us", "max_us", "p50_us", "p99_us", "jitter_us"))


def test_window_closes_by_event_time_with_three_directions():
    w = DelayWindows(lateness_s=0.5, idle_s=10)
    assert w.add(sample(0, 100), "a", 0) == []
    assert w.add(sample(1, 600, fwd_us=300), "b", 0) == []
    assert w.add(sample(2, 900, lost=True), "c", 0) == []
    assert w.add(sample(3, 1400), "d", 0) == []  # next period, but not yet lateness past the end
    (out,) = w.add(sample(4, 1500), "e", 0)      # t1 = end + 0.5 s: period P closes
    assert out.tokens == ["a", "b", "c"]
    fwd, bwd, rtt = out.results
    assert [r.direction for r in out.results] == ["forward", "backward", "round_trip"]
    assert (fwd.period, fwd.samples, fwd.lost) == (P, 2, 1)
    assert (fwd.min_us, fwd.max_us, fwd.mean_us) == (100.0, 300.0, 200.0)
    assert (bwd.min_us, bwd.max_us) == (200.0, 200.0)
    assert (rtt.min_us, rtt.max_us) == (300.0, 500.0)  # excludes the reflector's 10 µs
    assert fwd.period_start == "2027-01-15T08:00:00Z"
    assert fwd.sender == "r1" and fwd.reflector == "r4"
    assert len(w) == 1


def test_idle_window_closes_by_wall_time_and_all_lost_has_null_stats():
    w = DelayWindows(lateness_s=1, idle_s=5)
    w.add(sample(0, 0, lost=True), "a", now=100)
    assert w.expire(now=104) == []
    (out,) = w.expire(now=105)
    r = out.results[0]
    assert (r.samples, r.lost, r.min_us, r.jitter_us) == (0, 1, None, None)


def test_sessions_are_independent_and_duplicates_handled():
    w = DelayWindows(lateness_s=0, idle_s=10)
    w.add(sample(0, 100, session="a"), 1, 0)
    assert w.add(sample(0, 100, session="a"), 2, 0)[0].tokens == [2]  # exact duplicate absorbed
    bad = w.add(sample(0, 100, fwd_us=5, session="a"), 3, 0)[0]
    assert "conflicting duplicate" in bad.rejected[3]
    assert w.add(sample(5, 1200, session="b"), 4, 0) == []  # b's progress does not close a's window
    assert [o.tokens for o in w.add(sample(6, 1100, session="a"), 5, 0)] == [[1]]


def test_the_delay_stage_s_run_path_is_add_of_each_sample():
    """DelayStage.take (DelayWindows.take: the usual sample taken inline) and the generic Stage.take (add() sample
    by sample) finish the same tokens and make the same results, with the same rejections, replays and windows left
    open."""
    import random

    from srv6pm.processor.stages import DelayStage, Stage

    rng = random.Random(7)
    run = []
    for seq in range(400):
        session = f"s{rng.randrange(3)}"
        kind = rng.random()
        if kind < 0.05 and run:  # an exact repeat, or a conflicting one, of an earlier sample
            earlier = rng.choice(run)
            run.append(earlier if rng.random() < 0.5 else StampSample(
                earlier.session, earlier.seq, earlier.period_s, earlier.t1, earlier.t2, earlier.t3,
                (earlier.t4 or earlier.t1) + 1, False, "r1", "r4"))
            continue
        s = sample(seq, seq * 40 + rng.randrange(400), fwd_us=rng.randrange(50, 500), lost=kind > 0.9, session=session)
        if 0.05 <= kind < 0.08:
            s = StampSample(s.session, s.seq, 2.0, s.t1, s.t2, s.t3, s.t4, s.lost, "r1", "r4")  # another period length
        elif 0.08 <= kind < 0.1 and not s.lost:
            s = StampSample(s.session, s.seq, T, s.t1, None, None, s.t4, False, "r1", "r4", impossible_timestamps=True)
        run.append(s)
    # A late sample of an earlier period after one taken inline: the watermark the inline one raised closes its
    # window at once (lateness 0.3 s: 1.9 s is 0.9 s past the end of period P).
    run += [sample(1000, 1100, session="s9"), sample(1001, 1900, session="s9"), sample(1002, 500, session="s9")]
    tokens = [("t", 0, i) for i in range(len(run))]
    outs = []
    added = []  # the samples that went through add()
    for take in (DelayStage.take, Stage.take):
        stage = DelayStage(0.3, 30.0)
        add = stage.add
        stage.add = lambda sample, *rest: added.append((take, sample)) or add(sample, *rest)  # type: ignore
        closed = {("s1", P + 2)}
        published = {("s2", P + 3): b"{}"}
        got, restored, replayed = take(stage, run, tokens, 1.0, closed, published)
        outcomes = [(o.tokens, o.results, o.rejected) for o in got]
        outs.append((outcomes, restored, replayed, sorted(stage.pending_tokens()), sorted(closed)))
    assert outs[0] == outs[1]
    inline = len(run) - sum(t is DelayStage.take for t, _ in added)
    assert 200 < inline < len(run)  # inline: most samples, not all
    assert sum(t is Stage.take for t, _ in added) > inline  # the generic path: every sample not replayed
    outcomes, restored, replayed, pending, _ = outs[0]
    assert sum(len(o[1]) for o in outcomes) > 30 and any(o[2] for o in outcomes) and restored and replayed and pending
