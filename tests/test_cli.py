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
    assert out.stderr.strip().startswith(f"srv6pm: {cfg}: flows[0].role: must be one of ingress, egress")


def test_secret_file_that_cannot_be_read_is_a_clear_error(tmp_path):
    out = srv6pm("processor", "run", env={"SRV6PM_INFLUX_TOKEN_FILE": str(tmp_path / "missing")})
    assert out.returncode == 2
    assert "SRV6PM_INFLUX_TOKEN_FILE" in out.stderr and "cannot read" in out.stderr


def test_exporter_refuses_to_serve_the_api_without_a_security_choice(tmp_path):
    cfg = tmp_path / "r1.yaml"
    cfg.write_text("node: r1\nperiod: 2\n")
    for extra, message in (([], "the southbound API needs TLS: give --grpc-tls-cert and --grpc-tls-key"),
                           (["--grpc-listen", "none"], "nothing to do"),
                           (["--grpc-listen", "nowhere"], "--grpc-listen: 'nowhere' is not HOST:PORT"),
                           (["--grpc-tls-cert", str(tmp_path / "no.pem"), "--grpc-tls-key", str(tmp_path / "no.key")],
                            "cannot read"),
                           (["--grpc-plaintext", "--grpc-tls-cert", "x"], "--grpc-plaintext: give either")):
        out = subprocess.run([sys.executable, "-m", "srv6pm", "exporter", "run", "--config", str(cfg), *extra],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (extra, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, (extra, out.stderr)
