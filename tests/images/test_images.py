"""The built operator and trainer images: users, entrypoints, every command, labels, layers, training.

Runs the images with podman (runc, offline). hack/build-images.sh builds them on first use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from gridwise.trainer_contract import EXIT_EARLY_STOP
from tests.images.conftest import PODMAN_RUN, REPO, Images, build_images, podman_run

pytestmark = [pytest.mark.images, pytest.mark.slow]

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
TRAINER_UID = 10001
OPERATOR_UID = 65532
# Console scripts each image must ship; the other gridwise command must be absent (issue 15).
OWN_COMMAND = {"operator": "gridwise", "trainer": "gridwise-trainer"}
FOREIGN_COMMAND = {"operator": "gridwise-trainer", "trainer": "gridwise"}
CKPT = re.compile(r"^ckpt-(\d+)\.pt$")
# Small CPU training: the digits MLP, no metrics server, only stop/end checkpoints unless asked.
TRAIN_ARGS = ("--model", "mlp", "--device", "cpu", "--metrics-port", "off", "--eval-every", "0")


def inspect(image: str) -> dict[str, object]:
    out = subprocess.run(["podman", "image", "inspect", image], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert isinstance(data, list) and len(data) == 1
    return dict(data[0])


def ref_of(images: Images, name: str) -> str:
    return str(getattr(images, name))


def checkpoint_dir(tmp_path: Path, owner: int = TRAINER_UID) -> Path:
    """A host directory the image's user owns, as a fsGroup-managed volume would be."""
    d = tmp_path / "checkpoints"
    d.mkdir()
    os.chown(d, owner, owner)
    return d


def steps_of(directory: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := CKPT.match(p.name)))


