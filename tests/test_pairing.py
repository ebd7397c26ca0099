from srv6pm import records
from srv6pm.processor.pairing import Pairing
from srv6pm.records import CounterRecord


def block(role, packets, period=100, flow="f1", node=None, period_s=2.0):
    node = node or {"ingress": "r1", "egress": "r4", "transit": "r2"}[role]
    return CounterRecord(node, flow, role, period, period_s, period % 2, packets, packets * 100)


def test_pairs_into_exact_loss_in_either_order():
    p = Pairing(wait_s=5)
    assert p.add(block("ingress", 1000), "a", now=0) is None
    out = p.add(block("egress", 999), "b", now=0.1)
    assert out.tokens == ["a", "b"]
    r = out.results[0]
    assert (r.tx_packets, r.rx_packets, r.lost_packets, r.complete) == (1000, 999, 1, True)
    assert r.loss_ratio == 1 / 1000
    assert (r.ingress, r.egress) == ("r1", "r4")
    assert len(p) == 0
    assert p.add(block("egress", 7, period=101), "c", 0) is None
    r = p.add(block("ingress", 7, period=101), "d", 0).results[0]
    assert r.lost_packets == 0 and r.loss_ratio == 0.0


def test_no_traffic_is_zero_loss_not_undefined():
    p = Pairing(wait_s=5)
    p.add(block("ingress", 0), "a", 0)
    r = p.add(block("egress", 0), "b", 0).results[0]
    assert (r.lost_packets, r.loss_ratio, r.complete) == (0, 0.0, True)


def test_more_received_than_sent_is_shown_not_hidden():
    p = Pairing(wait_s=5)
    p.add(block("ingress", 10), "a", 0)
    r = p.add(block("egress", 12), "b", 0).results[0]
    assert r.lost_packets == -2


def test_missing_partner_becomes_incomplete_never_loss():
    p = Pairing(wait_s=5)
    p.add(block("egress", 10, period=7), "eg", now=0)  # learn the egress node of f1
    p.add(block("ingress", 10, period=7), "in", now=0)
    p.add(block("ingress", 500), "x", now=10)
    assert p.expire(now=14.9) == []
    (out,) = p.expire(now=15)
    r = out.results[0]
    assert out.tokens == ["x"]
    assert r.complete is False and r.lost_packets is None and r.loss_ratio is None
    assert (r.tx_packets, r.rx_packets, r.missing) == (500, None, "egress")
    assert r.egress == "r4"  # remembered from an earlier period
    assert len(p) == 0


def test_flows_and_periods_are_kept_apart():
    p = Pairing(wait_s=5)
    p.add(block("ingress", 10, flow="f1"), 1, 0)
    p.add(block("ingress", 20, flow="f2"), 2, 0)
    p.add(block("ingress", 30, flow="f1", period=101), 3, 0)
    r = p.add(block("egress", 20, flow="f2"), 4, 0).results[0]
    assert (r.flow, r.lost_packets) == ("f2", 0)
    r = p.add(block("egress", 25, flow="f1", period=101), 5, 0).results[0]
    assert (r.flow, r.period, r.lost_packets) == ("f1", 101, 5)
    assert len(p) == 1


def test_exact_duplicate_is_absorbed_and_conflicting_one_rejected():
    p = Pairing(wait_s=5)
    p.add(block("ingress", 10), "a", 0)
    dup = p.add(block("ingress", 10), "a2", 0)
    assert dup.tokens == ["a2"] and dup.results == [] and not dup.rejected
    bad = p.add(block("ingress", 11), "a3", 0)
    assert bad.results == [] and "conflicting duplicate" in bad.rejected["a3"]
    assert p.add(block("egress", 10), "b", 0).results[0].lost_packets == 0


def test_period_length_mismatch_is_rejected():
    p = Pairing(wait_s=5)
    p.add(block("ingress", 10), "a", 0)
    out = p.add(block("egress", 10, period_s=5.0), "b", 0)
    assert "period_s" in out.rejected["b"]


def test_transit_blocks_need_no_result():
    p = Pairing(wait_s=5)
    out = p.add(block("transit", 10), "t", 0)
    assert out.tokens == ["t"] and out.results == [] and len(p) == 0


def test_drop_forgets_pending_blocks_of_revoked_partitions():
    p = Pairing(wait_s=5)
    p.add(block("ingress", 10), (0, 1), 0)
    p.add(block("ingress", 10, flow="f2"), (1, 1), 0)
    p.drop({(0, 1)})
    assert p.pending_tokens() == [(1, 1)]


