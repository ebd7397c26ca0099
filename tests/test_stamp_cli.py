"""``stamp reflector`` / ``stamp sender`` commands: help, one-line errors with exit 2, JSON and table output."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from srv6pm.stamp.cli import add_commands
from srv6pm.stamp.reflector import Reflector, ReflectorConfig


def stamp(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "srv6pm.stamp", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ})


@pytest.mark.parametrize("args", [["reflector", "--help"], ["sender", "--help"], ["stamp", "sender", "--help"]])
def test_help_explains_every_option(args):
    out = stamp(*args)
    assert out.returncode == 0 and "usage:" in out.stdout
    options = ("--dest", "--port", "--count", "--interval", "--timeout", "--segments", "--return-segments",
               "--auth-key", "--source", "--size", "--netns", "--json") if "sender" in args else \
              ("--bind", "--port", "--auth-key", "--stateful", "--netns")
    for option in options:
        assert option in out.stdout
    assert "hexadecimal" in out.stdout  # the key file format is documented


@pytest.mark.parametrize("args, message", [
    (["sender", "--dest", "not-an-address"], "destination address 'not-an-address' is not an IPv4 or IPv6 address"),
    (["sender", "--dest", "::1", "--segments", "fcff:2::1,banana"], "--segments: 'banana' is not an IPv6 address"),
    (["sender", "--dest", "::1", "--return-segments", "fcff:2::1,"], "--return-segments: empty SID"),
    (["sender", "--dest", "::1", "--auth-key", "/nonexistent/key"], "/nonexistent/key: cannot read"),
    (["sender", "--dest", "::1", "--netns", "stamp-test-no-such-ns"], "does not exist"),
    (["sender", "--dest", "::1", "--size", "10"], "below the minimum"),
    (["sender", "--dest", "::1", "--interval", "-1"], "--interval must be a positive"),
    (["reflector", "--bind", "1.2.3"], "bind address '1.2.3' is not an IPv4 or IPv6 address"),
    (["reflector", "--bind", "::1", "--auth-key", "/nonexistent/key"], "cannot read"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    out = stamp(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srv6pm: ") and message in lines[0]
    assert out.stdout == ""


def test_bad_key_file_format(tmp_path):
    key = tmp_path / "k"
    key.write_text("# too short\nabcd\n")
    key.chmod(0o600)
    out = stamp("sender", "--dest", "::1", "--auth-key", str(key))
    assert out.returncode == 2 and "key of 2 octets" in out.stderr
    key.write_text("not hex at all\n")
    out = stamp("reflector", "--bind", "::1", "--auth-key", str(key))
    assert out.returncode == 2 and "not hexadecimal" in out.stderr


def test_sender_json_and_table_against_a_reflector(tmp_path):
    key = tmp_path / "stamp.key"
    key.write_text("# test key\n" + "ab" * 32 + "\n")
    key.chmod(0o600)
    from srv6pm.stamp.keys import load_key
    with Reflector(ReflectorConfig(bind="::1", port=0, key=load_key(key))) as r:
        port = str(r.address[1])
        out = stamp("sender", "--dest", "::1", "--port", port, "--count", "3", "--interval", "0.01", "--json",
                    "--auth-key", str(key), "--size", "200", "--session", "s1")
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [x["seq"] for x in lines[:3]] == [0, 1, 2]
        for x in lines[:3]:
            assert x["session"] == "s1" and x["lost"] is False and x["t1"] <= x["t2"] <= x["t3"] <= x["t4"]
        summary = lines[3]
        assert summary["summary"] is True and summary["sent"] == 3 and summary["lost"] == 0
        assert set(summary["round_trip_us"]) == {"min", "mean", "max"}

        table = stamp("sender", "--dest", "::1", "--port", port, "--count", "2", "--interval", "0.01",
                      "--auth-key", str(key))
        assert table.returncode == 0 and "round trip" in table.stdout and "2 sent, 2 received, 0 lost" in table.stdout

        lost = stamp("sender", "--dest", "::1", "--port", port, "--count", "2", "--interval", "0.01",
                     "--timeout", "0.2", "--json")  # unauthenticated against an authenticated reflector
        records = [json.loads(line) for line in lost.stdout.splitlines()]
        assert lost.returncode == 0 and [x["lost"] for x in records[:2]] == [True, True] and records[2]["lost"] == 2


def test_sender_rfc8972_options_against_a_reflector():
    with Reflector(ReflectorConfig(bind="::1", port=0)) as r:
        port = str(r.address[1])
        out = stamp("sender", "--dest", "::1", "--port", port, "--count", "2", "--interval", "0.01", "--json",
                    "--direct-measurement", "--dscp", "46")
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(x["sender_tx"], x["reflector_rx"], x["reflector_tx"]) for x in rows[:2]] == [(1, 1, 1), (2, 2, 2)]
        assert [(x["dscp_at_reflector"], x["dscp_remarked"]) for x in rows[:2]] == [(46, False)] * 2
        assert rows[2]["ssid_ignored"] == 0 and rows[2]["impossible_timestamps"] == 0
    bad = stamp("sender", "--dest", "::1", "--stop-if-ssid-ignored")
    assert bad.returncode == 2 and "needs an SSID" in bad.stderr
    bad = stamp("sender", "--dest", "::1", "--dscp", "64")
    assert bad.returncode == 2 and "DSCP 64 not in 0..63" in bad.stderr


def test_reflector_command_runs_and_reports(tmp_path):
    out = stamp("reflector", "--bind", "::1", "--port", "18627", "--duration", "0.5", "--backend", "socket")
    assert out.returncode == 0, out.stderr
    assert "listening on [::1]:18627" in out.stderr and "socket backend" in out.stderr
    assert json.loads(out.stderr.strip().splitlines()[-1])["reflector"]["received"] == 0


def test_reflector_backend_choices():
    out = stamp("reflector", "--bind", "::1", "--backend", "socket", "--attach", "tc")
    assert out.returncode == 2 and out.stderr.strip() == "srv6pm: --attach is for --backend ebpf"
    out = stamp("reflector", "--bind", "::1", "--backend", "kernel")
    assert out.returncode == 2 and "invalid choice: 'kernel'" in out.stderr
    assert "--backend" in stamp("reflector", "--help").stdout


def test_ebpf_is_the_default_and_says_what_is_missing(monkeypatch, capsys):
    from srv6pm import bpf, cli
    monkeypatch.setattr(bpf, "BTF_PATH", "/nonexistent/btf/vmlinux")
    assert cli.main(["stamp", "reflector", "--bind", "::1", "--port", "18628", "--duration", "0.2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["srv6pm: the ebpf reflector cannot run here: the kernel has no BTF (/nonexistent/btf/vmlinux is "
                   "missing): the eBPF programs are compiled against the running kernel's BTF; choose the socket "
                   "reflector instead (--backend socket)"]


def test_add_commands_wires_into_a_parser():
    parser = argparse.ArgumentParser(prog="srv6pm")
    commands = parser.add_subparsers(dest="command", required=True)
    added = []
    add_commands(commands, common=lambda p: added.append(p.prog))
    args = parser.parse_args(["stamp", "sender", "--dest", "::1", "--count", "0"])
    assert args.command == "stamp" and args.stamp_command == "sender" and args.count == 0
    assert callable(args.handler)
    assert added == ["srv6pm stamp", "srv6pm stamp reflector", "srv6pm stamp sender"]
