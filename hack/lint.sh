#!/usr/bin/env bash
# The ecosystem's own linters over what gridwise ships (part of `make test`, after mypy):
#   hadolint   Dockerfiles                         actionlint  .github/workflows (with shellcheck)
#   helm lint  --strict, defaults and every option  checkov     the rendered chart (kubernetes framework)
#   promtool   check rules --lint=all on the chart's PrometheusRule
#   dashboard  hack/dashboard-lint.py: Grafana dashboard-linter's rules (the linter itself does not install)
# Tools come from hack/install-lint-tools.sh (cached in ~/.cache/gridwise/lint-tools); helm from the
# control-plane build. Suppressions live in config files with their reasons: .hadolint.yaml,
# .checkov.yaml, dashboards/.lint. kube-linter is not run: the Go module proxy refuses it (see
# docs/observability.md); checkov covers the same manifest checks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="$(hack/install-lint-tools.sh)"
export PATH="$bin:$PATH"
if ! command -v helm >/dev/null 2>&1; then
  cp_bin="$(hack/build-control-plane.sh --print-if-built)" || {
    echo "lint: helm not found: run hack/build-control-plane.sh" >&2
    exit 1
  }
  export PATH="$cp_bin:$PATH"
fi
kube_version=1.35.4
monitoring=(--api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PodMonitor
  --api-versions monitoring.coreos.com/v1/PrometheusRule)
all_on=(--set serviceMonitor.enabled=true --set podMonitor.enabled=true --set prometheusRule.enabled=true
  --set networkPolicy.enabled=true --set carbon.existingSecret=carbon-keys)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=()
run() { # name command...
  local name=$1 start=$SECONDS
  shift
  printf '\n--> %s\n' "$name"
  if "$@"; then
    printf '    ok (%ss)\n' "$((SECONDS - start))"
  else
    printf '    FAILED (%ss)\n' "$((SECONDS - start))"
    failed+=("$name")
  fi
}

run "hadolint" hadolint --config .hadolint.yaml Dockerfile trainer-image/Dockerfile
run "actionlint" actionlint -color=false
run "helm lint --strict (defaults)" helm lint --strict --quiet charts/gridwise --kube-version "$kube_version"
run "helm lint --strict (every option)" helm lint --strict --quiet charts/gridwise --kube-version "$kube_version" "${all_on[@]}"
helm template gridwise charts/gridwise --namespace gridwise-system --kube-version "$kube_version" \
  "${monitoring[@]}" "${all_on[@]}" >"$tmp/chart.yaml"
mkdir -p "$tmp/rendered"
cp "$tmp/chart.yaml" "$tmp/rendered/chart.yaml"
run "checkov (rendered chart)" checkov --quiet --compact --skip-download --framework kubernetes --config-file .checkov.yaml \
  -d "$tmp/rendered"
python3 - "$tmp/chart.yaml" "$tmp/rules.yml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rule = next(d for d in docs if d["kind"] == "PrometheusRule")
open(sys.argv[2], "w").write(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
PY
run "promtool check rules" promtool check rules --lint=all --lint-fatal "$tmp/rules.yml"
run "dashboard lint" python3 hack/dashboard-lint.py dashboards/*.json

if ((${#failed[@]})); then
  printf '\nlint: FAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nlint: all clean\n'
