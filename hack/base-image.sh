#!/usr/bin/env bash
# Makes (or reuses) a local stand-in for python:3.11-slim from Debian packages, so both images build
# with podman on a machine that reaches Debian's and PyPI's mirrors but no container registry.
# bookworm's python3 is 3.11, the same minor version as the official base.
#
# The rootfs is cached as a tarball under ~/.cache/gridwise/images, keyed by what decides its content
# (this script, the suite, the mirror and the package list); the podman tag carries the tarball's
# sha256, so a changed rootfs can never hide behind an old tag. Prints the image ref.
#
# Needs root, debootstrap and podman (apt-get install debootstrap podman buildah runc).
set -euo pipefail

suite="${GRIDWISE_BASE_SUITE:-bookworm}"
# The mirror apt already uses here (a proxy or snapshot works too); override with GRIDWISE_DEBIAN_MIRROR.
mirror="${GRIDWISE_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  mirror=$(grep -rhoE '^(URIs:|deb)\s+\S+debian/?(\s|$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://\S+' | head -n1 || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
fi
# python3-venv gives `python3 -m venv` (pip comes from its bundled wheel); ca-certificates and tzdata
# match what python:3.11-slim ships; passwd (useradd) is already in minbase.
packages="python3,python3-venv,ca-certificates,tzdata"
cache="${GRIDWISE_CACHE:-$HOME/.cache/gridwise}/images"
script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-64)
key=$(printf '%s\n' "$script_hash" "$suite" "$mirror" "$packages" | sha256sum | cut -c1-16)
dir="$cache/base-$suite-$key"
tarball="$dir/rootfs.tar"

log() { echo "[base-image] $*" >&2; }

if [[ ! -f "$dir/.complete" ]]; then
  for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || { log "missing $tool: apt-get install -y debootstrap podman buildah runc"; exit 1; }
  done
  [[ $(id -u) == 0 ]] || { log "debootstrap needs root"; exit 1; }
  mkdir -p "$dir"
  work=$(mktemp -d "$cache/.rootfs-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "debootstrap --variant=minbase $suite from $mirror with $packages (about a minute)"
  start=$(date +%s)
  debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1 \
    || { log "debootstrap failed; see $dir/debootstrap.log"; tail -n 20 "$dir/debootstrap.log" >&2; exit 1; }
  root="$work/rootfs"
  # What a slim image drops: package caches and lists, docs, man pages, logs.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
  # A fixed mtime and sorted entries make the tarball depend on file contents only.
  chroot "$root" dpkg-query -W -f '${Package}=${Version}\n' | sort >"$dir/packages.txt"
  tar --sort=name --numeric-owner --mtime=@0 --clamp-mtime \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  sha256sum "$tarball" | cut -c1-64 >"$dir/rootfs.sha256"
  echo "$(($(date +%s) - start))" >"$dir/build-seconds"
  touch "$dir/.complete"
  log "rootfs $(du -h "$tarball" | cut -f1) in $(cat "$dir/build-seconds") s; packages in $dir/packages.txt"
fi

ref="localhost/gridwise-base:$suite-$(cut -c1-16 "$dir/rootfs.sha256")"
if ! podman image exists "$ref"; then
  log "importing $tarball as $ref"
  podman import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    --message "debootstrap $suite ($packages)" "$tarball" "$ref" >/dev/null
fi
echo "$ref"
