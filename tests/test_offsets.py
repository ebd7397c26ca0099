from hypothesis import given, settings
from hypothesis import strategies as st

from srv6pm.processor.offsets import OffsetTracker


def test_commit_position_waits_for_the_oldest_unfinished_record():
    t = OffsetTracker()
    for off in range(5):
        t.seen(0, off)
    assert t.committable() == {0: 0}
    t.finished(0, 1)
    t.finished(0, 2)
    assert t.committable() == {0: 0}
    t.finished(0, 0)
    assert t.committable() == {0: 3}
    t.finished(0, 4)
    assert t.committable() == {0: 3}
    t.finished(0, 3)
    assert t.committable() == {0: 5}


def test_partitions_are_independent_and_forgettable():
    t = OffsetTracker()
    t.seen(0, 10)
    t.seen(1, 20)
    t.finished(1, 20)
    assert t.committable() == {0: 10, 1: 21}
    t.forget([0])
    assert t.committable() == {1: 21}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.lists(st.integers(0, 60), max_size=12),
                          st.lists(st.integers(0, 60), max_size=12).map(lambda xs: sorted(set(xs)))), max_size=6),
       st.data())
def test_seen_all_is_seen_of_each(polls, data):
    """Polls in order (the appended fast path) or not (pushed one by one) give the positions one at a time gives."""
    bulk, single = OffsetTracker(), OffsetTracker()
    for offsets in polls:
        bulk.seen_all(0, offsets)
        for offset in offsets:
            single.seen(0, offset)
        for offset in data.draw(st.lists(st.sampled_from(offsets), max_size=len(offsets))) if offsets else ():
            bulk.finished(0, offset)
            single.finished(0, offset)
        assert bulk.committable() == single.committable()
