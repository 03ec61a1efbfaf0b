#!/usr/bin/env bash
# The whole test run, as CI runs it (`make test`): build or reuse the control plane and the
# virtualenv, the node packages and the images, install Prometheus if missing, then lint, type-check
# and run every test.
# Extra arguments go to pytest, e.g. `make test ARGS="-k planner"` or `hack/test.sh -x`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$SECONDS
step() { printf '\n==> [%d:%02d] %s\n' $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)) "$*"; }

# The control-plane build is CPU-bound Go; the virtualenv, the Debian packages, the images and
# Prometheus are mostly downloads and unpacking. On a cold machine they run side by side (7 minutes
# saved, BENCHMARKS.md); warm, every step is a cache check. The side chain's log follows once it ends.
prep_log="$(mktemp)"
(
  set -euo pipefail
  step "virtualenv (torch is installed once per machine)"
  venv="$(hack/venv.sh)"
  echo "$venv" >"$prep_log.venv"
  step "Debian packages for the real node (containerd, runc, CNI plugins, podman)"
  hack/install-node-deps.sh
  step "images (operator, trainer), built on first use and reused while their inputs are unchanged"
  # Here, not inside the first image test: a cold build (debootstrap base, torch wheels) on a busy
  # machine can take longer than pytest's 600 s per-test timeout.
  PATH="$venv/bin:$PATH" hack/build-images.sh >/dev/null
  if [[ -x hack/install-prometheus.sh ]]; then
    step "prometheus server (Debian package) for the metrics tests"
    hack/install-prometheus.sh
  fi
) >"$prep_log" 2>&1 &
prep=$!
trap 'kill "$prep" 2>/dev/null || true; rm -f "$prep_log" "$prep_log.venv"' EXIT

step "control plane (etcd, kube-apiserver, controllers, kwok, helm), built once into ~/.cache/gridwise"
echo "(the virtualenv, node packages, images and Prometheus are prepared alongside; their log follows)"
GRIDWISE_CONTROLPLANE_BIN="$(hack/build-control-plane.sh)"
export GRIDWISE_CONTROLPLANE_BIN
prep_rc=0
wait "$prep" || prep_rc=$?
cat "$prep_log"
if ((prep_rc != 0)); then
  echo "hack/test.sh: preparing the virtualenv, node packages, images or Prometheus failed (exit $prep_rc); see above" >&2
  exit "$prep_rc"
fi
venv="$(cat "$prep_log.venv")"
export PATH="$venv/bin:$GRIDWISE_CONTROLPLANE_BIN:$PATH"
step "ruff"
ruff check operator trainer-image tests benchmarks hack
ruff format --check operator trainer-image tests benchmarks hack
step "mypy --strict"
mypy
step "ecosystem linters" && hack/lint.sh
step "pytest"
python -m pytest -p no:cacheprovider --durations=15 "$@"
