"""STAMP path liveness: the miss/reply state machine, and a Session-Sender watching a real reflector on loopback.

The path is "cut" by closing the real Session-Reflector and restored by
starting a new one on the same port; no root needed. Everything is driven
from the session's own thread (the sample loop), so what is checked is the
order of outcomes and declarations, never how long they took.
"""

from __future__ import annotations

import threading
import time

import pytest

from srv6pm.stamp.liveness import (DEFAULT_DOWN_AFTER, DEFAULT_UP_AFTER, TIMEOUT_INTERVALS, LivenessSettings,
                                   PathState, miss_timeout)
from srv6pm.stamp.reflector import Reflector, ReflectorConfig
from srv6pm.stamp.sender import Sender, SenderConfig


# -- the state machine ------------------------------------------------------------------

def test_defaults_and_timeout_rule():
    assert (DEFAULT_DOWN_AFTER, DEFAULT_UP_AFTER, TIMEOUT_INTERVALS) == (3, 3, 3)
    assert LivenessSettings() == LivenessSettings(3, 3)
    assert miss_timeout(0.01, 2.0) == pytest.approx(0.03)
    assert miss_timeout(1.0, 0.5) == 0.5  # never later than the session's reply timeout


@pytest.mark.parametrize("field,value", [("down_after", 0), ("up_after", 0), ("down_after", 1001),
                                         ("up_after", True), ("down_after", 2.5)])
def test_settings_refuse_bad_counts(field, value):
    with pytest.raises(ValueError, match=f"liveness {field} .* not in 1..1000"):
        LivenessSettings(**{field: value})


def test_down_after_n_consecutive_misses_only():
    path = PathState(LivenessSettings(down_after=3, up_after=2))
    assert path.reply(100, 101) is None
    assert path.miss(200) is None and path.miss(300) is None
    assert path.reply(400, 401) is None  # a reply breaks the run
    assert path.miss(500) is None and path.miss(600) is None
    change = path.miss(700)
    assert change is not None and not change.up and not path.up
    assert (change.count, change.threshold, change.time_ns, change.last_reply_ns) == (3, 3, 700, 400)
    assert path.miss(800) is None  # already down: nothing more to say


def test_up_after_m_consecutive_replies_only():
    path = PathState(LivenessSettings(down_after=1, up_after=2))
    assert path.miss(10).up is False
    assert path.reply(20, 21) is None
    assert path.miss(30) is None  # a miss breaks the run of replies
    assert path.reply(40, 41) is None
    change = path.reply(50, 51)
    assert change.up and path.up and (change.count, change.threshold, change.last_reply_ns) == (2, 2, 50)
    assert path.reply(60, 61) is None


def test_no_reply_ever_has_no_last_reply():
    path = PathState(LivenessSettings(down_after=1))
    assert path.miss(5).last_reply_ns is None


def test_the_path_is_unknown_until_a_first_reply_makes_it_up_without_a_declaration():
    path = PathState(LivenessSettings(down_after=3, up_after=3))
    assert (path.up, path.state) == (None, "unknown")
    assert path.miss(10) is None and path.miss(20) is None and path.state == "unknown"
    assert path.reply(30, 31) is None  # first decision: up, not declared
    assert (path.up, path.state, path.last_reply_ns) == (True, "up", 30)
    assert path.miss(40) is None and path.miss(50) is None  # the misses before the reply do not count
    change = path.miss(60)
    assert change is not None and not change.up and path.state == "down" and change.count == 3


def test_a_path_that_never_answers_is_declared_down_after_the_usual_misses_and_up_when_it_answers():
    path = PathState(LivenessSettings(down_after=4, up_after=2))
    assert [path.miss(t) for t in (1, 2, 3)] == [None, None, None] and path.state == "unknown"
    change = path.miss(4)
    assert (change.up, change.count, change.threshold, change.time_ns, change.last_reply_ns) == (False, 4, 4, 4, None)
    assert path.state == "down"
    assert path.reply(5, 6) is None
    up = path.reply(7, 8)
    assert up.up and (up.count, up.threshold, up.last_reply_ns) == (2, 2, 7) and path.state == "up"


# -- a sender watching a real reflector ------------------------------------------------

def _settled(log: list) -> list:
    """The log with each declaration moved after the outcome it was made on.

    The sender declares a change while handling the packet that completes the
    run, before that packet's sample comes out of the iterator.
    """
    out, held = [], []
    for item in log:
        if isinstance(item, tuple):
            out.append(item)
            out.extend(held)
            held = []
        else:
            held.append(item)
    return out + held


