"""Every command checks what it is given before it builds or connects to anything: one line naming the flag,
file or field, exit status 2; each ``check`` refuses exactly what its ``run`` refuses.

The commands run in this process (``srv6pm.cli.main``) with everything that would come after the checks
replaced by a tripwire (the reachability checks, the lab, the exporter), so a bad input that got through
would fail the test with the tripwire's status 1 instead of building or connecting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from srv6pm import cli

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "period: 2\nnodes: [iq1, iq2]\nlinks: [[iq1, iq2]]\nflows: [{name: f1, from: iq1, to: iq2, rate: 10}]\n"
EXPORTER = 'node: r1\nperiod: 2\nflows: [{name: f1, role: ingress, src: "2001:db8::/64", dst: "2001:db8:1::/64"}]\n'
COLLECTOR = 'nodes:\n  - {name: r1, grpc: "127.0.0.1:1", sids: [{sid: "fcff:1::1", behavior: End}]}\n'


class Started(Exception):
    """What the tripwires raise: the command got past its checks."""


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A valid scenario, exporter and collector configuration; tripwires after the checks."""
    from srv6pm import reach
    from srv6pm.exporter import service as exporter_service
    from srv6pm.lab import runner

    def trip(*args, **kwargs):
        raise Started("got past the checks")

    for name in ("kafka", "influx", "arango"):
        monkeypatch.setattr(reach, name, trip)
    monkeypatch.setattr(runner, "Lab", trip)
    monkeypatch.setattr(exporter_service, "Exporter", trip)
    for var in ("SRV6PM_KAFKA_BOOTSTRAP", "SRV6PM_INFLUX_URL", "SRV6PM_HEALTH_INTERVAL", "SRV6PM_METRICS_PORT",
                "SRV6PM_ARANGO_URL", "SRV6PM_INFLUX_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "s.yaml").write_text(SCENARIO)
    (tmp_path / "e.yaml").write_text(EXPORTER)
    (tmp_path / "c.yaml").write_text(COLLECTOR)
    (tmp_path / "c-tls.yaml").write_text(COLLECTOR + f"tls: {{ca: {tmp_path}/no-ca.pem}}\n")
    (tmp_path / "c-host.yaml").write_text(COLLECTOR.replace("127.0.0.1:1", "999.1.1.1:50051"))
    (tmp_path / "e-listen.yaml").write_text(EXPORTER + 'grpc: {listen: "999.1.1.1:50051", plaintext: true}\n')
    return tmp_path


def main_status(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``srv6pm argv``."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.err.strip()


LAB = [  # (flags, the words of the one line)
    (["--pair-wait", "-3"], "--pair-wait -3.0: must be a positive, finite number of seconds"),
    (["--pair-wait", "nan"], "--pair-wait nan: must be a positive, finite number of seconds"),
    (["--pair-wait", "inf"], "--pair-wait inf: must be"),
    (["--pair-wait", "soon"], "argument --pair-wait: invalid float value: 'soon'"),
    (["--duration", "0"], "--duration 0.0: must be a positive"),
    (["--duration=-inf"], "--duration -inf: must be"),
    (["--partitions", "0"], "--partitions 0: must be an integer from 1 to 1000"),
    (["--partitions", "1001"], "--partitions 1001: must be an integer from 1 to 1000"),
    (["--grpc-host", "999.1.1.1"], "--grpc-host '999.1.1.1': not an IPv4 address"),
    (["--grpc-host", "bad host"], "--grpc-host 'bad host': not a host name"),
    (["--grpc-host", "fe80::1::2"], "--grpc-host 'fe80::1::2': not an IPv6 address"),
    (["--advertise-host=-x.example"], "--advertise-host '-x.example': not a host name"),
    (["--external-collector", "/nonexistent/dir/c.yaml"], "--external-collector '/nonexistent/dir/c.yaml': folder"),
    (["--kafka", "k1:99999"], "--kafka 'k1:99999': port 99999 is not from 1 to 65535"),
    (["--kafka", "k1:9092,"], "--kafka 'k1:9092,': an empty server in the list"),
    (["--kafka", "999.0.0.1:9092"], "--kafka '999.0.0.1': not an IPv4 address"),
    (["--kafka-cafile", "/nonexistent/ca.pem"], "--kafka-cafile '/nonexistent/ca.pem': no such file"),
    (["--influx-url", "ftp://db:8086"], "--influx-url 'ftp://db:8086': must start with http:// or https://"),
    (["--influx-url", "http://999.1.1.1:8086"], "--influx-url 'http://999.1.1.1:8086': not an IPv4 address"),
    (["--influx-url", "http://db:99999"], "--influx-url 'http://db:99999': not a URL"),
    (["--influx-url", "http://u:s3cret@db:8086"], "--influx-url 'http://…@db:8086': a URL carries no user name or "
                                                  "password here"),  # and the password is not quoted back
    (["--grpc-host", "192.0.2.1"], "--grpc-host '192.0.2.1': cannot listen on it here"),  # not this host's
    (["--kafka-sasl-mechanism", "PLAIN", "--kafka-username", "bob"],
     "Kafka SASL settings (--kafka-sasl-mechanism, --kafka-username, SRV6PM_KAFKA_PASSWORD) are used only with "
     "--kafka-security-protocol SASL_SSL or SASL_PLAINTEXT, not PLAINTEXT"),
]


@pytest.mark.parametrize("flags, words", LAB)
def test_lab_run_and_check_refuse_bad_options_before_building(flags, words, files, capsys):
    answers = []
    for action in ("run", "check"):
        status, err = main_status(["lab", action, str(files / "s.yaml"), *flags], capsys)
        assert status == 2 and words in err and len(err.splitlines()) == 1, (action, err)
        answers.append(err.replace("lab check", "lab run"))
    assert answers[0] == answers[1]


PROCESSOR = [
    (["--ledger-records", "0"], "--ledger-records 0: must be an integer from 1 to 100000000"),
    (["--delay-lateness", "nan"], "--delay-lateness nan: must be a finite number of seconds >= 0"),
    (["--delay-lateness", "-1"], "--delay-lateness -1.0: must be a finite number of seconds >= 0"),
    (["--delay-idle", "0"], "--delay-idle 0.0: must be a positive"),
    (["--pair-wait", "inf"], "--pair-wait inf: must be a positive, finite number of seconds"),
    (["--pair-wait", "-3"], "--pair-wait -3.0: must be a positive"),
    (["--session-timeout-ms", "0"], "--session-timeout-ms 0: must be an integer from 1 to 3600000"),
    (["--heartbeat-interval-ms", "10000"], "--heartbeat-interval-ms 10000: must be an integer from 1 to 9999 "
                                           "(below --session-timeout-ms)"),
    (["--heartbeat-interval-ms", "1.5"], "argument --heartbeat-interval-ms: invalid int value: '1.5'"),
    (["--group", " "], "--group ' ': must not be empty"),
    (["--health-interval", "nan"], "--health-interval nan: must be a finite number of seconds >= 0"),
    (["--alarm-loss-ratio", "inf"], "--alarm-loss-ratio 'inf': must be a number >= 0, or 'off'"),
    (["--alarm-loss-ratio", "1.5"], "--alarm-loss-ratio '1.5': must be under 1 (no figure is above it), or 'off'"),
    (["--metrics-port", "70000"], "--metrics-port 70000: must be from 0 (off) to 65535"),
    (["--kafka", "[::1"], "--kafka '[::1': not HOST:PORT"),
    (["--kafka-certfile", "/nonexistent/c.pem"], "--kafka-certfile '/nonexistent/c.pem': no such file"),
    (["--influx-url", "http://:8086"], "--influx-url 'http://:8086': names no host"),
    (["--influx-cafile", "/"], "--influx-cafile '/': not a file"),
    (["--influx-url", "http://admin:s3cret@host:8086"], "--influx-url 'http://…@host:8086': a URL carries no"),
    (["--kafka-cafile", "/etc/passwd", "--kafka-security-protocol", "PLAINTEXT"],
     "Kafka TLS files (--kafka-cafile, --kafka-certfile, --kafka-keyfile) are used only with "
     "--kafka-security-protocol SSL or SASL_SSL, not PLAINTEXT"),
    (["--kafka-security-protocol", "SSL", "--kafka-sasl-mechanism", "PLAIN"], "Kafka SASL settings"),
]


@pytest.mark.parametrize("flags, words", PROCESSOR)
def test_processor_run_and_check_refuse_bad_options_before_connecting(flags, words, files, capsys):
    answers = []
    for action in ("run", "check"):
        status, err = main_status(["processor", action, *flags], capsys)
        assert status == 2 and words in err and len(err.splitlines()) == 1, (action, err)
        answers.append(err.replace("processor check", "processor run"))
    assert answers[0] == answers[1]


EXPORTER_CASES = [
    (["--period", "nan"], "--period: must be a number of seconds from 0.5 to 3600, got 'nan'"),
    (["--period", "-1"], "--period: must be a number of seconds from 0.5 to 3600, got '-1'"),
    (["--grpc-listen", "999.1.1.1:50051", "--grpc-plaintext"], "--grpc-listen '999.1.1.1': not an IPv4 address"),
    (["--grpc-listen", "nowhere"], "--grpc-listen 'nowhere': not HOST:PORT"),
    (["--grpc-listen", "::1:50051", "--grpc-plaintext"], "--grpc-listen '::1:50051': not HOST:PORT (an IPv6 address "
                                                         "in brackets"),
    ([], "the southbound API needs TLS"),
    (["--grpc-tls-cert", "/nonexistent/c.pem", "--grpc-tls-key", "/nonexistent/k.pem"], "cannot read"),
    (["--grpc-plaintext", "--metrics-port", "-1"], "--metrics-port -1: must be from 0 (off) to 65535"),
    (["--grpc-plaintext", "--kafka", "k:0"], "--kafka 'k:0': port 0 is not from 1 to 65535"),
    (["--grpc-plaintext", "--node", "bad node"], "--node: 'bad node' is not a valid node name"),
    (["--dataplane", "dpdk"], "argument --dataplane: invalid choice: 'dpdk'"),
    (["--grpc-plaintext", "--buffer-size", "9" * 400 + "GiB"], "--buffer-size: must be a size of at most 1048576GiB"),
    (["--grpc-plaintext", "--buffer-dir", "/etc/passwd"], "--buffer-dir '/etc/passwd': is a file, not a folder"),
]


def test_exporter_names_the_files_grpc_listen_when_it_is_the_bad_one(files, capsys):
    for action in ("run", "check"):
        status, err = main_status(["exporter", action, "--config", str(files / "e-listen.yaml")], capsys)
        assert status == 2 and err == f"srv6pm: {files / 'e-listen.yaml'}: grpc.listen '999.1.1.1': not an IPv4 address"


@pytest.mark.parametrize("flags, words", EXPORTER_CASES)
def test_exporter_run_and_check_refuse_bad_options_before_starting(flags, words, files, capsys):
    answers = []
    for action in ("run", "check"):
        status, err = main_status(["exporter", action, "--config", str(files / "e.yaml"), *flags], capsys)
        assert status == 2 and words in err and len(err.splitlines()) == 1, (action, err)
        answers.append(err.replace("exporter check", "exporter run"))
    assert answers[0] == answers[1]


COLLECTOR_CASES = [
    ("c.yaml", ["--grpc-plaintext", "--interval", "nan"], "--interval nan: must be a positive, finite number"),
    ("c.yaml", ["--grpc-plaintext", "--timeout", "0"], "--timeout 0.0: must be a positive"),
    ("c.yaml", ["--grpc-plaintext", "--retry-initial", "5", "--retry-max", "1"],
     "--retry-initial must not exceed --retry-max"),
    ("c.yaml", ["--grpc-plaintext", "--retry-max", "inf"], "--retry-max inf: must be"),
    ("c.yaml", [], "southbound: no TLS settings"),
    ("c.yaml", ["--grpc-ca", "/nonexistent/ca.pem"], "--grpc-ca '/nonexistent/ca.pem': no such file"),
    ("c-tls.yaml", [], "southbound TLS (the configuration's tls section): ca_file '"),
    ("c.yaml", ["--grpc-ca", "/etc/passwd"], "southbound TLS (--grpc-ca/--grpc-cert/--grpc-key): ca_file '/etc/passwd': "
                                             "not a PEM file with a CERTIFICATE"),
    ("c.yaml", ["--grpc-cert", "x.pem"], "--grpc-cert and --grpc-key go together"),
    ("c.yaml", ["--grpc-plaintext", "--graph-dump", "/nonexistent/dir/g.json"], "--graph-dump '/nonexistent/dir/g."),
    ("c.yaml", ["--grpc-plaintext", "--session-timeout-ms", "0"], "--session-timeout-ms 0: must be an integer"),
    ("c.yaml", ["--grpc-plaintext", "--heartbeat-interval-ms", "20000"], "--heartbeat-interval-ms 20000: must be"),
    ("c.yaml", ["--grpc-plaintext", "--kafka", "a:b"], "--kafka 'a:b': not HOST:PORT"),
    ("c.yaml", ["--grpc-plaintext", "--arango-url", "tcp://db:8529"], "--arango-url 'tcp://db:8529': must start"),
    ("c.yaml", ["--grpc-plaintext", "--metrics-port", "99999"], "--metrics-port 99999: must be from 0"),
    ("missing.yaml", ["--grpc-plaintext"], "missing.yaml: cannot read"),
    ("c-host.yaml", ["--grpc-plaintext"], "c-host.yaml: nodes[0].grpc: '999.1.1.1' is not a host name or IPv4"),
    ("c.yaml", ["--grpc-plaintext", "--arango-database", "g"],  # no URL: the graph is in memory, g would be ignored
     "--arango-database: an ArangoDB setting without --arango-url (or SRV6PM_ARANGO_URL): the graph is kept in memory"),
]


@pytest.mark.parametrize("config, flags, words", COLLECTOR_CASES)
def test_collector_run_and_check_refuse_the_same(config, flags, words, files, capsys):
    answers = []
    for action in ("run", "check"):
        status, err = main_status(["collector", action, "--config", str(files / config), *flags], capsys)
        assert status == 2 and words in err and len(err.splitlines()) == 1, (action, err)
        answers.append(err)
    assert answers[0] == answers[1]


def test_collector_check_passes_what_run_accepts(files, capsys):
    status, err = main_status(["collector", "check", "--config", str(files / "c.yaml"), "--grpc-plaintext"], capsys)
    assert status == 0, err
    status, err = main_status(["collector", "run", "--config", str(files / "c.yaml"), "--grpc-plaintext"], capsys)
    assert status == 1 and "got past the checks" in err  # the tripwire: run went on to connect


STAMP = [
    (["sender", "--dest", "::1", "--count", "-1"], "--count must be 0 (until stopped) or more"),
    (["sender", "--dest", "::1", "--interval", "nan"], "--interval must be a positive number of seconds"),
    (["sender", "--dest", "::1", "--timeout", "inf"], "--timeout must be a positive number of seconds"),
    (["sender", "--dest", "::1", "--ssid", "70000"], "--ssid: SSID must be 0..65535"),
    (["sender", "--dest", "::1", "--size", "100000"], "--size: size 100000 exceeds the largest UDP payload"),
    (["sender", "--dest", "999.1.1.1"], "--dest: destination address '999.1.1.1' is not an IPv4 or IPv6 address"),
    (["sender", "--dest", "::1", "--port", "0"], "argument --port: port 0 not in 1..65535"),
    (["reflector", "--bind", "::1", "--duration", "nan"], "--duration must be a positive number of seconds"),
    (["reflector", "--bind", "1.2.3"], "--bind: bind address '1.2.3' is not an IPv4 or IPv6 address"),
]


@pytest.mark.parametrize("flags, words", STAMP)
def test_stamp_commands_refuse_bad_options(flags, words, files, capsys):
    status, err = main_status(["stamp", *flags], capsys)
    assert status == 2 and words in err and len(err.splitlines()) == 1, err


def test_dashboards_refuse_an_output_that_is_no_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status, err = main_status(["dashboards", "generate", "--out", str(tmp_path / "file")], capsys)
    assert status == 2 and err == f"srv6pm: --out {tmp_path / 'file'}: not a folder"


def test_lab_run_with_a_bad_option_builds_nothing_as_a_process(tmp_path):
    """As an operator runs it (root, a real process): refused before any namespace exists."""
    from srv6pm.netns import exists
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO)
    for flags, words in (["--pair-wait", "-3"], "--pair-wait"), (["--grpc-host", "999.1.1.1"], "--grpc-host"):
        out = subprocess.run([sys.executable, "-m", "srv6pm", "lab", "run", str(scenario), *flags], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and out.stderr.startswith(f"srv6pm: {words}") and out.stdout == ""
        assert len(out.stderr.splitlines()) == 1
        assert not exists("iq1") and not exists("iq2")


def test_a_long_value_is_quoted_cut_short(files, capsys):
    status, err = main_status(["lab", "check", str(files / "s.yaml"), "--grpc-host", "a" * 5000 + "!"], capsys)
    assert status == 2 and len(err) < 200 and "(5001 characters)" in err


@pytest.mark.parametrize("command, text", [
    (["lab", "check"], "period: 2\nnodes: [iq1, iq2]\nlinks: [[iq1, iq2]]\nflows: [{name: f1, from: iq1, to: "
                       + "x" * 5000 + ", rate: 10}]\n"),
    (["collector", "check", "--grpc-plaintext", "--config"],
     'nodes:\n  - {name: r1, grpc: "127.0.0.1:1", sids: [{sid: "fcff:1::1", behavior: ' + "E" * 5000 + "}]}\n"),
    (["exporter", "check", "--grpc-plaintext", "--config"], "node: r1\nperiod: 2\ndataplane: " + "d" * 5000 + "\n"),
])
def test_a_long_value_in_a_file_is_quoted_cut_short(command, text, files, capsys):
    path = files / "long.yaml"
    path.write_text(text)
    status, err = main_status([*command, str(path)], capsys)
    assert status == 2 and "… (5000 characters)" in err and len(err) < 300 + len(str(path)), err


@pytest.mark.parametrize("var, value, words", [
    ("SRV6PM_KAFKA_BOOTSTRAP", "bad:port", "SRV6PM_KAFKA_BOOTSTRAP 'bad:port': not HOST:PORT"),
    ("SRV6PM_INFLUX_URL", "influx:8086", "SRV6PM_INFLUX_URL 'influx:8086': must start with http:// or https://"),
    ("SRV6PM_HEALTH_INTERVAL", "nan", "SRV6PM_HEALTH_INTERVAL nan: must be a finite number of seconds >= 0"),
    ("SRV6PM_METRICS_PORT", "x", "SRV6PM_METRICS_PORT='x': not a port number"),
    ("SRV6PM_KAFKA_SECURITY_PROTOCOL", "bogus", "SRV6PM_KAFKA_SECURITY_PROTOCOL 'bogus': not one of PLAINTEXT"),
    ("SRV6PM_LOG_FORMAT", "xml", "SRV6PM_LOG_FORMAT 'xml': not one of logfmt, json"),
    ("SRV6PM_ARANGO_PASSWORD", "pw", None),  # the processor has no ArangoDB: not its setting, not refused
])
def test_processor_names_the_environment_variable_a_bad_setting_came_from(var, value, words, files, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv(var, value)
    for action in ("run", "check"):
        status, err = main_status(["processor", action], capsys)
        if words is None:
            assert status != 2, (action, err)
            continue
        assert status == 2 and err.startswith(f"srv6pm: {words}") and "\n" not in err, (action, err)


def test_a_secret_file_that_is_not_text_is_named(files, capsys, monkeypatch):
    (files / "token").write_bytes(b"\xab\xcd\xff")
    monkeypatch.setenv("SRV6PM_INFLUX_TOKEN_FILE", str(files / "token"))
    for action in ("run", "check"):
        status, err = main_status(["processor", action], capsys)
        assert status == 2 and err == f"srv6pm: SRV6PM_INFLUX_TOKEN_FILE={files / 'token'}: not UTF-8 text", err


def test_lab_takes_a_bracketed_ipv6_grpc_host_as_its_address(files, monkeypatch):
    """``--grpc-host [::1]`` is the address ::1 for every use after the check (a socket takes no brackets)."""
    from srv6pm.cli import build_parser
    from srv6pm.lab import cli as lab_cli
    args = build_parser().parse_args(["lab", "run", str(files / "s.yaml"), "--grpc-host", "[::1]"])
    lab_cli.inputs(args)
    assert args.grpc_host == "::1"


@pytest.mark.parametrize("text, words", [
    ("stamp: {sessions: [{name: s, dest: 'fcff::1', rate: 10, auth_key_file: /nonexistent/s.key}]}\n",
     "e2.yaml: stamp.sessions[0].auth_key_file '/nonexistent/s.key': no such file"),
    ("stamp: {reflector: {bind: '::', auth_key_file: /nonexistent/r.key}}\n",
     "e2.yaml: stamp.reflector.auth_key_file '/nonexistent/r.key': no such file"),
    ("state_file: /tmp\n", "e2.yaml: state_file '/tmp': is a folder, not a file"),
    ("buffer_dir: /etc/passwd\n", "e2.yaml: buffer_dir '/etc/passwd': is a file, not a folder"),
    ("state_file: /etc/passwd/r1.json\n", "e2.yaml: state_file '/etc/passwd/r1.json': '/etc/passwd' is a file"),
])
def test_exporter_check_refuses_the_files_run_could_not_use(text, words, files, capsys):
    (files / "e2.yaml").write_text(EXPORTER + text)
    for action in ("run", "check"):
        status, err = main_status(["exporter", action, "--grpc-plaintext", "--config", str(files / "e2.yaml")],
                                  capsys)
        assert status == 2 and words in err and len(err.splitlines()) == 1, (action, err)


@pytest.mark.parametrize("flags, env, external", [
    ([], {}, (False, False)),
    ([], {"SRV6PM_KAFKA_BOOTSTRAP": "k1:9092"}, (True, False)),
    ([], {"SRV6PM_INFLUX_URL": "http://influx:8086"}, (False, True)),
    ([], {"SRV6PM_KAFKA_BOOTSTRAP": " ", "SRV6PM_INFLUX_URL": ""}, (False, False)),  # blank: not set
    (["--kafka-security-protocol", "PLAINTEXT", "--influx-bucket", "b"], {}, (True, True)),
])
def test_lab_uses_external_services_when_a_flag_or_variable_names_them(flags, env, external, files, monkeypatch):
    """The lab's own broker and InfluxDB, unless any --kafka* / --influx-* flag or the address variable is set."""
    from srv6pm.lab import cli as lab_cli
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    args = cli.build_parser().parse_args(["lab", "check", str(files / "s.yaml"), *flags])
    _, kafka, influx = lab_cli.inputs(args)
    assert (kafka is not None, influx is not None) == external
    if external[0] and env:
        assert kafka.bootstrap == env["SRV6PM_KAFKA_BOOTSTRAP"]


_BOMB = "".join(f"a{i + 1}: &a{i + 1} [*a{i}, *a{i}, *a{i}, *a{i}, *a{i}, *a{i}, *a{i}, *a{i}, *a{i}]\n"
                for i in range(30))  # 9**30 members, written out


@pytest.mark.parametrize("text, words", [
    ("stamp:\n  a0: &a0 [x]\n" + "".join("  " + line + "\n" for line in _BOMB.splitlines())
     + "dataplane: *a30\n" + SCENARIO, "dataplane: [[[[...], [...], [...], [...], [...], [...], ...], [[...], … "
                                       "(9 members) is not one of ebpf, nftables"),
    (SCENARIO.replace("period: 2", "period: 1" + "0" * 400),
     "period: must be between 0.5 and 3600, got 1" + "0" * 58 + "… (401 digits)"),
    (SCENARIO.replace("period: 2", "period: 1" + "0" * 5000), "not valid YAML: a number of more than 4300 digits"),
    ("period: 2\nx: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML: nested too deeply"),
    (SCENARIO + '"a\\nb\\x1b[31m": 1\n', "'a\\nb\\x1b[31m': unknown field (allowed:"),
    (SCENARIO.replace("nodes: [iq1, iq2]", "nodes: [on, iq2]"),
     "a node name must be text, got true/false True (YAML reads an unquoted yes/no/on/off as true/false"),
    (SCENARIO.replace("rate: 10", "rate: 1e3"), "rate: must be a number, got text '1e3' (YAML reads 1e3 as text"),
])
def test_a_scenario_s_odd_yaml_gets_one_clear_line(text, words, files, capsys):
    """Aliases that expand to billions of members, numbers of any length, deep nesting, keys with control
    characters and YAML 1.1's readings: one line, exit status 2, nothing written out whole."""
    path = files / "odd.yaml"
    path.write_text(text)
    status, err = main_status(["lab", "check", str(path)], capsys)
    assert status == 2 and words in err and len(err.splitlines()) == 1 and len(err) < 400, err


@pytest.mark.parametrize("text, words", [
    ("stamp: {sessions: [{name: s, dest: 'fcff::1', rate: 1" + "0" * 400 + "}]}\n",
     "stamp.sessions[0].rate: 1" + "0" * 58 + "… (401 digits) is too large a number"),
    ("flows: false\n", "flows: must be a list, got true/false"),
    ("grpc: {plaintext: true, tls: false}\n", "grpc.tls: must be a mapping with cert, key and client_ca"),
])
def test_an_exporter_file_s_odd_values_get_one_clear_line(text, words, files, capsys):
    path = files / "odd.yaml"
    path.write_text("node: r1\nperiod: 2\n" + text)
    status, err = main_status(["exporter", "check", "--grpc-plaintext", "--config", str(path)], capsys)
    assert status == 2 and words in err and len(err.splitlines()) == 1, err


def test_exporter_tls_flags_override_the_file_s_plaintext(files, capsys):
    """Flags override the file's grpc section, its plaintext too: the TLS flags are the API's settings."""
    from test_southbound_tls import make_ca, make_leaf
    ca = make_ca(files, "ca")
    server = make_leaf(files, "server", ca, server=True, names=[])
    (files / "e-plain.yaml").write_text(EXPORTER + 'grpc: {listen: "127.0.0.1:0", plaintext: true}\n')
    flags = ["--grpc-tls-cert", str(server.cert), "--grpc-tls-key", str(server.key)]
    assert cli.main(["exporter", "check", "--config", str(files / "e-plain.yaml"), *flags]) == 0
    out = capsys.readouterr()
    shown = json.loads(out.out)
    assert shown["api"] == {"listen": "127.0.0.1:0", "tls": True} and shown["flows"] == ["f1"], out.err
