#!/usr/bin/env bash
# Builds (or reuses) the operator and trainer images with podman, without Docker or a registry.
#
#   hack/build-images.sh [operator] [trainer] [--env] [--dry-run]
#
# Prints one image ref per line on stdout (localhost/gridwise-operator:<hash>,
# localhost/gridwise-trainer:<hash>); with --env, GRIDWISE_OPERATOR_IMAGE=<ref> lines instead;
# with --dry-run, the refs the inputs hash to, building nothing.
# Progress and timings go to stderr.
#
# - Base: hack/base-image.sh (Debian bookworm by debootstrap, python3 3.11), or GRIDWISE_BASE_IMAGE
#   (e.g. the Dockerfiles' pinned python:3.11-slim where a registry is reachable).
# - Tags: a hash of everything that decides an image's content (its Dockerfile, .dockerignore, the
#   locked requirements, pyproject.toml, setup.py, README.md, LICENSE, the package it ships, the base
#   image's ID and the version). An existing tag is reused without building.
# - Dependencies: hash-locked (requirements/*.txt) wheels are fetched once into a wheelhouse
#   (~/.cache/gridwise/wheels, host pip with the host's CA bundle) and the builds run with
#   --network none, installing only from it. GRIDWISE_IMAGES_ONLINE=1 builds from the index instead,
#   with the host CA bundle mounted for pip. GRIDWISE_IMAGES_NO_CACHE=1 ignores podman's layer cache.
# - podman build/run use runc: crun cannot handle this machine's hybrid cgroups.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${GRIDWISE_CACHE:-$HOME/.cache/gridwise}"
images_dir="$cache/images"
wheelhouse="${GRIDWISE_WHEELHOUSE:-$cache/wheels}"
host_ca="${GRIDWISE_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
online="${GRIDWISE_IMAGES_ONLINE:-0}"

log() { echo "[build-images] $*" >&2; }
die() { log "$*"; exit 1; }

want=()
env_out=0
dry_run=0
for arg in "$@"; do
  case "$arg" in
    operator | trainer) want+=("$arg") ;;
    --env) env_out=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$arg' (expected operator, trainer, --env or --dry-run)" ;;
  esac
done
[[ ${#want[@]} -gt 0 ]] || want=(operator trainer)

command -v podman >/dev/null || die "podman not found: apt-get install -y podman buildah runc debootstrap (hack/install-node-deps.sh)"
command -v runc >/dev/null || die "runc not found: apt-get install -y runc"
mkdir -p "$images_dir"
# One build at a time per machine: parallel test sessions would otherwise build the same 7 GB twice.
if [[ $dry_run == 0 ]]; then
  exec 9>"$images_dir/.lock"
  flock 9
fi

if [[ -n "${GRIDWISE_BASE_IMAGE:-}" ]]; then
  base="$GRIDWISE_BASE_IMAGE"
else
  base=$("$root/hack/base-image.sh")
fi
# The base's ID when it is local (content-addressed); else the pinned reference itself.
base_id=$(podman image inspect --format '{{.Id}}' "$base" 2>/dev/null || echo "$base")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n1)
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown ]] && [[ -n $(git -C "$root" status --porcelain 2>/dev/null) ]]; then
  revision="$revision-dirty"
fi

