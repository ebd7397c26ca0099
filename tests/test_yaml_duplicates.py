"""A key given twice in a YAML file is refused, naming both lines, for every kind of file srv6pm reads."""

import subprocess
import sys
from pathlib import Path

import pytest

from srv6pm import yamlfile

ROOT = Path(__file__).resolve().parent.parent


class Bad(Exception):
    pass


@pytest.mark.parametrize("text, message", [
    ("period: 2\nnodes: [r1]\nperiod: 3\n", "e.yaml: line 3: 'period' given twice (first on line 1)"),
    ("flows:\n  - name: f1\n    rate: 1\n    rate: 2\n", "e.yaml: line 4: 'rate' given twice (first on line 3)"),
    ("a: {x: 1, x: 2}\n", "e.yaml: line 1: 'x' given twice (first on line 1)"),
    ("x: 1\n'x': 2\n", "e.yaml: line 2: 'x' given twice (first on line 1)"),
    ("1: a\n1: b\n", "e.yaml: line 2: 1 given twice (first on line 1)"),
])
def test_a_repeated_key_names_both_lines(text, message):
    with pytest.raises(Bad) as err:
        yamlfile.parse(text, "e.yaml", Bad)
    assert str(err.value) == message


def test_the_same_key_in_different_mappings_and_merged_keys_are_fine():
    text = "a: {x: 1}\nb: {x: 2}\nbase: &base {rate: 1}\nf: {<<: *base, rate: 2}\n"
    assert yamlfile.parse(text, "e.yaml", Bad) == {"a": {"x": 1}, "b": {"x": 2}, "base": {"rate": 1},
                                                   "f": {"rate": 2}}


def srv6pm(*args):
    return subprocess.run([sys.executable, "-m", "srv6pm", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_scenario_with_a_repeated_key_is_refused(tmp_path):
    scenario = tmp_path / "example.yaml"
    text = (ROOT / "scenarios/example.yaml").read_text()
    scenario.write_text(text + "period: 5\n")
    first = 1 + text.splitlines().index(next(l for l in text.splitlines() if l.startswith("period:")))
    out = srv6pm("lab", "check", str(scenario))
    assert out.returncode == 2 and out.stdout == ""
    last = len(text.splitlines()) + 1
    assert out.stderr == f"srv6pm: {scenario}: line {last}: 'period' given twice (first on line {first})\n"


@pytest.mark.parametrize("command, text, message", [
    (["collector", "check", "--state-dir", "{tmp}/state"],
     'nodes:\n  - name: r1\n    grpc: "127.0.0.1:1"\n    name: r2\n', "line 4: 'name' given twice (first on line 2)"),
    (["exporter", "run", "--grpc-plaintext"], "node: r1\nperiod: 2\nnode: r2\n",
     "line 3: 'node' given twice (first on line 1)"),
], ids=["collector", "exporter"])
def test_configuration_with_a_repeated_key_is_refused(command, text, message, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    out = srv6pm(*[c.format(tmp=tmp_path) for c in command], "--config", str(config))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"srv6pm: {config}: {message}\n"


def test_exporter_configuration_syntax_error_names_line_and_column(tmp_path):
    config = tmp_path / "r1.yaml"
    config.write_text("node: r1\nperiod: [\n")
    out = srv6pm("exporter", "run", "--config", str(config), "--grpc-plaintext")
    assert out.returncode == 2
    assert out.stderr.startswith(f"srv6pm: {config}: not valid YAML (line 3, column 1)")
