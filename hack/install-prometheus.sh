#!/usr/bin/env bash
# Installs the Prometheus server and promtool (Debian package `prometheus`) for tests/metrics.
# Idempotent: does nothing when both are already on PATH. Needs root (or sudo) for apt-get.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  echo "install-prometheus: already installed: $(command -v prometheus) ($(prometheus --version 2>&1 | head -1))"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-prometheus: need root or sudo to apt-get install prometheus" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus: apt-get not found; install Prometheus (prometheus and promtool) by hand" >&2
  exit 1
fi

echo "install-prometheus: apt-get update"
$SUDO apt-get update -qq
echo "install-prometheus: apt-get install --no-install-recommends prometheus"
# The package's postinst starts a service where systemd runs; tests start their own server anyway.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
echo "install-prometheus: installed $(command -v prometheus) ($(prometheus --version 2>&1 | head -1))"
command -v promtool >/dev/null
