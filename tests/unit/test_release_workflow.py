"""The release workflow does what issue 15 asks, and actionlint (with shellcheck) accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release.yaml"


def actionlint() -> str:
    found = shutil.which("actionlint") or str(Path.home() / ".cache/gridwise/lint-tools/bin/actionlint")
    if not Path(found).is_file():
        pytest.fail("actionlint not found: run hack/install-lint-tools.sh", pytrace=False)
    return found


def load() -> dict[str | bool, Any]:
    # bool: PyYAML reads the `on:` key as True (YAML 1.1).
    data: dict[str | bool, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def steps(job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = load()["jobs"][job]["steps"]
    return found


def test_actionlint_accepts_the_workflows() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail(
            "shellcheck not found: run hack/install-lint-tools.sh (apt package shellcheck)", pytrace=False
        )
    proc = subprocess.run(
        [actionlint(), "-color=false"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_really_checks(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows"
    bad.mkdir(parents=True)
    (bad / "x.yaml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    proc = subprocess.run(
        [actionlint(), "-color=false", str(bad / "x.yaml")], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0 and "nope" in proc.stdout


def test_release_runs_on_version_tags_only() -> None:
    # PyYAML reads the `on:` key as True.
    trigger = load()[True]
    assert set(trigger) == {"push"} and set(trigger["push"]) == {"tags"}


def test_images_are_multi_arch_with_sbom_provenance_and_signed() -> None:
    job = load()["jobs"]["images"]
    images = {m["image"]: m["dockerfile"] for m in job["strategy"]["matrix"]["include"]}
    assert images == {"gridwise-operator": "Dockerfile", "gridwise-trainer": "trainer-image/Dockerfile"}
    for dockerfile in images.values():
        assert (REPO / dockerfile).is_file()
    uses = {s.get("uses", "").split("@")[0] for s in steps("images")}
    assert {"docker/setup-qemu-action", "docker/setup-buildx-action", "sigstore/cosign-installer"} <= uses
    build = next(s for s in steps("images") if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["sbom"] is True and build["with"]["push"] is True
    runs = " ".join(s.get("run", "") for s in steps("images"))
    assert "cosign sign --yes" in runs and "cosign verify" in runs
    assert job["permissions"]["id-token"] == "write"  # keyless signing through GitHub OIDC


def test_chart_goes_to_oci_and_crds_to_the_release() -> None:
    runs = " ".join(s.get("run", "") for s in steps("chart"))
    assert (
        "helm package charts/gridwise" in runs and 'helm push "dist/gridwise-${VERSION}.tgz" "oci://' in runs
    )
    release = " ".join(s.get("run", "") for s in steps("github-release"))
    assert "crds/*.yaml" in release and "gh release create" in release and "crds.yaml" in release


def test_tag_must_match_chart_version_and_app_version() -> None:
    check = " ".join(s.get("run", "") for s in steps("check"))
    assert ".version" in check and ".appVersion" in check and "exit 1" in check