# What each image copies in (must match its Dockerfile's COPY lines and .dockerignore).
inputs() {
  local name=$1
  local common=(.dockerignore pyproject.toml setup.py README.md LICENSE requirements/build.txt)
  case "$name" in
    operator) printf '%s\n' Dockerfile "${common[@]}" requirements/operator.txt; pkg=operator/gridwise ;;
    trainer)
      printf '%s\n' trainer-image/Dockerfile "${common[@]}" requirements/trainer.txt \
        operator/gridwise/__init__.py operator/gridwise/trainer_contract.py
      pkg=trainer-image/gridwise_trainer
      ;;
  esac
  (cd "$root" && find "$pkg" -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' ! -path '*/.mypy_cache/*' | LC_ALL=C sort)
}

content_hash() {
  local name=$1
  {
    printf 'image=%s\nbase=%s\nversion=%s\n' "$name" "$base_id" "$version"
    inputs "$name" | while read -r f; do
      [[ -f "$root/$f" ]] || die "missing build input $f"
      printf '%s  %s\n' "$(sha256sum "$root/$f" | cut -c1-64)" "$f"
    done
  } | sha256sum | cut -c1-16
}

fill_wheelhouse() {
  # Wheels for CPython 3.11 on glibc x86_64 (bookworm has glibc 2.36), whatever the host's Python.
  local lock=$1 plats=()
  for minor in $(seq 17 36); do plats+=(--platform "manylinux_2_${minor}_x86_64"); done
  plats+=(--platform manylinux2014_x86_64)
  mkdir -p "$wheelhouse"
  # pip re-hashes every file it already has (minutes for torch): skip a lock fetched completely before.
  # The build verifies every hash again, so a damaged file still fails loudly there.
  local stamp
  stamp="$wheelhouse/.fetched-$(sha256sum "$root/$lock" | cut -c1-16)"
  [[ -f $stamp ]] && return 0
  log "fetching the wheels of $lock into $wheelhouse (hash-checked; files already there are reused)"
  local pip=(python3 -m pip)
  [[ -x "${VIRTUAL_ENV:-}/bin/python" ]] && pip=("$VIRTUAL_ENV/bin/python" -m pip)
  "${pip[@]}" download --quiet --progress-bar off --no-deps --require-hashes --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "${plats[@]}" \
    -r "$root/$lock" -d "$wheelhouse" >&2 \
    || die "pip download of $lock failed (is PyPI reachable? is the host CA bundle in pip's config?)"
  touch "$stamp"
}

build() {
  local name=$1 ref=$2 dockerfile lock
  case "$name" in
    operator) dockerfile=Dockerfile; lock=requirements/operator.txt ;;
    trainer) dockerfile=trainer-image/Dockerfile; lock=requirements/trainer.txt ;;
  esac
  local args=(--runtime runc --layers --pull=never -f "$root/$dockerfile" -t "$ref"
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
    --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
    --label "dev.gridwise.content-hash=${ref##*:}"
    # Also set here: buildah 1.28's layer cache reuses a LABEL step whatever its ARG values are.
    --label "org.opencontainers.image.version=$version" --label "org.opencontainers.image.revision=$revision"
    --label "org.opencontainers.image.base.name=$base")
  [[ ${GRIDWISE_IMAGES_NO_CACHE:-0} == 1 ]] && args+=(--no-cache)
  if [[ $online == 1 ]]; then
    [[ -f $host_ca ]] || die "no CA bundle at $host_ca (set GRIDWISE_HOST_CA)"
    args+=(-v "$host_ca:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
  else
    fill_wheelhouse requirements/build.txt
    fill_wheelhouse "$lock"
    args+=(--network none -v "$wheelhouse:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_NO_INDEX=1)
  fi
  log "building $ref from $dockerfile on $base"
  local start end
  start=$(date +%s.%N)
  podman build "${args[@]}" "$root" >"$images_dir/$name-build.log" 2>&1 \
    || { tail -n 40 "$images_dir/$name-build.log" >&2; die "podman build of $name failed; full log: $images_dir/$name-build.log"; }
  end=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  echo "$secs" >"$images_dir/$name-${ref##*:}.build-seconds"
  log "built $ref in $secs s ($(podman image inspect --format '{{.Size}}' "$ref" | awk '{printf "%.0f MB", $1/1e6}'))"
}

for name in "${want[@]}"; do
  ref="localhost/gridwise-$name:$(content_hash "$name")"
  if [[ $dry_run == 1 ]]; then
    :
  elif podman image exists "$ref"; then
    log "$ref is up to date (same inputs): not rebuilding"
  else
    build "$name" "$ref"
  fi
  if [[ $env_out == 1 ]]; then
    echo "GRIDWISE_${name^^}_IMAGE=$ref"
  else
    echo "$ref"
  fi
done
