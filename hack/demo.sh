#!/usr/bin/env bash
# The demo (`make demo`): build or reuse the control plane and the virtualenv, then run
# `gridwise demo`, which starts a local cluster with fake GPU nodes, runs the operator and
# replays a real grid trace. Extra arguments go to `gridwise demo` (see `gridwise demo --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
GRIDWISE_CONTROLPLANE_BIN="$(hack/build-control-plane.sh)"
export GRIDWISE_CONTROLPLANE_BIN
venv="$(hack/venv.sh)"
export PATH="$venv/bin:$GRIDWISE_CONTROLPLANE_BIN:$PATH"
# containerd, runc, CNI plugins and podman for `--real-node` (installs only what is missing)
if [[ " $* " == *" --real-node "* ]]; then hack/install-node-deps.sh; fi
exec gridwise demo "$@"
