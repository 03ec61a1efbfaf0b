#!/usr/bin/env bash
# Creates (or reuses) the project's virtualenv outside the checkout, so the large
# CUDA torch wheel is installed once per machine, then installs this checkout into it.
# Prints the venv path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
pyver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
venv="${GRIDWISE_VENV:-${GRIDWISE_CACHE:-$HOME/.cache/gridwise}/venv-py$pyver}"
extras="${GRIDWISE_EXTRAS:-dev}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "[venv] creating $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi
stamp="$venv/.gridwise-$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
if [[ ! -f "$stamp" ]]; then
  echo "[venv] installing gridwise[$extras] (torch is large: the first time takes a while)" >&2
  "$venv/bin/python" -m pip install --progress-bar off -e "$root[$extras]" >&2
  touch "$stamp"
else
  # Re-point the editable install at this checkout (cheap, no dependency resolution).
  "$venv/bin/python" -m pip install -q --no-deps -e "$root" >&2
fi
echo "$venv"
