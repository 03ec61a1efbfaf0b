#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok and helm from the Go module proxy into a versioned cache outside the repo.
# Idempotent: a finished build (marked by .complete) is reused as is.
#
#   hack/build-control-plane.sh          build (or reuse) and print the bin dir
#   hack/build-control-plane.sh --print-if-built   print the bin dir if built, else exit 1
#   GRIDWISE_CACHE=/path hack/...        put the cache elsewhere (default ~/.cache/gridwise)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${GRIDWISE_CACHE:-$HOME/.cache/gridwise}"
key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
dest="$cache_root/controlplane/$key"
bin="$dest/bin"

all_bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm kubelet kube-proxy coredns)
have_all() { local b; for b in "${all_bins[@]}"; do [[ -x "$bin/$b" ]] || return 1; done; }
if [[ -f "$dest/.complete" ]] && have_all; then
  echo "$bin"
  exit 0
fi
if [[ "${1:-}" == "--print-if-built" ]]; then
  exit 1
fi

log() { printf '[build-control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v go >/dev/null || { echo "go is required (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$bin" "$dest/src" "$dest/stages"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
started=$(date +%s)

# --- Kubernetes: wrapper module with the staging replaces --------------------
kmin="${KUBERNETES_VERSION#v1.}"; kmin="${kmin%%.*}"
stagever="v0.${KUBERNETES_VERSION#v1.}"
ksrc="$dest/src/kubernetes"
mkdir -p "$ksrc"
log "resolving k8s.io/kubernetes@$KUBERNETES_VERSION"
kgomod=$(cd "$ksrc" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
staging=$(grep -oE 'k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$kgomod" | awk '{print $1}' | sort -u)
[[ -n "$staging" ]] || { echo "no staging replaces found in $kgomod" >&2; exit 1; }
{
  echo "module gridwise.dev/controlplane/kubernetes"
  echo
  echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
  echo
  echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
  echo
  for m in $staging; do echo "replace $m => $m $stagever"; done
} > "$ksrc/go.mod"
log "$(echo "$staging" | wc -l) staging modules pinned to $stagever"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kmin -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$kmin"
log "compiling Kubernetes: the first binary takes longest, the rest reuse its packages"
# kubelet and kube-proxy run the real node (devcluster --real-node); same module, same flags.
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  [[ -x "$bin/$cmd" ]] && continue
  log "building $cmd"
  (cd "$ksrc" && go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done

# --- etcd: wrapper module, server main package --------------------------------
esrc="$dest/src/etcd"
mkdir -p "$esrc"
{
  echo "module gridwise.dev/controlplane/etcd"
  echo
  echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
  echo
  echo "require ("
  for m in server/v3 api/v3 client/pkg/v3 client/v3 pkg/v3; do echo "  go.etcd.io/etcd/$m $ETCD_VERSION"; done
  echo ")"
} > "$esrc/go.mod"
log "building etcd $ETCD_VERSION"
[[ -x "$bin/etcd" ]] || (cd "$esrc" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)

# --- kwok and its stages --------------------------------------------------------
log "building kwok $KWOK_VERSION"
[[ -x "$bin/kwok" ]] || GOBIN="$bin" GOFLAGS= go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
kwokdir="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION"
cp "$kwokdir"/kustomize/stage/node/fast/*.yaml "$dest/stages/" 2>/dev/null || true
cp "$kwokdir"/kustomize/stage/node/heartbeat-with-lease/*.yaml "$dest/stages/" 2>/dev/null || true

# --- helm ---------------------------------------------------------------------
log "building helm $HELM_VERSION"
hmin="${HELM_VERSION#v3.}"; hmin="${hmin%%.*}"
[[ -x "$bin/helm" ]] || GOBIN="$bin" GOFLAGS= go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kmin -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kmin" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

# --- CoreDNS: Service names resolve on the real node (torchrun rendezvous via a headless Service)
log "building coredns $COREDNS_VERSION"
[[ -x "$bin/coredns" ]] || GOBIN="$bin" GOFLAGS= go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"

for b in "${all_bins[@]}"; do
  [[ -x "$bin/$b" ]] || { echo "missing $bin/$b after build" >&2; exit 1; }
done
echo "built in $(( $(date +%s) - started ))s on $(nproc) cores" > "$dest/.complete"
log "done: $(cat "$dest/.complete")"
echo "$bin"
