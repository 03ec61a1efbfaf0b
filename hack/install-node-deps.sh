#!/usr/bin/env bash
# Debian packages the real node and the image builds need (containerd, runc, CNI plugins,
# podman/buildah, debootstrap, busybox-static, iptables, gcc for the pause binary).
# Idempotent: installs only what is missing; prints nothing else when all are present.
#   hack/install-node-deps.sh            install what is missing (needs root or sudo)
#   hack/install-node-deps.sh --check    exit 1 and list what is missing, install nothing
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins podman buildah debootstrap busybox-static iptables iproute2 gcc libc6-dev openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "missing Debian packages: ${missing[*]} (run hack/install-node-deps.sh)" >&2
  exit 1
fi
command -v apt-get >/dev/null || { echo "apt-get not found; install these by hand: ${missing[*]}" >&2; exit 1; }
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
# Several sessions may share one machine: serialise apt through a lock when flock is available.
lock=(); command -v flock >/dev/null && lock=(flock /tmp/gridwise-apt.lock)
export DEBIAN_FRONTEND=noninteractive
"${lock[@]}" $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2 || {
  "${lock[@]}" $sudo apt-get update >&2
  "${lock[@]}" $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
}