def test_sender_declares_a_cut_path_down_then_up_again():
    interval = 0.05  # miss after 3 intervals = the sample timeout, so every miss is a lost sample at once
    r = Reflector(ReflectorConfig(bind="::1", port=0)).start()
    port = r.address[1]
    log: list = []  # ("R", t4) / ("L", None) per sample, and Change objects, in the session's order
    sender = Sender(SenderConfig(dest="::1", port=port, session="t", count=None, interval=interval,
                                 timeout=TIMEOUT_INTERVALS * interval, liveness=LivenessSettings(3, 2)),
                    on_liveness=log.append)
    assert sender.path_up is None and sender.path_state == "unknown"
    replies_after_up = 0
    try:
        for sample in sender.samples():
            log.append(("L", None) if sample.lost else ("R", sample.t4))
            changes = [c for c in log if not isinstance(c, tuple)]
            if r is not None and not changes and sum(1 for c in log if isinstance(c, tuple) and c[0] == "R") >= 5:
                r.close()  # cut
                r = None
            elif r is None and len(changes) == 1 and log[-1] == ("L", None) and log[-2] == ("L", None):
                assert sender.path_up is False
                r = Reflector(ReflectorConfig(bind="::1", port=port)).start()  # restore
            elif len(changes) == 2:
                replies_after_up += not sample.lost
                if replies_after_up >= 2:
                    sender.stop()
    finally:
        if r is not None:
            r.close()
    assert sender.path_up is True
    settled = _settled(log)
    changes = [(i, c) for i, c in enumerate(settled) if not isinstance(c, tuple)]
    assert [c.up for _, c in changes] == [False, True]
    (down_at, down), (up_at, up) = changes
    before_down = [c[0] for c in settled[:down_at]]
    assert before_down[-4:] == ["R", "L", "L", "L"]  # exactly 3 misses after the last reply
    assert "L" not in before_down[:-3]  # and no earlier misses: the path was up all along
    assert (down.count, down.threshold) == (3, 3)
    assert down.last_reply_ns == settled[down_at - 4][1]  # the arrival of the last good reply
    assert down.time_ns >= down.last_reply_ns
    between = [c[0] for c in settled[down_at + 1:up_at]]
    assert between[-3:] == ["L", "R", "R"]  # exactly 2 replies made it up
    assert (up.count, up.threshold) == (2, 2) and up.last_reply_ns == settled[up_at - 1][1]


def test_sender_without_liveness_reports_nothing():
    calls = []
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        sender = Sender(SenderConfig(dest="::1", port=r.address[1], count=3, interval=0.01, timeout=0.2),
                        on_liveness=calls.append)
        samples = list(sender.samples())
    assert sender.path_up is None and not calls and not any(s.lost for s in samples)


def test_unanswered_session_goes_down_once():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        port = r.address[1]  # a port nobody answers on once it is closed
    calls = []
    sender = Sender(SenderConfig(dest="::1", port=port, count=6, interval=0.01, timeout=0.03,
                                 liveness=LivenessSettings(down_after=2)), on_liveness=calls.append)
    samples = list(sender.samples())
    assert all(s.lost for s in samples) and len(samples) == 6
    assert len(calls) == 1 and not calls[0].up and calls[0].count == 2 and calls[0].last_reply_ns is None


def test_probes_sent_before_the_path_answers_raise_nothing_when_it_answers_within_the_reply_timeout():
    """The reflector starts only once more probes were sent unanswered than down_after (and well past their
    liveness timeout of 3 intervals): the path goes from unknown to up with no declaration at all."""
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        port = r.address[1]  # nobody answers on it until the reflector below starts
    calls: list = []
    sender = Sender(SenderConfig(dest="::1", port=port, session="t", count=None, interval=0.01, timeout=30.0,
                                 liveness=LivenessSettings(down_after=3, up_after=3)), on_liveness=calls.append)
    sent_before: list[int] = []
    late: list = []

    def start_reflector_late():
        while sender.stats().sent < 12:
            time.sleep(0.005)
        sent_before.append(sender.stats().sent)
        late.append(Reflector(ReflectorConfig(bind="::1", port=port)).start())

    starter = threading.Thread(target=start_reflector_late, daemon=True)
    starter.start()
    replies = 0
    try:
        for sample in sender.samples():
            assert sample.seq >= sent_before[0] - 1 and not sample.lost  # the early ones are still pending
            replies += 1
            if replies == 20:
                sender.stop()
    finally:
        starter.join(timeout=10)
        for reflector in late:
            reflector.close()
    assert sent_before[0] >= 12 and replies == 20
    assert calls == [] and sender.path_state == "up"


def test_a_session_that_never_answers_is_declared_down_after_down_after_misses_of_the_reply_timeout():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        port = r.address[1]
    calls: list = []
    sender = Sender(SenderConfig(dest="::1", port=port, count=8, interval=0.01, timeout=0.2,
                                 liveness=LivenessSettings(down_after=3)), on_liveness=calls.append)
    samples = list(sender.samples())
    assert len(samples) == 8 and all(s.lost for s in samples)
    assert [c.up for c in calls] == [False] and calls[0].count == 3 and calls[0].last_reply_ns is None
    assert sender.path_state == "down"
