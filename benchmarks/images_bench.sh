#!/usr/bin/env bash
# Image build times and sizes (issue 10 item 1, issue 15 item 5), measured on a throwaway copy of the
# build inputs so the real content-tagged images are untouched. For each image, in one run:
#   cold     podman's layer cache ignored (GRIDWISE_IMAGES_NO_CACHE=1); base image and wheelhouse warm
#   edit     one line of gridwise code changed: the dependency layers come from the cache
#   reuse    nothing changed: the tag exists, nothing is built
# and the bytes a code change adds (the layers above the locked dependencies) against the whole image,
# which is what the former single-layer trainer image rebuilt and shipped on every code change.
# Usage: benchmarks/images_bench.sh [operator] [trainer]   (prints a markdown table)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=(operator trainer)
tmp=$(mktemp -d)
made=()
cleanup() {
  for ref in "${made[@]}"; do podman rmi "$ref" >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
for item in hack operator trainer-image requirements Dockerfile .dockerignore pyproject.toml setup.py README.md LICENSE; do
  cp -a "$root/$item" "$tmp/$item"
done
find "$tmp" -name __pycache__ -prune -exec rm -rf {} +

seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
timed_build() { # name -> "seconds ref"
  local start end ref
  start=$(date +%s.%N)
  ref=$("$tmp/hack/build-images.sh" "$1")
  end=$(date +%s.%N)
  echo "$(seconds "$start" "$end") $ref"
}
edit() { # a distinct, harmless change to the package's CLI module
  local file
  case "$1" in
    operator) file="$tmp/operator/gridwise/cli.py" ;;
    trainer) file="$tmp/trainer-image/gridwise_trainer/cli.py" ;;
  esac
  echo "# benchmark edit $(date +%s%N)" >>"$file"
}
layer_bytes() { # ref -> "total above_deps" in bytes
  podman history --format json "$1" | python3 -c '
import json, sys
h = json.load(sys.stdin)[::-1]
sizes = [int(e.get("size", 0)) for e in h]
by = [str(e.get("CreatedBy") or e.get("created_by") or "") for e in h]
deps = max(range(1, len(sizes)), key=lambda i: sizes[i])  # the locked dependencies: the biggest layer above the base
print(sum(sizes), sum(sizes[deps + 1:]))'
}

echo "| image | cold build | code-edit rebuild | unchanged (reuse) | cold / edit | image size | bytes added by a code edit |"
echo "|---|---|---|---|---|---|---|"
for name in "${want[@]}"; do
  edit "$name"
  read -r cold ref_cold < <(GRIDWISE_IMAGES_NO_CACHE=1 timed_build "$name")
  made+=("$ref_cold")
  edit "$name"
  read -r warm ref_warm < <(timed_build "$name")
  made+=("$ref_warm")
  read -r reuse _ < <(timed_build "$name")
  read -r total above < <(layer_bytes "$ref_warm")
  printf '| %s | %s s | %s s | %s s | x%s | %s MB | %s MB (%s%% of the image) |\n' "$name" "$cold" "$warm" "$reuse" \
    "$(awk -v a="$cold" -v b="$warm" 'BEGIN { printf "%.1f", a / b }')" \
    "$(awk -v t="$total" 'BEGIN { printf "%.0f", t / 1e6 }')" \
    "$(awk -v t="$above" 'BEGIN { printf "%.2f", t / 1e6 }')" \
    "$(awk -v a="$above" -v t="$total" 'BEGIN { printf "%.3f", 100 * a / t }')"
done
