"""The processor's sensor: one call per event reaches the stats, the Prometheus series and the health points."""

from prometheus_client import CollectorRegistry

from srv6pm import metrics, records
from srv6pm.influx_schema import PIPELINE
from srv6pm.processor.health import Health
from srv6pm.processor.sensor import HealthPoints, Prometheus, Sensors, Stats

LOSS_STAGE = (records.COUNTERS, records.LOSS)


def sensors():
    registry = CollectorRegistry()
    stats, health = Stats(), Health("p1", (records.COUNTERS,), 10.0)
    return Sensors([stats, Prometheus(metrics.get(registry)), HealthPoints(health)]), stats, health, registry


def sample(registry, name, **labels):
    return registry.get_sample_value(name, {"component": "processor", **labels})


def pipeline_fields(health, now=100.0):
    health.due(now - 10)
    point = next(p for p in health.points(now) if p._name == PIPELINE.measurement)
    return point._fields


def test_one_batch_of_events_is_counted_once_by_every_sink():
    sensor, stats, health, registry = sensors()
    sensor.consumed(records.COUNTERS, 6)
    sensor.replayed(1)
    sensor.results(LOSS_STAGE, [1.5, 2.5], incomplete=1)
    sensor.deadlettered(records.COUNTERS, 2)
    sensor.alarms(3)
    sensor.error("store", [records.COUNTERS])
    sensor.hold()
    sensor.held(0.25)

    assert stats.counts == {"records": 6, "results": 2, "incomplete": 1, "deadletters": 2, "replayed": 1,
                            "holds": 1}
    assert sample(registry, "srv6pm_records_in_total", topic=records.COUNTERS) == 6
    assert sample(registry, "srv6pm_records_out_total", topic=records.LOSS) == 2
    assert sample(registry, "srv6pm_records_out_total", topic=records.DEADLETTER) == 2
    assert sample(registry, "srv6pm_records_out_total", topic=records.ALARMS) == 3
    assert sample(registry, "srv6pm_deadletters_total", topic=records.COUNTERS) == 2
    assert sample(registry, "srv6pm_errors_total", kind="store") == 1
    assert sample(registry, "srv6pm_period_latency_seconds_count", topic=records.LOSS) == 2
    fields = pipeline_fields(health)
    assert (fields[PIPELINE.records_in], fields[PIPELINE.records_out], fields[PIPELINE.deadletters],
            fields[PIPELINE.errors], fields[PIPELINE.held_s]) == (6, 2, 2, 1, 0.25)


def test_a_revoked_partition_loses_its_lag_series_and_keeps_the_others():
    sensor, _, _, registry = sensors()
    sensor.lag(records.COUNTERS, 0, 5)
    sensor.lag(records.COUNTERS, 1, 7)
    sensor.gone([(records.COUNTERS, 0)])
    assert sample(registry, "srv6pm_consumer_lag", topic=records.COUNTERS, partition="0") is None
    assert sample(registry, "srv6pm_consumer_lag", topic=records.COUNTERS, partition="1") == 7


def test_the_nodes_seen_reach_the_exporter_points():
    sensor, _, health, _ = sensors()
    sensor.nodes({"r1": (4, 95.0), "r4": (4, None)})
    health.due(90.0)
    points = {p._tags.get("node"): p._fields for p in health.points(100.0) if "node" in p._tags}
    assert points["r1"]["records"] == 4 and points["r1"]["last_record_age_s"] == 5.0
    assert points["r4"]["records"] == 4 and "last_record_age_s" not in points["r4"]
