"""Every example configuration in README.md passes its ``check`` command, read from the README itself (so a
drifting example fails here): ``yaml`` blocks that configure a collector (nodes with a ``grpc`` address) go
to ``srv6pm collector check``; every scenario file the README names goes to ``srv6pm lab check``.
The collector example's TLS files are made for real (a CA and a client certificate) in a temporary folder,
which replaces the example's ``/etc/srv6pm/``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from test_southbound_tls import make_ca, make_leaf

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.DOTALL)


def _kind(block: str) -> str:
    doc = yaml.safe_load(block)
    if isinstance(doc, dict) and any(isinstance(n, dict) and "grpc" in n for n in doc.get("nodes") or ()):
        return "collector"
    return "other"


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srv6pm", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_readme_has_a_collector_example():
    assert "collector" in [_kind(b) for b in BLOCKS]


@pytest.mark.parametrize("block", [b for b in BLOCKS if _kind(b) == "collector"])
def test_collector_examples_pass_collector_check(block, tmp_path):
    ca = make_ca(tmp_path, "ca")
    make_leaf(tmp_path, "collector", ca, server=False, names=[x509.DNSName("collector")])
    for made, named in (("ca.crt", "ca.pem"), ("collector.crt", "collector.pem")):  # the example's file names
        (tmp_path / made).rename(tmp_path / named)
    path = tmp_path / "network.yaml"
    path.write_text(block.replace("/etc/srv6pm/", f"{tmp_path}/"))
    done = _check("collector", "check", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("{")


@pytest.mark.parametrize("name", sorted(set(re.findall(r"scenarios/[\w.-]+\.yaml", README))))
def test_scenario_files_the_readme_names_pass_lab_check(name):
    assert (ROOT / name).exists(), name
    done = _check("lab", "check", name)
    assert done.returncode == 0, done.stderr
