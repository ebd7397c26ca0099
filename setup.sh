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

# Debian packages: iproute2 (ip netns), nftables (libnftables for the counters),
# influxdb (the embedded InfluxDB engine), python3-venv (the virtual environment).
packages=(iproute2 nftables influxdb python3 python3-venv python3-pip ca-certificates)
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

case "$action" in
lab)
    scenario=${1:-scenarios/example.yaml}
    duration=${2:-60}
    exec .venv/bin/srv6pm lab run "$scenario" --duration "$duration"
    ;;
test)
    exec .venv/bin/python -m pytest "$@"
    ;;
esac
