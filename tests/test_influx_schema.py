"""The InfluxDB names are a public contract (dashboards, users' own queries): srv6pm.influx_schema must keep them."""

from dataclasses import asdict

from srv6pm.influx_schema import DELAY, EXPORTER, LOSS, PIPELINE, SEGMENT_LOSS
from srv6pm.processor.health import Health
from srv6pm.processor.store import delay_lines, loss_lines


def test_the_names_are_the_documented_ones():
    assert asdict(LOSS) == {
        "measurement": "loss", "flow": "flow", "ingress": "ingress", "egress": "egress", "tx_packets": "tx_packets",
        "rx_packets": "rx_packets", "lost_packets": "lost_packets", "tx_bytes": "tx_bytes", "rx_bytes": "rx_bytes",
        "loss_ratio": "loss_ratio", "complete": "complete"}
    assert asdict(SEGMENT_LOSS) == {
        "measurement": "segment_loss", "flow": "flow", "from_node": "from", "to_node": "to",
        "tx_packets": "tx_packets", "rx_packets": "rx_packets", "lost_packets": "lost_packets", "complete": "complete"}
    assert asdict(DELAY) == {name: name for name in (
        "session", "direction", "sender", "reflector", "samples", "lost", "min_us", "mean_us", "max_us", "p50_us",
        "p99_us", "jitter_us", "lost_forward", "lost_backward", "impossible_timestamps")} | {"measurement": "delay"}
    assert asdict(PIPELINE) == {name: name for name in (
        "component", "instance", "topic", "records_in", "records_out", "deadletters", "errors", "interval_s", "held_s",
        "lag")} | {"measurement": "pipeline"}
    assert asdict(EXPORTER) == {"measurement": "exporter", "node": "node", "instance": "instance",
                                "records": "records", "last_record_age_s": "last_record_age_s"}


def test_the_processor_writes_these_names():
    loss = {"flow": "f1", "ingress": "r1", "egress": "r4", "period": 7, "period_s": 1.0, "complete": True,
            "tx_packets": 10, "rx_packets": 9, "lost_packets": 1, "tx_bytes": 100, "rx_bytes": 90, "loss_ratio": 0.1}
    assert loss_lines(loss) == ["loss,egress=r4,flow=f1,ingress=r1 complete=true,loss_ratio=0.1,lost_packets=1i,"
                                "rx_bytes=90i,rx_packets=9i,tx_bytes=100i,tx_packets=10i 7000000000"]
    delay = {"session": "s1", "direction": "forward", "period": 7, "period_s": 1.0, "samples": 3, "lost": 0,
             "mean_us": 5.5}
    assert delay_lines(delay) == ["delay,direction=forward,session=s1 lost=0i,mean_us=5.5,samples=3i 7000000000"]
    health = Health("p1", ("srv6pm.counters",), 1.0)
    health.seen("r1", 99.0, 2)
    lines = [p.to_line_protocol() for p in health.points(100.0, {"srv6pm.counters": 4})]
    assert lines == [
        "pipeline,component=processor,instance=p1,topic=srv6pm.counters deadletters=0i,errors=0i,held_s=0,interval_s=0,lag=4i,"
        "records_in=0i,records_out=0i 100000000000",
        "exporter,instance=p1,node=r1 last_record_age_s=1,records=2i 100000000000"]
