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