# ---- counters with positions (ebpf data plane): ingress 0, transit 1..E-1, egress E --------------------------

PATH = ("r1", "r2", "r3", "r4")  # positions 0..3


def point(position, packets, period=100, flow="f1", path=PATH, flowmon_id=7, node=None, period_s=2.0):
    last = len(path) - 1
    role = "ingress" if position == 0 else "egress" if position == last else "transit"
    return CounterRecord(node or path[position], flow, role, period, period_s, period % 2, packets, packets * 100,
                         flowmon_id=flowmon_id, position=position)


def segs(result):
    return [(s.from_node, s.to_node, s.tx_packets, s.rx_packets, s.lost_packets, s.complete) for s in result.segments]


def test_a_single_lost_packet_shows_on_its_segment_and_nowhere_else():
    p = Pairing(wait_s=5)
    assert p.add(point(0, 1000), "in", 0) is None
    assert p.add(point(3, 999), "eg", 0) is None  # the ends are there, transits 1 and 2 are not yet
    assert p.add(point(2, 999), "t2", 0) is None
    out = p.add(point(1, 1000), "t1", 0)
    assert sorted(out.tokens) == ["eg", "in", "t1", "t2"]  # the transit blocks are consumed by the result
    (r,) = out.results
    assert (r.tx_packets, r.rx_packets, r.lost_packets, r.complete, r.flowmon_id) == (1000, 999, 1, True, 7)
    assert segs(r) == [("r1", "r2", 1000, 1000, 0, True), ("r2", "r3", 1000, 999, 1, True),
                       ("r3", "r4", 999, 999, 0, True)]
    assert len(p) == 0 and p.pending_tokens() == []


def test_complete_segments_sum_to_the_end_to_end_loss():
    path = ("a", "b", "c", "d", "e", "f")
    counts = [5000, 4990, 4990, 4700, 4699, 4650]  # negative and zero segments are possible too
    counts[2] = 4995  # b -> c shows -5: more out than in, shown, not hidden
    p = Pairing(wait_s=5)
    out = None
    for position in (5, 3, 0, 1, 4, 2):
        out = p.add(point(position, counts[position], path=path), position, 0)
    (r,) = out.results
    assert [s.lost_packets for s in r.segments] == [10, -5, 295, 1, 49]
    assert sum(s.lost_packets for s in r.segments) == r.lost_packets == 350
    assert [(s.from_node, s.to_node) for s in r.segments] == list(zip(path, path[1:]))


def test_two_points_only_give_one_segment_at_once():
    p = Pairing(wait_s=5)
    p.add(point(1, 10, path=("r1", "r4")), "eg", 0)
    r = p.add(point(0, 12, path=("r1", "r4")), "in", 0).results[0]
    assert segs(r) == [("r1", "r4", 12, 10, 2, True)] and r.lost_packets == 2


def test_a_missing_transit_makes_its_segments_incomplete_never_loss():
    p = Pairing(wait_s=5)
    p.add(point(0, 1000), "in", 0)
    p.add(point(1, 990), "t1", 0)
    p.add(point(3, 980), "eg", 0)  # position 2 (r3) never arrives
    assert p.expire(now=4.9) == []
    (out,) = p.expire(now=5)
    assert sorted(out.tokens) == ["eg", "in", "t1"]
    (r,) = out.results
    # End to end both ends are there: complete, as without positions.
    assert (r.lost_packets, r.complete, r.missing) == (20, True, None)
    assert segs(r) == [("r1", "r2", 1000, 990, 10, True), ("r2", None, 990, None, None, False),
                       (None, "r4", None, 980, None, False)]  # r3's node is not known: never seen
    assert len(p) == 0


def test_the_node_of_a_missing_transit_is_named_from_earlier_periods():
    p = Pairing(wait_s=5)
    for position in range(4):
        p.add(point(position, 10, period=98), position, 0)
    p.add(point(0, 10), "in", 1)
    p.add(point(3, 10), "eg", 1)
    (out,) = p.expire(now=6)
    assert [(s.from_node, s.to_node, s.complete) for s in out.results[0].segments] == \
        [("r1", "r2", False), ("r2", "r3", False), ("r3", "r4", False)]
    # Never seen at all: the node is unknown (None), not guessed.
    q = Pairing(wait_s=5)
    q.add(point(0, 10), "in", 0)
    q.add(point(3, 10), "eg", 0)
    (out,) = q.expire(now=5)
    assert [(s.from_node, s.to_node) for s in out.results[0].segments] == [("r1", None), (None, None), (None, "r4")]


