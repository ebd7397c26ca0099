"""Forward and backward loss from Direct Measurement counters (processor.direct_loss, processor.delay).

The samples are srv6pm.stamp records built by hand: what a sender publishes for a session whose
reflector fills in the RFC 8972 §4.5 counters (S_TxC, R_RxC, R_TxC) of every reply.
"""

from dataclasses import replace

from srv6pm.processor.delay import DelayWindows
from srv6pm.processor.direct_loss import direction_loss
from srv6pm.records import StampSample, decode_stamp

T = 1.0
BASE = 1_800_000_000 * 10**9


class Session:
    """A sender, a path and a reflector: ``send(seq, fate)`` with fate "ok", "forward" (lost on the way
    there), "backward" (reply lost) or "unsent" (a socket error); counts as the two ends would."""

    def __init__(self, counters=True):
        self.sent = self.rx = self.tx = 0
        self.counters = counters

    def send(self, seq: int, fate: str = "ok", at_ms: float | None = None) -> StampSample:
        t1 = BASE + int((seq * 100 if at_ms is None else at_ms) * 1e6)
        if fate != "unsent":
            self.sent += 1
        if fate in ("ok", "backward"):
            self.rx += 1
            self.tx += 1
        if fate != "ok":
            return StampSample("s", seq, T, t1, None, None, None, True, "r1", "r4")
        extra = dict(sender_tx=self.sent, reflector_rx=self.rx, reflector_tx=self.tx) if self.counters else {}
        return StampSample("s", seq, T, t1, t1 + 100_000, t1 + 110_000, t1 + 300_000, False, "r1", "r4", **extra)


def test_gaps_inside_a_period():
    s = Session()
    fates = ["ok", "forward", "forward", "ok", "backward", "ok", "unsent", "forward", "backward", "ok"]
    samples = [s.send(i, f) for i, f in enumerate(fates)]
    assert direction_loss(samples) == (3, 2)  # the unsent one is lost, but in neither direction
    # the same in a record, through JSON: the counters survive decoding
    assert [decode_stamp(x.to_json()) for x in samples] == samples


def test_no_counters_no_figures_and_no_loss_is_zero_only_with_counters():
    s = Session(counters=False)
    assert direction_loss([s.send(0), s.send(1, "forward"), s.send(2)]) is None
    assert direction_loss([s.send(3), s.send(4)]) is None
    t = Session()
    assert direction_loss([t.send(0), t.send(1)]) == (0, 0)


def test_loss_at_the_edges_needs_the_replies_around_the_period():
    s = Session()
    before = s.send(0)
    period = [s.send(1, "forward"), s.send(2), s.send(3, "backward")]
    after = s.send(4)
    assert direction_loss(period) is None                  # neither end known
    assert direction_loss(period, before) is None          # the reply after seq 3 not come yet
    assert direction_loss(period, before, after) == (1, 1)


def test_a_gap_across_periods_counts_only_when_its_split_is_known():
    s = Session()
    first = s.send(0)
    tail, head = [s.send(1, "forward"), s.send(2, "forward")], [s.send(3, "forward")]
    last = s.send(4)
    assert direction_loss([first, *tail], None, last) == (2, 0)   # all three were lost forward
    assert direction_loss([*head, last], first) == (1, 0)
    s = Session()
    first = s.send(0)
    tail, head = [s.send(1, "forward"), s.send(2, "backward")], [s.send(3, "backward")]
    last = s.send(4)
    assert direction_loss([first, *tail], None, last) is None     # mixed: how many of which in each period?
    assert direction_loss([*head, last], first) is None


def test_counters_that_go_back_are_not_believed():
    s = Session()
    a, lost, b = s.send(0), s.send(1, "forward"), s.send(2)
    restarted = replace(b, reflector_rx=1, reflector_tx=1)  # the reflector forgot the session
    assert direction_loss([a, lost, restarted]) is None
    assert direction_loss([a, lost, b]) == (1, 0)


def _two_periods(fates: list[str]) -> tuple[set, set]:
    """(lost, lost_forward, lost_backward) of the records of periods 0 and 1: 0.1 s per test packet."""
    w = DelayWindows(lateness_s=0.2, idle_s=100)
    s = Session()
    out = []
    for seq, fate in enumerate(fates):
        for outcome in w.add(s.send(seq, fate), seq, 0):
            out.extend(outcome.results)
    return tuple({(r.lost, r.lost_forward, r.lost_backward) for r in out if r.period == 1_800_000_000 + n}
                 for n in (0, 1))


