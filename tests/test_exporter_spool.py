"""The exporter's on-disk buffer of unpublished records (srv6pm.exporter.spool), on a real directory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.structs import TopicPartition

from srv6pm.exporter.spool import Spool, SpoolError, decode, encode
from srv6pm.publish import Send

sends_strategy = st.lists(st.builds(Send, st.sampled_from(["srv6pm.counters", "srv6pm.stamp", "t"]),
                                    st.one_of(st.none(), st.integers(0, 2**31 - 1)),
                                    st.one_of(st.none(), st.binary(max_size=50)), st.binary(max_size=500)),
                          max_size=30)


@settings(max_examples=200, deadline=None)
@given(sends_strategy)
def test_a_segment_decodes_to_the_records_it_was_made_of(sends):
    assert decode(encode(sends)) == sends


def test_a_cut_segment_is_an_error_naming_it():
    data = encode([Send("t", None, b"k", b"value")])
    with pytest.raises(SpoolError, match="^seg-7: truncated$"):
        decode(data[:-2], "seg-7")


def period(p: int, flows: int = 5) -> list[Send]:
    return [Send("t", None, b"f%d" % i, b"f%d:%06d" % (i, p)) for i in range(flows)]


def drain(spool: Spool) -> list[Send]:
    out = []
    while (head := spool.head()) is not None:
        name, sends = head
        out += sends
        spool.replace_head(name, [])
    return out


def test_records_come_back_in_order_after_a_reopen(tmp_path):
    spool = Spool(tmp_path, 10**6)
    for p in range(4):
        assert spool.append(period(p)) == 0
    name, head = spool.head()
    spool.replace_head(name, head[2:])  # two of the first period published
    reopened = Spool(tmp_path, 10**6)
    assert reopened.records == 18
    assert drain(reopened) == period(0)[2:] + period(1) + period(2) + period(3)
    assert not reopened and reopened.records == 0
    assert Spool(tmp_path, 10**6).records == 0


def test_beyond_the_bound_the_oldest_periods_are_dropped_and_counted(tmp_path):
    size = len(encode(period(0)))
    spool = Spool(tmp_path, 3 * size, segment_bytes=size)
    dropped = [spool.append(period(p)) for p in range(7)]
    assert dropped == [0, 0, 0, 5, 5, 5, 5]
    assert spool.bytes <= 3 * size
    assert drain(spool) == period(4) + period(5) + period(6)


def test_the_head_being_published_is_never_dropped(tmp_path):
    size = len(encode(period(0)))
    spool = Spool(tmp_path, 2 * size, segment_bytes=size)
    spool.append(period(0))
    spool.append(period(1))
    name, _ = spool.head()  # held: being published
    assert spool.append(period(2)) == 5  # period 1 made room
    spool.replace_head(name, [])
    assert drain(spool) == period(2)


def test_a_head_that_may_be_on_the_broker_already_is_not_dropped(tmp_path):
    size = len(encode(period(0)))
    spool = Spool(tmp_path, 2 * size, segment_bytes=size)
    spool.append(period(0))
    spool.set_floors({TopicPartition("t", 0): 12})
    spool.append(period(1))
    assert spool.append(period(2)) == 5
    assert Spool(tmp_path, 2 * size, segment_bytes=size).floors == {TopicPartition("t", 0): 12}
    assert drain(spool) == period(0) + period(2)


def test_a_large_write_is_cut_into_segments_so_only_its_oldest_part_makes_room(tmp_path):
    one = len(encode(period(0, flows=1)))
    spool = Spool(tmp_path, 10 * one, segment_bytes=2 * one)  # segments of two records (a header less than one)
    assert spool.append(period(0, flows=5)) == 0
    assert len(list(tmp_path.glob("*.seg"))) == 3
    assert spool.append(period(1, flows=12)) == 7  # 17 records, room for 10: the seven oldest go
    assert drain(spool) == period(1, flows=12)[2:]


def test_a_record_larger_than_the_bound_is_dropped(tmp_path):
    spool = Spool(tmp_path, 100)
    assert spool.append([Send("t", None, b"k", b"x" * 200)]) == 1
    assert spool.records == 0


def test_floors_keep_the_lowest_offset_and_survive_a_reopen(tmp_path):
    spool = Spool(tmp_path, 10**6)
    spool.set_floors({TopicPartition("t", 0): 40, TopicPartition("t", 1): 7})
    spool.set_floors({TopicPartition("t", 0): 50, TopicPartition("u", 0): 3})
    want = {TopicPartition("t", 0): 40, TopicPartition("t", 1): 7, TopicPartition("u", 0): 3}
    assert spool.floors == want and Spool(tmp_path, 10**6).floors == want
    spool.clear_floors()
    assert Spool(tmp_path, 10**6).floors == {}


def test_an_unfinished_write_is_ignored_and_an_unreadable_segment_is_dropped_and_counted(tmp_path):
    spool = Spool(tmp_path, 10**6)
    spool.append(period(0))
    spool.append(period(1))
    (tmp_path / ".0000000000000002.seg.abc").write_bytes(b"half a segment")
    first = sorted(tmp_path.glob("*.seg"))[0]
    first.write_bytes(first.read_bytes()[:-3])
    reopened = Spool(tmp_path, 10**6)
    assert not list(tmp_path.glob(".*"))
    assert drain(reopened) == period(1)
    assert reopened.discarded == 5


def test_a_file_that_is_no_segment_is_an_error_at_open(tmp_path):
    (tmp_path / "0000000000000000.seg").write_bytes(b"hello")
    with pytest.raises(SpoolError, match="not a spool segment"):
        Spool(tmp_path, 10**6)
