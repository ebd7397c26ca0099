"""srv6pm.metrics: the /metrics endpoint over a real HTTP socket, settings, errors."""

import argparse
import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from srv6pm import metrics
from srv6pm.config import ConfigError


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_served_counters_show_with_their_component_and_labels(free_port):
    registry = CollectorRegistry()
    m = metrics.get(registry)
    assert metrics.get(registry) is m  # one set of families per registry
    port = free_port()
    server = metrics.serve(port, addr="127.0.0.1", registry=registry)
    try:
        m.records_in.labels("processor", "srv6pm.counters").inc(7)
        m.consumer_lag.labels("processor", "srv6pm.counters", "1").set(3)
        m.api_calls.labels("exporter", "ApplyFlows", "OK").inc()
        m.nodes_up.labels("collector").set(4)
        m.period_latency.labels("processor", "srv6pm.loss").observe(1.5)
        text = scrape(port)
    finally:
        server.shutdown()
    assert 'srv6pm_records_in_total{component="processor",topic="srv6pm.counters"} 7.0' in text
    assert 'srv6pm_consumer_lag{component="processor",partition="1",topic="srv6pm.counters"} 3.0' in text
    assert 'srv6pm_api_calls_total{code="OK",component="exporter",method="ApplyFlows"} 1.0' in text
    assert 'srv6pm_collector_nodes_up{component="collector"} 4.0' in text
    assert 'srv6pm_period_latency_seconds_bucket{component="processor",le="2.0",topic="srv6pm.loss"} 1.0' in text
    assert 'srv6pm_period_latency_seconds_bucket{component="processor",le="1.0",topic="srv6pm.loss"} 0.0' in text
    # families nobody used show no series (only their HELP/TYPE lines)
    assert "srv6pm_collector_apply_failures_total{" not in text


def test_default_address_is_every_address(free_port):
    registry = CollectorRegistry()
    metrics.get(registry).errors.labels("exporter", "publish").inc()
    port = free_port()
    server = metrics.serve(port, registry=registry)
    try:
        assert 'srv6pm_errors_total{component="exporter",kind="publish"} 1.0' in scrape(port)
    finally:
        server.shutdown()


def test_port_taken_is_a_clear_error_naming_the_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(metrics.MetricsError, match=f"metrics port {port}: cannot listen"):
            metrics.serve(port, addr="127.0.0.1", registry=CollectorRegistry())


def test_port_zero_or_none_serves_nothing():
    assert metrics.serve(0) is None
    assert metrics.serve(None) is None


def parse(argv):
    parser = argparse.ArgumentParser()
    metrics.add_metrics_argument(parser)
    return parser.parse_args(argv)


def test_port_from_flag_else_environment_else_off():
    assert metrics.port_from_args(parse([]), env={}) is None
    assert metrics.port_from_args(parse([]), env={"SRV6PM_METRICS_PORT": "9108"}) == 9108
    assert metrics.port_from_args(parse(["--metrics-port", "9200"]), env={"SRV6PM_METRICS_PORT": "9108"}) == 9200
    assert metrics.port_from_args(parse(["--metrics-port", "0"]), env={"SRV6PM_METRICS_PORT": "9108"}) is None


@pytest.mark.parametrize("argv, env, message", [
    (["--metrics-port", "70000"], {}, "--metrics-port 70000: must be from 0"),
    (["--metrics-port", "-1"], {}, "--metrics-port -1: must be from 0"),
    ([], {"SRV6PM_METRICS_PORT": "http"}, "SRV6PM_METRICS_PORT='http': not a port number"),
    ([], {"SRV6PM_METRICS_PORT": "99999"}, "SRV6PM_METRICS_PORT 99999: must be from 0"),
])
def test_bad_port_names_the_setting(argv, env, message):
    with pytest.raises(ConfigError, match=message):
        metrics.port_from_args(parse(argv), env=env)


def test_processor_refuses_a_bad_metrics_port_with_exit_status_2(capsys, monkeypatch):
    from srv6pm import cli
    monkeypatch.delenv("SRV6PM_METRICS_PORT", raising=False)
    assert cli.main(["processor", "run", "--metrics-port", "65536"]) == 2
    assert "--metrics-port 65536" in capsys.readouterr().err
    monkeypatch.setenv("SRV6PM_HEALTH_INTERVAL", "soon")
    assert cli.main(["processor", "run"]) == 2
    assert "SRV6PM_HEALTH_INTERVAL='soon'" in capsys.readouterr().err


def test_api_call_interceptor_counts_calls_by_method_and_status_over_real_grpc():
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    registry = CollectorRegistry()

    def fail(request, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "policy.segments: empty")

    def crash(request, context):
        raise RuntimeError("bug")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[metrics.api_call_interceptor("exporter", registry)])
    servicer = health.HealthServicer()
    servicer.set("srv6pm", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Test", {
        "Fail": grpc.unary_unary_rpc_method_handler(fail), "Crash": grpc.unary_unary_rpc_method_handler(crash)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            for _ in range(2):
                assert check(health_pb2.HealthCheckRequest(service="srv6pm")).status == \
                    health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as missing:
                check(health_pb2.HealthCheckRequest(service="nothing"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            for method, code in (("Fail", grpc.StatusCode.INVALID_ARGUMENT), ("Crash", grpc.StatusCode.UNKNOWN)):
                with pytest.raises(grpc.RpcError) as err:
                    channel.unary_unary(f"/t.Test/{method}")(b"", timeout=5)
                assert err.value.code() == code
    finally:
        server.stop(None)

    def count(method, code):
        return registry.get_sample_value("srv6pm_api_calls_total",
                                         {"component": "exporter", "method": method, "code": code})
    assert count("Check", "OK") == 2
    assert count("Check", "NOT_FOUND") == 1
    assert count("Fail", "INVALID_ARGUMENT") == 1
    assert count("Crash", "UNKNOWN") == 1


def test_observing_many_values_at_once_gives_the_histogram_observing_each_gives():
    from prometheus_client import CollectorRegistry

    from srv6pm.metrics import Metrics, observe_all
    values = [0.0, 0.7, 0.7, 0.7, 1.5, 2.0, 2.0, 3.3, 9.0, 1e6, 0.7]
    one_by_one, at_once = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    for value in values:
        one_by_one.period_latency.labels("processor", "srv6pm.loss").observe(value)
    observe_all(at_once.period_latency.labels("processor", "srv6pm.loss"), values)

    def samples(m):
        return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                      for metric in m.period_latency.collect() for s in metric.samples if not s.name.endswith("_created"))
    assert samples(at_once) == samples(one_by_one)
    assert any(s[0].endswith("_count") and s[2] == len(values) for s in samples(at_once))