@pytest.mark.parametrize("name", ["operator", "trainer"])
def test_image_is_tagged_by_content_and_labelled(images: Images, name: str) -> None:
    ref = ref_of(images, name)
    tag = ref.rsplit(":", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{16}", tag), ref
    labels = inspect(ref)["Labels"]
    assert isinstance(labels, dict)
    assert labels["dev.gridwise.content-hash"] == tag
    assert labels["org.opencontainers.image.title"] == f"gridwise-{name}"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert labels["org.opencontainers.image.base.name"], "the base image must be named"


def test_unchanged_inputs_reuse_the_images(images: Images) -> None:
    """A second run builds nothing and prints the same refs for the same image IDs."""
    before = {n: inspect(ref_of(images, n))["Id"] for n in ("operator", "trainer")}
    proc = build_images()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [images.operator, images.trainer]
    assert proc.stderr.count("is up to date (same inputs): not rebuilding") == 2, proc.stderr
    assert "building localhost/" not in proc.stderr
    assert {n: inspect(ref_of(images, n))["Id"] for n in ("operator", "trainer")} == before


def test_an_input_change_retags_only_the_image_it_goes_into(images: Images, tmp_path: Path) -> None:
    """Editing operator code changes the operator's tag and leaves the trainer's alone."""
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".mypy_cache", "node_modules")
    for item in ("hack", "operator", "trainer-image", "requirements"):
        shutil.copytree(REPO / item, copy / item, ignore=ignore)
    for item in ("Dockerfile", ".dockerignore", "pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(REPO / item, copy / item)
    # Same files, outside git: the refs are the built ones (the hash is of content, not of a commit).
    same = subprocess.run(
        [str(copy / "hack" / "build-images.sh"), "--dry-run"], capture_output=True, text=True
    )
    assert same.returncode == 0, same.stderr
    assert same.stdout.split() == [images.operator, images.trainer]
    cli = copy / "operator" / "gridwise" / "cli.py"
    cli.write_text(cli.read_text() + "\n# an edit\n")
    edited = subprocess.run(
        [str(copy / "hack" / "build-images.sh"), "--dry-run"], capture_output=True, text=True, check=True
    )
    operator, trainer = edited.stdout.split()
    assert operator != images.operator and operator.startswith("localhost/gridwise-operator:")
    assert trainer == images.trainer


@pytest.mark.parametrize(("name", "uid"), [("operator", OPERATOR_UID), ("trainer", TRAINER_UID)])
def test_image_runs_as_non_root(images: Images, name: str, uid: int) -> None:
    config = inspect(ref_of(images, name))["Config"]
    assert isinstance(config, dict)
    assert config["User"] == f"{uid}:{uid}"
    # getpass.getuser() needs a passwd entry for the uid (kopf calls it for its peering identity).
    proc = podman_run(
        ref_of(images, name),
        "-c",
        "import getpass, os; print(os.getuid(), os.getgid(), getpass.getuser())",
        options=["--entrypoint", "python"],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(uid), str(uid), {"operator": "gridwise", "trainer": "trainer"}[name]]


def test_operator_entrypoint_answers_help(images: Images) -> None:
    proc = podman_run(images.operator, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: gridwise operator run" in proc.stdout
    assert "--kubeconfig" in proc.stdout


def test_trainer_entrypoint_answers_help(images: Images) -> None:
    proc = podman_run(images.trainer, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: gridwise-trainer" in proc.stdout
    assert "--checkpoint-dir" in proc.stdout


@pytest.mark.parametrize("name", ["operator", "trainer"])
def test_every_command_in_the_image_answers_help(images: Images, name: str) -> None:
    """No console script in either image may be broken (the operator image used to ship a
    gridwise-trainer that died with ModuleNotFoundError)."""
    script = (
        "cd /opt/gridwise/bin || exit 99; "
        "for s in *; do case $s in activate*|Activate*|python*) continue;; esac; "
        'out=$(timeout 120 ./$s --help 2>&1); echo "$s $?"; '
        'case $out in *Traceback*|*ModuleNotFoundError*) echo "$s TRACEBACK";; esac; done'
    )
    proc = podman_run(ref_of(images, name), "-c", script, options=["--entrypoint", "sh"], timeout=900)
    assert proc.returncode == 0, proc.stderr
    results = dict(line.rsplit(" ", 1) for line in proc.stdout.splitlines())
    assert OWN_COMMAND[name] in results, f"{OWN_COMMAND[name]} missing from the {name} image: {results}"
    assert FOREIGN_COMMAND[name] not in results, f"the {name} image ships {FOREIGN_COMMAND[name]}"
    broken = {cmd: rc for cmd, rc in results.items() if rc != "0"}
    assert not broken, f"commands failing `--help` in the {name} image: {broken}\n{proc.stdout}"


def test_kopf_finds_its_identity_as_the_image_user(images: Images) -> None:
    """What crashed the in-cluster operator on start: KeyError 'getpwuid(): uid not found: 65532'."""
    code = "from kopf._core.engines.peering import detect_own_id; print(detect_own_id(manual=False))"
    proc = podman_run(images.operator, "-c", code, options=["--entrypoint", "python"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("gridwise@"), proc.stdout


def test_operator_image_has_kopf_and_no_torch(images: Images) -> None:
    code = (
        "import importlib.util as u, kopf, kubernetes_asyncio, gridwise.k8s.runtime;"
        "print(u.find_spec('torch'), u.find_spec('gridwise_trainer'))"
    )
    proc = podman_run(images.operator, "-c", code, options=["--entrypoint", "python"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "None"]


def test_trainer_image_has_torch_and_no_kopf(images: Images) -> None:
    """Of the operator's package, the trainer image ships only the shared contract (exit codes...)."""
    code = (
        "import importlib.util as u, torch, gridwise_trainer.cli, gridwise.trainer_contract as c;"
        "print(torch.__version__, u.find_spec('kopf'), u.find_spec('gridwise.k8s'), c.EXIT_EARLY_STOP)"
    )
    proc = podman_run(images.trainer, "-c", code, options=["--entrypoint", "python"])
    assert proc.returncode == 0, proc.stderr
    version, kopf, operator_code, early_stop = proc.stdout.split()
    assert version.startswith("2.9.1") and kopf == "None" and operator_code == "None"
    assert early_stop == "85"


def test_operator_runs_on_a_read_only_root_filesystem(images: Images) -> None:
    """What the chart sets: readOnlyRootFilesystem with an emptyDir at /tmp."""
    proc = podman_run(
        images.operator,
        "-c",
        "import gridwise.k8s.runtime, gridwise.cli; gridwise.cli.main(['--version'])",
        options=["--read-only", "--tmpfs", "/tmp", "--entrypoint", "python"],
    )
    assert proc.returncode == 0, proc.stderr
    assert VERSION in proc.stdout + proc.stderr


def test_trainer_layers_keep_torch_apart_from_gridwise_code(images: Images) -> None:
    """torch and its CUDA wheels are one cached layer; the gridwise code is a small later one."""
    out = subprocess.run(
        ["podman", "history", "--no-trunc", "--format", "json", images.trainer],
        capture_output=True,
        text=True,
        check=True,
    )
    history = json.loads(out.stdout)[::-1]  # oldest first
    sizes = [(int(h.get("size", 0)), str(h.get("CreatedBy") or h.get("created_by") or "")) for h in history]
    heavy = [i for i, (size, by) in enumerate(sizes) if "requirements" in by and size > 1_000_000_000]
    code = [i for i, (_, by) in enumerate(sizes) if "gridwise-*.whl" in by and "pip install" in by]
    assert len(heavy) == 1, f"expected one >1 GB dependency layer: {[(s, b[:80]) for s, b in sizes]}"
    assert len(code) == 1, f"expected one gridwise install layer: {[(s, b[:80]) for s, b in sizes]}"
    assert heavy[0] < code[0]
    after = sum(size for size, _ in sizes[heavy[0] + 1 :])
    assert after < 20_000_000, f"everything above the dependency layer should be small, got {after} bytes"


def test_trainer_image_trains_on_cpu_and_resumes_from_its_checkpoint(images: Images, tmp_path: Path) -> None:
    ckpt = checkpoint_dir(tmp_path)
    mount = ["-v", f"{ckpt}:/checkpoints"]
    first = podman_run(
        images.trainer, "--total-steps", "6", "--checkpoint-every", "3", *TRAIN_ARGS, options=mount
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "starting fresh" in first.stderr
    assert steps_of(ckpt)[-1] == 6, sorted(p.name for p in ckpt.iterdir())
    assert (ckpt / "model.pt").is_file() and (ckpt / "carbon-label.json").is_file()
    label = json.loads((ckpt / "carbon-label.json").read_text())
    assert label, "the carbon label is empty"

    second = podman_run(
        images.trainer, "--total-steps", "10", "--checkpoint-every", "3", *TRAIN_ARGS, options=mount
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(r"resumed from ckpt-0*6\.pt at step 6", second.stderr), second.stderr[-3000:]
    assert steps_of(ckpt)[-1] == 10


def test_trainer_container_checkpoints_on_sigterm_and_exits_85(images: Images, tmp_path: Path) -> None:
    """`podman stop` sends the image's STOPSIGNAL (SIGTERM) to PID 1, the trainer itself; it checkpoints
    and exits 85 ("stopped early", docs/trainer-contract.md), never 0 before its last step."""
    ckpt = checkpoint_dir(tmp_path)
    name = f"gridwise-sigterm-{os.getpid()}"
    run = [*PODMAN_RUN, "-d", "--name", name, "-v", f"{ckpt}:/checkpoints", images.trainer]
    subprocess.run(
        [*run, "--total-steps", "1000000", "--checkpoint-every", "1000000", "--log-every", "5", *TRAIN_ARGS],
        capture_output=True,
        text=True,
        check=True,
    )
    try:
        deadline = time.monotonic() + 180
        while (
            "step="
            not in (logs := subprocess.run(["podman", "logs", name], capture_output=True, text=True)).stderr
        ):
            assert time.monotonic() < deadline, f"no training step logged:\n{logs.stdout}{logs.stderr}"
            time.sleep(1)
        subprocess.run(["podman", "stop", "-t", "60", name], capture_output=True, text=True, check=True)
        state = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.ExitCode}}", name],
            capture_output=True,
            text=True,
            check=True,
        )
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        assert state.stdout.strip() == str(EXIT_EARLY_STOP), logs.stderr[-3000:]
        assert "received SIGTERM" in logs.stderr and "paused cleanly" in logs.stderr
        steps = steps_of(ckpt)
        assert steps and steps[-1] > 0, sorted(p.name for p in ckpt.iterdir())
        assert steps[-1] < 1_000_000
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)


def test_trainer_refuses_bad_configuration_clearly(images: Images, tmp_path: Path) -> None:
    ckpt = checkpoint_dir(tmp_path)
    proc = podman_run(
        images.trainer, "--total-steps", "-5", *TRAIN_ARGS, options=["-v", f"{ckpt}:/checkpoints"]
    )
    assert proc.returncode == 2, proc.stderr
    assert "gridwise-trainer: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert list(ckpt.iterdir()) == [], "a refused configuration must not write anything"
