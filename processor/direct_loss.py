"""Forward and backward loss of a STAMP session's test packets, from RFC 8972 Direct Measurement counters.

A reply that carries the counters (``srv6pm.stamp`` ``sender_tx``,
``reflector_rx``, ``reflector_tx``; :attr:`StampSample.counted`) tells, with
the reply before it, what happened to the test packets between the two (the
*gap*: all of them lost, as the two replies are consecutive ones). With
``i`` the earlier reply and ``j`` the later, ``k`` the packets between them
(by sequence number, modulo 2**32):

* forward = (S_TxC(j) - S_TxC(i)) - (R_RxC(j) - R_RxC(i)): packets sent that
  did not reach the reflector (``j`` itself did);
* backward = R_TxC(j) - R_TxC(i) - 1: replies sent that did not come back
  (``j``'s did);

both modulo 2**32. forward + backward <= k (a packet never sent, or received
and not answered, is in neither); counters that break that (a reflector that
restarted, reordering) make the gap unknown.

A period's figures add up its gaps. A gap whose packets all fall in the
period counts whole. A gap that spans periods counts only if its split is
known: all its packets lost forward, all backward, or none in either. A lost
packet without a counted reply on both sides (the reflector does not fill
the counters in, or the next reply had not come when the period closed) is
unknown. Unknown anywhere in the period: no figures at all (None), never
a guess, never zero. A period without loss has figures (0, 0) if any of its
replies carried counters, else None. Pure functions; no state.
"""

from __future__ import annotations

from srv6pm.records import StampSample

__all__ = ["direction_loss"]

_WRAP = 1 << 32


def direction_loss(samples: list[StampSample], before: StampSample | None = None,
                   after: StampSample | None = None) -> tuple[int, int] | None:
    """(lost forward, lost backward) of the test packets in ``samples`` (one period, by sequence number), or None.

    ``before``: the session's last reply before the period (None: not known); ``after``: its first reply
    after the period (None: none yet). Both only count if they carry counters.
    """
    lost = [s for s in samples if s.lost]
    if not lost:
        return (0, 0) if any(s.counted for s in samples) else None
    if before is not None and before.t1 >= samples[0].t1:
        before = None  # not before the period after all (a late sample reopened an old period)
    if after is not None and after.t1 <= samples[-1].t1:
        after = None
    replies = ([before] if before is not None else []) + [s for s in samples if not s.lost]
    replies += [after] if after is not None else []
    gaps: dict[tuple[int, int], int] = {}  # (index of the reply before, after) -> lost packets of the period
    position = 0
    for sample in samples:
        if not sample.lost:
            position += 1
            continue
        start = position if before is not None else position - 1  # replies[start] precedes this packet
        if start < 0 or start + 1 >= len(replies):
            return None
        gaps[(start, start + 1)] = gaps.get((start, start + 1), 0) + 1
    forward = backward = 0
    for (i, j), here in gaps.items():
        split = _gap(replies[i], replies[j])
        if split is None:
            return None
        total, fwd, bwd = split
        if here > total:  # more lost packets than sequence numbers between the replies: not one gap
            return None
        if here == total:
            forward, backward = forward + fwd, backward + bwd
        elif fwd == total:
            forward += here
        elif bwd == total:
            backward += here
        elif fwd or bwd:  # a mixed gap across periods: its split between them is not known
            return None
    return forward, backward


def _gap(i: StampSample, j: StampSample) -> tuple[int, int, int] | None:
    """(packets between, lost forward, lost backward) between consecutive replies ``i`` and ``j``."""
    if not (i.counted and j.counted):
        return None
    assert i.sender_tx is not None and i.reflector_rx is not None and i.reflector_tx is not None, \
        "counted: the three Direct Measurement counters come together (records.stamp_from)"
    assert j.sender_tx is not None and j.reflector_rx is not None and j.reflector_tx is not None, \
        "counted: the three Direct Measurement counters come together (records.stamp_from)"
    total = (j.seq - i.seq - 1) % _WRAP
    if total >= _WRAP // 2:  # j is not after i: no gap between them
        return None
    fwd = ((j.sender_tx - i.sender_tx) - (j.reflector_rx - i.reflector_rx)) % _WRAP
    bwd = (j.reflector_tx - i.reflector_tx - 1) % _WRAP
    if fwd + bwd > total:
        return None
    return total, fwd, bwd
