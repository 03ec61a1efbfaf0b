#!/usr/bin/env bash
# Regenerates charts/gridwise/README.md from values.yaml's `# --` comments and README.md.gotmpl
# with helm-docs (installed by hack/install-lint-tools.sh). tests/cluster/test_chart_ecosystem.py
# fails when the committed README differs from what this writes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$("$root/hack/install-lint-tools.sh")"
"$bin/helm-docs" --chart-search-root "$root/charts" --template-files README.md.gotmpl
echo "chart-docs: wrote charts/gridwise/README.md"