def test_a_missing_end_is_incomplete_and_the_segments_known_are_still_listed():
    p = Pairing(wait_s=5)
    for position in range(4):  # an earlier period teaches the path
        p.add(point(position, 10, period=99), position, 0)
    p.add(point(0, 1000), "in", 1)
    p.add(point(1, 1000), "t1", 1)
    p.add(point(2, 996), "t2", 1)  # the egress (r4) never arrives
    (out,) = p.expire(now=6)
    (r,) = out.results
    assert (r.complete, r.missing, r.lost_packets, r.tx_packets, r.rx_packets) == (False, "egress", None, 1000, None)
    assert (r.ingress, r.egress) == ("r1", "r4")
    assert segs(r) == [("r1", "r2", 1000, 1000, 0, True), ("r2", "r3", 1000, 996, 4, True),
                       ("r3", "r4", 996, None, None, False)]
    # Without an earlier period the egress position is unknown: the list ends at the last point that arrived.
    q = Pairing(wait_s=5)
    q.add(point(1, 1000), "t1", 0)
    q.add(point(2, 998), "t2", 0)
    q.add(point(3, 998), "eg", 0)  # the ingress never arrives
    (r,) = q.expire(now=5)[0].results
    assert (r.complete, r.missing, r.tx_packets, r.rx_packets) == (False, "ingress", None, 998)
    assert segs(r) == [(None, "r2", None, 1000, None, False), ("r2", "r3", 1000, 998, 2, True),
                       ("r3", "r4", 998, 998, 0, True)]


def test_only_transit_blocks_make_an_incomplete_period_missing_both_ends():
    p = Pairing(wait_s=5)
    p.add(point(1, 500), "t1", 0)
    p.add(point(2, 499), "t2", 0)
    (out,) = p.expire(now=5)
    assert sorted(out.tokens) == ["t1", "t2"]
    (r,) = out.results
    assert (r.complete, r.missing, r.tx_packets, r.rx_packets, r.lost_packets) == (False, "both", None, None, None)
    assert segs(r) == [(None, "r2", None, 500, None, False), ("r2", "r3", 500, 499, 1, True)]


def test_transit_duplicates_follow_the_rules_of_the_ends():
    p = Pairing(wait_s=5)
    p.add(point(0, 10), "in", 0)
    p.add(point(1, 10), "t1", 0)
    dup = p.add(point(1, 10), "t1-again", 0)
    assert dup.tokens == ["t1-again"] and dup.results == [] and not dup.rejected
    bad = p.add(point(1, 9), "t1-other", 0)
    assert bad.tokens == ["t1-other"] and bad.results == []
    assert "conflicting duplicate transit position 1 block" in bad.rejected["t1-other"]
    other_node = p.add(point(1, 10, node="r9"), "t1-r9", 0)
    assert "conflicting duplicate" in other_node.rejected["t1-r9"]
    p.add(point(2, 10), "t2", 0)
    out = p.add(point(3, 10), "eg", 0)
    assert sorted(out.tokens) == ["eg", "in", "t1", "t2"] and out.results[0].lost_packets == 0
    assert [s.lost_packets for s in out.results[0].segments] == [0, 0, 0]


def test_blocks_that_contradict_the_period_are_rejected():
    p = Pairing(wait_s=5)
    p.add(point(0, 10), "in", 0)
    assert "flowmon_id 8 differs" in p.add(point(1, 10, flowmon_id=8), "x", 0).rejected["x"]
    assert "period_s" in p.add(point(1, 10, period_s=1.0), "y", 0).rejected["y"]
    p.add(point(3, 10), "eg", 0)
    late = p.add(CounterRecord("r5", "f1", "transit", 100, 2.0, 0, 10, 1000, flowmon_id=7, position=3), "z", 0)
    assert "transit position 3 of 'r5' is not before the egress position 3" in late.rejected["z"]
    q = Pairing(wait_s=5)
    q.add(point(2, 10), "t2", 0)
    short = q.add(CounterRecord("r4", "f1", "egress", 100, 2.0, 0, 10, 1000, flowmon_id=7, position=2), "e", 0)
    assert "egress position 2 of 'r4' is not after transit position 2" in short.rejected["e"]
    # Everything that was accepted is still pending, and nothing rejected is among its tokens.
    assert sorted(p.pending_tokens()) == ["eg", "in"] and q.pending_tokens() == ["t2"]


