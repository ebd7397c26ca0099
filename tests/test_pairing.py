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
