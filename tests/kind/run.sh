#!/usr/bin/env bash
# Runs the cluster test suite against a real kind cluster with the real images and the Helm chart.
#   tests/kind/run.sh            # create cluster, build + load images, helm install, pytest tests/cluster
#   KEEP_CLUSTER=1 tests/kind/run.sh   # leave the cluster for debugging
# Needs docker (with a running daemon), kind, kubectl and helm. See docs/kind.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${KIND_CLUSTER:-gridwise}"
TAG="${IMAGE_TAG:-kind}"
OPERATOR_IMAGE="gridwise-operator:${TAG}"
TRAINER_IMAGE="gridwise-trainer:${TAG}"
NAMESPACE="${NAMESPACE:-gridwise-system}"
PYTHON="${PYTHON:-$HOME/.cache/gridwise/venv-py3.11/bin/python}"
WORK="$(mktemp -d)"
KUBECONFIG_FILE="$WORK/kubeconfig"

die() { echo "tests/kind/run.sh: $*" >&2; exit 1; }
log() { echo "tests/kind/run.sh: $*"; }

# Fail fast, saying exactly what is missing.
missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  # helm and kubectl come with the local control plane build.
  if bin="$("$REPO/hack/build-control-plane.sh" --print-if-built 2>/dev/null)" && [ -n "$bin" ]; then
    export PATH="$bin:$PATH"
    missing=()
    for tool in docker kind kubectl helm; do
      command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
  fi
fi
[ "${#missing[@]}" -eq 0 ] || die "missing: ${missing[*]}. Install Docker and kind (https://kind.sigs.k8s.io); see docs/kind.md"
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (docker info failed)"
[ -x "$PYTHON" ] || die "python venv not found at $PYTHON: run hack/venv.sh or set PYTHON"

cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != "1" ]; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  else
    log "keeping cluster $CLUSTER (kubeconfig: $KUBECONFIG_FILE)"
  fi
}
trap cleanup EXIT

log "creating kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
export KUBECONFIG="$KUBECONFIG_FILE"

log "building $OPERATOR_IMAGE and $TRAINER_IMAGE (context: repo root)"
docker build -t "$OPERATOR_IMAGE" -f "$REPO/Dockerfile" "$REPO"
docker build -t "$TRAINER_IMAGE" -f "$REPO/trainer-image/Dockerfile" "$REPO"
# The tests' CarbonAwareJobs use image gridwise/trainer:test: on kind their pods run the real trainer.
docker tag "$TRAINER_IMAGE" gridwise/trainer:test
log "loading images into kind"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$TRAINER_IMAGE" gridwise/trainer:test

# kind nodes have no GPUs: advertise an extended resource so nvidia.com/gpu pods schedule (the trainer
# falls back to the CPU). This is the documented way to advertise node-level extended resources.
for node in $(kubectl get nodes -o name); do
  kubectl patch "$node" --subresource=status --type=json \
    -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"8"}]' >/dev/null
done

log "helm install gridwise into $NAMESPACE"
helm upgrade --install gridwise "$REPO/charts/gridwise" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository=gridwise-operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --wait=false
# One replica leads and is ready; the standby stays not-ready by design, so wait for one ready pod.
for _ in $(seq 1 60); do
  ready="$(kubectl -n "$NAMESPACE" get deploy gridwise -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)"
  [ "${ready:-0}" -ge 1 ] && break
  sleep 2
done
[ "${ready:-0}" -ge 1 ] || { kubectl -n "$NAMESPACE" describe pods; die "no operator replica became ready"; }
log "operator leader: $(kubectl -n "$NAMESPACE" get lease gridwise-operator -o jsonpath='{.spec.holderIdentity}')"

# The in-cluster operator would race the tests' own operators: scale it away for the suite, which
# starts `gridwise operator run` itself (as the local control plane runs do).
kubectl -n "$NAMESPACE" scale deploy/gridwise --replicas=0

log "running pytest tests/cluster against kind"
cd "$REPO"
GRIDWISE_TRAINER_IMAGE="$TRAINER_IMAGE" "$PYTHON" -m pytest tests/cluster --kubeconfig="$KUBECONFIG_FILE" "$@"
