"""The srv6pm command: help, exit codes, one-line errors, nothing created on bad input."""

import os
import subprocess
import sys

import pytest

from srv6pm.netns import exists


def srv6pm(*args, env=None):
    return subprocess.run([sys.executable, "-m", "srv6pm", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args", [[], ["lab"], ["lab", "run"], ["exporter", "run"], ["bogus"]])
def test_bad_usage_exits_2_with_usage(args):
    out = srv6pm(*args)
    assert out.returncode == 2
    assert "usage:" in out.stderr


@pytest.mark.parametrize("args", [["--help"], ["lab", "run", "--help"], ["exporter", "run", "--help"],
                                  ["processor", "run", "--help"], ["lab", "check", "--help"]])
def test_help_explains(args):
    out = srv6pm(*args)
    assert out.returncode == 0 and "usage:" in out.stdout and len(out.stdout) > 300


def test_bad_scenario_is_one_line_naming_file_and_field_and_creates_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("period: 2\nnodes: [zq1, zq2]\nlinks: [[zq1, zq9]]\nflows: []\n")
    out = srv6pm("lab", "run", str(bad), "--duration", "5")
    assert out.returncode == 2
    assert out.stderr.strip() == f"srv6pm: {bad}: links[0][1]: unknown node 'zq9' (nodes: zq1, zq2)"
    assert out.stdout == ""
    assert not exists("zq1") and not exists("zq2")


def test_missing_scenario_file(tmp_path):
    out = srv6pm("lab", "run", str(tmp_path / "none.yaml"))
    assert out.returncode == 2 and "cannot read" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_lab_check_prints_the_plan_as_json():
    import json
    out = srv6pm("lab", "check", "scenarios/example.yaml")
    assert out.returncode == 0
    plan = json.loads(out.stdout)
    assert plan["flows"]["f1"]["segments"] == ["fcff:2::1", "fcff:3::1", "fcff:4::100"]
    assert plan["namespaces"][:4] == ["r1", "r2", "r3", "r4"]


def test_bad_exporter_config_exits_2(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("node: r1\nperiod: 2\nflows: [{name: f1, role: sideways, src: '::1', dst: '::2'}]\n")
    out = srv6pm("exporter", "run", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.strip().startswith(f"srv6pm: {cfg}: flows[0].role: must be one of ingress, transit, egress")


def test_secret_file_that_cannot_be_read_is_a_clear_error(tmp_path):
    out = srv6pm("processor", "run", env={"SRV6PM_INFLUX_TOKEN_FILE": str(tmp_path / "missing")})
    assert out.returncode == 2
    assert "SRV6PM_INFLUX_TOKEN_FILE" in out.stderr and "cannot read" in out.stderr


def test_exporter_refuses_to_serve_the_api_without_a_security_choice(tmp_path):
    cfg = tmp_path / "r1.yaml"
    cfg.write_text("node: r1\nperiod: 2\n")
    for extra, message in (([], "the southbound API needs TLS: give --grpc-tls-cert and --grpc-tls-key"),
                           (["--grpc-listen", "none"], "nothing to do"),
                           (["--grpc-listen", "nowhere"], "--grpc-listen 'nowhere': not HOST:PORT"),
                           (["--grpc-tls-cert", str(tmp_path / "no.pem"), "--grpc-tls-key", str(tmp_path / "no.key")],
                            "cannot read"),
                           (["--grpc-plaintext", "--grpc-tls-cert", "x"], "--grpc-plaintext: give either")):
        out = subprocess.run([sys.executable, "-m", "srv6pm", "exporter", "run", "--config", str(cfg), *extra],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (extra, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, (extra, out.stderr)


def _exporter(cfg, *extra, env=None):
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "srv6pm", "exporter", "run", "--config", str(cfg), *extra],
                          capture_output=True, text=True, timeout=60, env=env)


def test_exporter_node_comes_from_the_flag_then_the_environment_then_the_file(tmp_path):
    """Which source is used shows in which one is validated: the run stops at the next check (TLS)."""
    cfg = tmp_path / "r1.yaml"
    cfg.write_text("period: 2\n")  # no node in the file
    tls = "the southbound API needs TLS"
    cases = [
        ([], {"SRV6PM_NODE": None}, f"srv6pm: {cfg}: node: missing (or give --node or $SRV6PM_NODE)"),
        ([], {"SRV6PM_NODE": ""}, f"srv6pm: {cfg}: node: missing"),  # empty: not given
        ([], {"SRV6PM_NODE": "k8s node"}, "srv6pm: SRV6PM_NODE: 'k8s node' is not a valid node name"),
        ([], {"SRV6PM_NODE": "k8s-node-1"}, tls),
        (["--node", "r/1"], {"SRV6PM_NODE": "k8s-node-1"}, "srv6pm: --node: 'r/1' is not a valid node name"),
        (["--node", "r1"], {"SRV6PM_NODE": "k8s node"}, tls),  # the flag wins: the bad variable is not read
        (["--node", "r1", "--period", "0"], {}, "srv6pm: --period: must be a number of seconds from 0.5 to 3600"),
        (["--node", "r1", "--period", "two"], {}, "srv6pm: --period: must be a number of seconds"),
    ]
    for extra, env, message in cases:
        out = _exporter(cfg, *extra, env=env)
        assert out.returncode == 2, (extra, env, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, (extra, env, out.stderr)
    cfg.write_text("node: r1\n")  # no period in the file
    out = _exporter(cfg, env={"SRV6PM_NODE": None})
    assert out.returncode == 2 and f"srv6pm: {cfg}: period: missing (or give --period)" in out.stderr
    assert tls in _exporter(cfg, "--period", "1.5", env={"SRV6PM_NODE": None}).stderr


@pytest.mark.netns
@pytest.mark.services
def test_exporter_run_calls_itself_after_srv6pm_node(tmp_path, broker):
    """The running exporter (real namespace, nftables, broker, gRPC) reports the node and period given outside the file."""
    import json
    import secrets
    import signal

    import grpc
    from netns_support import skip_reason
    from pyroute2 import netns as pr_netns

    from srv6pm.southbound.v1 import southbound_pb2 as pb
    from srv6pm.southbound.v1 import southbound_pb2_grpc as rpc
    if skip_reason() is not None:
        pytest.skip(skip_reason())
    ns = "cli" + secrets.token_hex(4)
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(f"netns: {ns}\nperiod: 2\n")
    pr_netns.create(ns)
    try:
        env = {k: v for k, v in os.environ.items() if k != "SRV6PM_NODE"}
        proc = subprocess.Popen([sys.executable, "-m", "srv6pm", "exporter", "run", "--config", str(cfg), "--kafka",
                                 broker, "--grpc-listen", "127.0.0.1:0", "--grpc-plaintext", "--period", "1.5"],
                                env={**env, "SRV6PM_NODE": "worker-3.example"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            event = json.loads(proc.stdout.readline() or "{}")
            assert event.get("node") == "worker-3.example", proc.stderr.read() if proc.poll() is not None else event
            with grpc.insecure_channel(event["address"]) as channel:
                info = rpc.NodeExporterStub(channel).GetInfo(pb.GetInfoRequest(), timeout=5)
            assert (info.node, info.period_s) == ("worker-3.example", 1.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 143, proc.stderr.read()  # 128 + SIGTERM, after a clean stop
    finally:
        pr_netns.remove(ns)


@pytest.mark.parametrize("args, env, message", [
    (["--alarm-loss-ratio", "lots"], {}, "--alarm-loss-ratio 'lots': must be a number >= 0, or 'off'"),
    (["--alarm-delay-p99-us", "-5"], {}, "--alarm-delay-p99-us '-5': must be a number >= 0, or 'off'"),
    ([], {"SRV6PM_ALARM_LOSS_RATIO": "nan"}, "SRV6PM_ALARM_LOSS_RATIO 'nan': must be a number >= 0, or 'off'"),
])
def test_bad_alarm_threshold_is_a_one_line_error_naming_its_origin(args, env, message):
    out = srv6pm("processor", "run", *args, env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == f"srv6pm: {message}"
