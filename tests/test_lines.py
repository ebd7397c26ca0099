"""processor/lines.py against influxdb-client's Point on generated points."""

from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from srv6pm.processor.lines import line

names = st.text(min_size=0, max_size=6)
field_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                         st.sampled_from([0.0, 1.0, -0.0, 1e16, 1e-7, 2.5, float("nan"), float("inf")]))


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=6).filter(lambda m: not m.startswith("#")), st.dictionaries(names, st.one_of(st.none(), names)),
       st.dictionaries(names, field_values), st.integers(min_value=0, max_value=2**63))
def test_a_line_is_the_points_line(measurement, tags, fields, time_ns):
    point = Point(measurement)
    for key, value in tags.items():
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    point.time(time_ns, WritePrecision.NS)
    assert line(measurement, tags, fields, time_ns) == point.to_line_protocol()


def test_loss_and_segment_lines_write_what_the_schema_says():
    from srv6pm.processor.store import delay_lines, loss_lines
    complete = {"v": 1, "flow": "f 1", "period": 10, "period_start": "x", "period_s": 2.0, "ingress": "r1",
                "egress": "r4", "tx_packets": 10, "rx_packets": 9, "tx_bytes": 1000, "rx_bytes": 900,
                "lost_packets": 1, "loss_ratio": 0.1, "complete": True, "missing": None,
                "segments": [{"from": "r1", "to": "r2", "tx_packets": 10, "rx_packets": 9, "lost_packets": 1,
                              "complete": True},
                             {"from": "r2", "to": None, "tx_packets": 9, "rx_packets": None, "lost_packets": None,
                              "complete": False},
                             {"from": "r2", "to": "r4", "tx_packets": 9, "rx_packets": None, "lost_packets": None,
                              "complete": False}]}
    assert loss_lines(complete) == [
        "loss,egress=r4,flow=f\\ 1,ingress=r1 complete=true,loss_ratio=0.1,lost_packets=1i,rx_bytes=900i,"
        "rx_packets=9i,tx_bytes=1000i,tx_packets=10i 20000000000",
        "segment_loss,flow=f\\ 1,from=r1,to=r2 complete=true,lost_packets=1i,rx_packets=9i,tx_packets=10i 20000000000",
        "segment_loss,flow=f\\ 1,from=r2,to=r4 complete=false,tx_packets=9i 20000000000"]
    incomplete = {**complete, "egress": None, "rx_packets": None, "rx_bytes": None, "lost_packets": None,
                  "loss_ratio": None, "complete": False, "missing": "egress", "segments": None}
    assert loss_lines(incomplete) == [
        "loss,flow=f\\ 1,ingress=r1 complete=false,tx_bytes=1000i,tx_packets=10i 20000000000"]
    delay = {"v": 1, "session": "s1", "period": 10, "period_start": "x", "period_s": 2.0, "direction": "forward",
             "sender": "r1", "reflector": None, "samples": 0, "lost": 3, "min_us": None, "mean_us": None,
             "max_us": None, "p50_us": None, "p99_us": None, "jitter_us": None}
    assert delay_lines(delay) == ["delay,direction=forward,sender=r1,session=s1 lost=3i,samples=0i 20000000000"]
    directed = {**delay, "lost_forward": 2, "lost_backward": 1, "impossible_timestamps": 0}
    assert delay_lines(directed) == ["delay,direction=forward,sender=r1,session=s1 impossible_timestamps=0i,"
                                     "lost=3i,lost_backward=1i,lost_forward=2i,samples=0i 20000000000"]


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({
    "flow": st.text(min_size=1, max_size=5), "ingress": st.one_of(st.none(), st.text(max_size=4)),
    "egress": st.one_of(st.none(), st.text(max_size=4)),
    **{name: st.one_of(st.none(), st.integers(min_value=-10, max_value=10**12))
       for name in ("tx_packets", "rx_packets", "lost_packets", "tx_bytes", "rx_bytes")},
    "loss_ratio": st.one_of(st.none(), st.floats(allow_nan=False), st.just(0.0), st.just(1.0)),
    "complete": st.booleans(), "period": st.integers(0, 2**31), "period_s": st.sampled_from([1.0, 2.0, 0.5]),
}))
def test_the_written_out_loss_line_is_the_generic_one(doc):
    from srv6pm.processor.store import _loss, loss_lines
    assert loss_lines(doc) == [line(*_loss(doc))]


_figure = st.one_of(st.none(), st.floats(), st.integers(-10, 10**9), st.sampled_from([0.0, 50.0, 1e16, 0.013]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "session": st.text(min_size=1, max_size=5), "direction": st.sampled_from(["forward", "backward", "round_trip"]),
    "sender": st.one_of(st.none(), st.text(max_size=4)), "reflector": st.one_of(st.none(), st.text(max_size=4)),
    "samples": st.integers(0, 10**6), "lost": st.integers(0, 10**6),
    **{name: _figure for name in ("min_us", "mean_us", "max_us", "p50_us", "p99_us", "jitter_us")},
    "lost_forward": st.one_of(st.none(), st.integers(0, 9)), "lost_backward": st.one_of(st.none(), st.integers(0, 9)),
    "impossible_timestamps": st.integers(0, 9), "period": st.integers(0, 2**31),
    "period_s": st.sampled_from([1.0, 2.0, 0.5]),
}), max_size=4))
def test_the_written_out_delay_lines_are_the_generic_ones(docs):
    from srv6pm.processor.store import delay_lines, delay_lines_all
    assert delay_lines_all(docs) == [text for doc in docs for text in delay_lines(doc)]