def test_delay_windows_carry_the_replies_across_periods():
    # seq 8 and 9 lost forward in period 0, 10 backward in period 1: one mixed gap across the two
    assert _two_periods(["ok"] * 8 + ["forward", "forward", "backward"] + ["ok"] * 13) == (
        {(2, None, None)}, {(1, None, None)})
    # 8 forward and 9 backward (the gap ends with 10, in period 1), 11 backward
    assert _two_periods(["ok"] * 8 + ["forward", "backward", "ok", "backward"] + ["ok"] * 12) == (
        {(2, 1, 1)}, {(1, 0, 1)})


def test_unknown_direction_is_absent_from_the_record():
    s = Session()
    samples = [s.send(0, "forward"), s.send(1)]
    w = DelayWindows(lateness_s=0, idle_s=1)
    for i, x in enumerate(samples):
        w.add(x, i, 0)
    (outcome,) = w.expire(5)
    doc = outcome.results[0].to_dict()
    assert doc["lost"] == 1 and "lost_forward" not in doc and "lost_backward" not in doc  # no reply before
    w = DelayWindows(lateness_s=0, idle_s=1)
    for i, x in enumerate([s.send(2), s.send(3, "forward"), s.send(4)]):
        w.add(x, i, 0)
    (outcome,) = w.expire(5)
    assert [(r.to_dict()["lost_forward"], r.to_dict()["lost_backward"]) for r in outcome.results] == [(1, 0)] * 3


def test_impossible_timestamps_are_counted_and_left_out_of_one_way_figures():
    s = Session()
    good = s.send(0)
    odd = replace(s.send(1), t2=good.t1 - 9 * 365 * 86400 * 10**9, t3=good.t1 - 9 * 365 * 86400 * 10**9 + 10_000,
                  impossible_timestamps=True)
    assert decode_stamp(odd.to_json()) == odd
    w = DelayWindows(lateness_s=0, idle_s=1)
    w.add(good, 1, 0)
    w.add(odd, 2, 0)
    (outcome,) = w.expire(5)
    fwd, bwd, rtt = outcome.results
    assert (fwd.samples, fwd.impossible_timestamps, fwd.min_us, fwd.max_us) == (2, 1, 100.0, 100.0)
    assert (bwd.min_us, bwd.max_us) == (190.0, 190.0)
    assert rtt.max_us == 290.0 and rtt.min_us == 290.0  # t3 - t2 is still right: round trip kept


def test_replies_around_that_are_not_around_are_ignored():
    s = Session()
    a, lost, b, later = s.send(0), s.send(1, "forward"), s.send(2), s.send(3)
    assert direction_loss([lost, b], later) is None           # "before" that is after: unknown
    assert direction_loss([a, lost], None, a) is None          # "after" that is before: unknown
    assert direction_loss([a, lost], None, b) == (1, 0)

    u = Session()
    first = [u.send(0), u.send(1, "forward"), u.send(2)]
    second = [u.send(3, "forward", at_ms=1100), u.send(4, at_ms=1200)]

    def closed_first_period() -> DelayWindows:
        w = DelayWindows(lateness_s=0, idle_s=1)
        for token, x in enumerate(first):
            w.add(x, token, 0)
        assert len(w.expire(5)) == 1  # the session's last reply is now seq 2
        return w

    def next_period(w: DelayWindows) -> tuple:
        for token, x in enumerate(second, 30):
            w.add(x, token, 10)
        (outcome,) = w.expire(20)
        return outcome.results[0].lost_forward, outcome.results[0].lost_backward

    assert next_period(closed_first_period()) == (1, 0)  # seq 3 lost between seq 2 and seq 4
    w = closed_first_period()
    w.add(second[0], 3, 6)
    w.drop({3})  # the partition went elsewhere: its windows and the session's last reply are forgotten
    assert len(w) == 0
    assert next_period(w) == (None, None)  # when it comes back, seq 2 may no longer be the reply before


def test_the_delay_stage_counts_impossible_timestamps_in_its_metric():
    """A sample flagged impossible_timestamps is counted in srv6pm_stamp_impossible_timestamps
    (component processor) as the delay stage takes it; a plausible one is not."""
    from prometheus_client import CollectorRegistry

    from srv6pm import metrics
    from srv6pm.processor.stages import DelayStage

    registry = CollectorRegistry()
    metrics.get(registry)
    original = metrics.get
    stage = DelayStage(lateness_s=1.0, idle_s=5.0)
    good = Session().send(1)
    odd = replace(good, seq=2, t2=None, t3=None, impossible_timestamps=True)
    try:
        metrics.get = lambda registry_=None: original(registry)
        stage.add(good, ("t", 0, 1), 0.0)
        stage.add(odd, ("t", 0, 2), 0.0)
    finally:
        metrics.get = original
    assert registry.get_sample_value("srv6pm_stamp_impossible_timestamps_total",
                                     {"component": "processor", "session": "s"}) == 1.0
