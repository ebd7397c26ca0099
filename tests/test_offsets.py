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
