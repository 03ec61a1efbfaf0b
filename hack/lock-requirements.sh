#!/usr/bin/env bash
# Regenerates the hash-locked requirements of the images from pyproject.toml (pip-tools):
#   requirements/operator.txt  gridwise + [operator]   (kopf, kubernetes_asyncio; never torch)
#   requirements/trainer.txt   gridwise + [trainer]    (torch with its CUDA wheels, torchao, ...)
#   requirements/build.txt     setuptools, to build the gridwise wheel without build isolation
# Both images install them with --require-hashes, then the project with --no-deps. Run after changing
# a dependency in pyproject.toml; tests/images/test_requirements.py fails while a lock is stale.
# Resolves for CPython 3.11 on linux x86_64 (the images' platform). Needs pip-tools (the dev extra).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
compile=(pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe
  "$@")
export CUSTOM_COMPILE_COMMAND="hack/lock-requirements.sh"
"${compile[@]}" --extra operator --output-file requirements/operator.txt pyproject.toml
"${compile[@]}" --extra trainer --output-file requirements/trainer.txt pyproject.toml
"${compile[@]}" --output-file requirements/build.txt requirements/build.in