def test_records_without_positions_are_paired_exactly_as_before():
    p = Pairing(wait_s=5)
    p.add(block("ingress", 1000), "a", 0)
    assert p.add(block("transit", 990), "t", 0).tokens == ["t"]  # a transit without position: ignored
    r = p.add(block("egress", 990), "b", 0).results[0]
    assert (r.lost_packets, r.segments, r.flowmon_id) == (10, None, None)
    assert "segments" not in r.to_dict() and "flowmon_id" not in r.to_dict()
    p.add(block("ingress", 5, period=101), "c", 0)
    (out,) = p.expire(now=5)
    assert out.results[0].segments is None and out.results[0].missing == "egress"


def named(role, packets, period=100, flowmon_id=9):
    """A block of the nftables data plane driven by the collector: the flow's FlowMonID, no position."""
    b = block(role, packets, period)
    return CounterRecord(b.node, b.flow, b.role, b.period, b.period_s, b.color, b.packets, b.bytes,
                         flowmon_id=flowmon_id)


def test_ends_with_a_flowmon_id_and_no_position_pair_as_before_and_the_result_names_it():
    """Issue 8 point 1 with nftables: the loss result names the flow's FlowMonID, and without positions it is
    still the usual pair of two ends (a transit block ignored, no segments), complete or not."""
    p = Pairing(wait_s=5)
    assert p.add(named("egress", 990), "b", 0) is None
    assert p.add(named("transit", 990), "t", 0).tokens == ["t"]  # no position: no point of the path
    out = p.add(named("ingress", 1000), "a", 0)
    assert out.tokens == ["a", "b"] and len(p) == 0
    (r,) = out.results
    assert (r.tx_packets, r.rx_packets, r.lost_packets, r.complete, r.segments, r.flowmon_id) == \
        (1000, 990, 10, True, None, 9)
    assert r.to_dict()["flowmon_id"] == 9 and "segments" not in r.to_dict()
    records.validate(records.LOSS, r.to_dict())
    p.add(named("ingress", 5, period=101), "c", 0)
    (late,) = p.expire(now=5)
    (r,) = late.results
    assert (r.missing, r.lost_packets, r.segments, r.flowmon_id) == ("egress", None, None, 9)
    # One end named (an exporter run from its own file at the other): the pair still names the flow.
    p.add(block("ingress", 7, period=102), "d", 0)
    assert p.add(named("egress", 7, period=102), "e", 0).results[0].flowmon_id == 9


def test_drop_forgets_pending_transit_blocks_too():
    p = Pairing(wait_s=5)
    p.add(point(0, 10), (0, 1), 0)
    p.add(point(1, 10), (0, 2), 0)
    p.add(point(1, 10, flow="f2"), (1, 1), 0)
    assert sorted(p.pending_tokens()) == [(0, 1), (0, 2), (1, 1)]
    p.drop({(0, 2)})
    assert p.pending_tokens() == [(1, 1)]


def test_ends_without_positions_that_contradict_each_other_are_rejected_and_the_period_still_pairs():
    """The usual pair (two ends, no positions) takes a path of its own: the same refusals, the same result."""
    p = Pairing(wait_s=5)
    p.add(block("ingress", 10), "in", 0)
    assert p.add(block("egress", 9, period_s=1.0), "x", 0).rejected == {
        "x": "period_s 1 differs from the ingress block's 2 for flow 'f1' period 100"}
    bad = CounterRecord("r4", "f1", "egress", 100, 2.0, 0, 9, 900, flowmon_id=8)
    p.add(CounterRecord("r1", "f1", "ingress", 101, 2.0, 1, 10, 1000, flowmon_id=7), "in2", 0)
    assert "flowmon_id 8 differs from the period's other blocks' 7" in \
        p.add(bad.__class__(**{**bad.__dict__, "period": 101, "color": 1}), "y", 0).rejected["y"]
    assert p.add(block("ingress", 10), "again", 0).tokens == ["again"]  # the same block again: nothing to do
    out = p.add(block("egress", 9), "eg", 0)
    assert out.tokens == ["in", "eg"] and out.results[0].lost_packets == 1 and len(p) == 1


def _by_record(pairing, blocks, tokens, now, closed, published):
    """What Pairing.take must amount to: add() record by record, but for a record whose (flow, period) is
    made already (closed, or published), which is finished as it is."""
    outcomes, restored, replayed = [], [], 0
    for record, token in zip(blocks, tokens, strict=True):
        key = (record.flow, record.period)
        if key in closed or key in published:
            replayed += 1
            if key not in closed:
                restored.append(published[key])
            outcomes.append(([token], [], {}))
            continue
        outcome = pairing.add(record, token, now)
        if outcome is not None:
            closed.update((r.subject, r.period) for r in outcome.results)
            outcomes.append((outcome.tokens, outcome.results, outcome.rejected))
    return outcomes, restored, replayed


