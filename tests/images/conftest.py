"""The images built by hack/build-images.sh (podman, no registry), shared by the image tests.

The first build of the trainer image fetches torch's ~3.5 GB of wheels and takes several minutes;
later sessions reuse the content-tagged images in seconds. Missing tools fail, naming the fix.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGES = REPO / "hack" / "build-images.sh"
INSTALL_HINT = "apt-get install -y podman buildah runc debootstrap"
# crun cannot run on this machine's hybrid cgroups; podman's default ulimits exceed the hard limit.
PODMAN_RUN = (
    "podman",
    "run",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--network",
    "none",
)


@dataclass(frozen=True)
class Images:
    operator: str
    trainer: str
    build_log: str  # build-images.sh's stderr (says whether it built or reused)


def build_images(*args: str) -> subprocess.CompletedProcess[str]:
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: run `{INSTALL_HINT}` (hack/install-node-deps.sh)", pytrace=False)
    return subprocess.run(
        [str(BUILD_IMAGES), *args], capture_output=True, text=True, check=False, cwd=REPO, timeout=3600
    )


@pytest.fixture(scope="session")
def images() -> Images:
    proc = build_images()
    if proc.returncode != 0:
        pytest.fail(f"hack/build-images.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    refs = proc.stdout.split()
    by_name = {
        name: [r for r in refs if r.startswith(f"localhost/gridwise-{name}:")]
        for name in ("operator", "trainer")
    }
    assert all(len(v) == 1 for v in by_name.values()), f"expected one ref per image, got {proc.stdout!r}"
    return Images(by_name["operator"][0], by_name["trainer"][0], proc.stderr)


def podman_run(
    image: str, *args: str, options: Sequence[str] = (), timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Runs the image once, offline, with the limits podman needs here."""
    return subprocess.run(
        [*PODMAN_RUN, "--rm", *options, image, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
