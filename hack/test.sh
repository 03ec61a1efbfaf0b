#!/usr/bin/env bash
# The whole test run, as CI runs it (`make test`): build or reuse the control plane and the
# virtualenv, the node packages and the images, install Prometheus if missing, then lint, type-check
# and run every test.
# Extra arguments go to pytest, e.g. `make test ARGS="-k planner"` or `hack/test.sh -x`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
step() { printf '\n==> %s\n' "$*"; }

step "control plane (etcd, kube-apiserver, controllers, kwok, helm), built once into ~/.cache/gridwise"
GRIDWISE_CONTROLPLANE_BIN="$(hack/build-control-plane.sh)"
export GRIDWISE_CONTROLPLANE_BIN
step "virtualenv (torch is installed once per machine)"
venv="$(hack/venv.sh)"
export PATH="$venv/bin:$GRIDWISE_CONTROLPLANE_BIN:$PATH"
step "Debian packages for the real node (containerd, runc, CNI plugins, podman)"
hack/install-node-deps.sh
step "images (operator, trainer), built on first use and reused while their inputs are unchanged"
# Here, not inside the first image test: a cold build (debootstrap base, torch wheels) on a busy
# machine can take longer than pytest's 600 s per-test timeout.
hack/build-images.sh >/dev/null
if [[ -x hack/install-prometheus.sh ]]; then
  step "prometheus server (Debian package) for the metrics tests"
  hack/install-prometheus.sh
fi
step "ruff"
ruff check operator trainer-image tests benchmarks hack
ruff format --check operator trainer-image tests benchmarks hack
step "mypy --strict"
mypy
step "ecosystem linters" && hack/lint.sh
step "pytest"
python -m pytest -p no:cacheprovider "$@"