def _summary(outcomes):
    """Every token, result and rejection of some outcomes, with the partition each result goes to."""
    tokens = sorted(t for o in outcomes for t in o[0])
    results = sorted((o[0][0][1], r.flow, r.period, r.lost_packets, r.complete) for o in outcomes for r in o[1])
    rejected = sorted((t, reason) for o in outcomes for t, reason in o[2].items())
    return tokens, results, rejected


def test_take_of_a_run_is_add_of_each_record():
    """The run path (the usual pair inline, one outcome for the run) and add() record by record finish the same
    tokens and make the same results, for the same partitions, with the same rejections."""
    earlier = [block("ingress", 10, period=1, flow="x"), block("egress", 9, period=2, flow="y")]  # partition 1
    run = [
        block("ingress", 100, flow="a"), block("egress", 98, flow="a"),  # the usual pair
        block("egress", 98, flow="a"),  # repeated after its result was made: finished as it is
        block("egress", 9, period=1, flow="x"),  # pairs with partition 1's ingress: the result goes there
        block("ingress", 10, period=2, flow="y"),  # pairs with partition 1's egress: the result goes here
        block("ingress", 5, flow="b"), block("ingress", 6, flow="b"),  # a conflicting duplicate: rejected
        block("ingress", 5, flow="c"), block("egress", 5, flow="c", period_s=4.0),  # another period length
        block("transit", 5, flow="d"),  # no position: finished at once
        block("ingress", 7, flow="p"),  # published already: stored again
        block("ingress", 8, flow="q"), block("egress", 8, flow="q"),  # closed already (being written)
        block("egress", 1, flow="e"),  # waits for its ingress
    ]
    outs = []
    for take in (True, False):
        p = Pairing(wait_s=5)
        for i, record in enumerate(earlier):
            p.add(record, ("t", 1, i), 0)
        tokens = [("t", 0, i) for i in range(len(run))]
        closed, published = {("q", 100)}, {("p", 100): b"{}"}
        if take:
            got, restored, replayed = p.take(run, tokens, 1.0, closed, published)
            outcomes = [(o.tokens, o.results, o.rejected) for o in got]
        else:
            outcomes, restored, replayed = _by_record(p, run, tokens, 1.0, closed, published)
        pending = sorted(p.pending_tokens())
        outs.append((_summary(outcomes), restored, replayed, pending, sorted(closed)))
    assert outs[0] == outs[1]
    (tokens, results, rejected), restored, replayed, pending, _ = outs[0]
    assert [r[:3] for r in results] == [(0, "a", 100), (0, "y", 2), (1, "x", 1)]
    assert [t for t, _ in rejected] == [("t", 0, 6), ("t", 0, 8)]
    assert restored == [b"{}"] and replayed == 4
    assert pending == [("t", 0, 5), ("t", 0, 7), ("t", 0, 13)]


def test_expire_takes_the_oldest_periods_first_and_stops_at_the_first_still_waiting():
    """Periods wait in the order their first block came (the stages' clock never goes back): expire closes
    the expired ones oldest first and looks no further than the first one still within its wait."""
    p = Pairing(wait_s=5)
    for i, now in enumerate((0, 1, 2, 3)):
        p.add(block("ingress", 10, period=200 + i), f"t{i}", now=now)
    p.take([block("ingress", 10, period=300)], ["u"], now=4, closed=set(), published={})
    assert [o.tokens for o in p.expire(now=6.5)] == [["t0"], ["t1"]]
    assert len(p) == 3
    assert [o.tokens for o in p.expire(now=9)] == [["t2"], ["t3"], ["u"]]
    assert len(p) == 0


def test_a_clock_that_goes_back_still_expires_every_period_that_waited():
    """A caller whose ``now`` goes back (not the processor's stage clock) breaks the first-seen order: expire
    then looks at every pending period, so none that waited long enough is left behind a younger one."""
    p = Pairing(wait_s=5)
    p.add(block("ingress", 10, period=200), "young", now=10)
    p.add(block("ingress", 10, period=201), "old", now=1)  # earlier than the block before it
    assert [o.tokens for o in p.expire(now=7)] == [["old"]]
    assert len(p) == 1
