"""Your own model in the shipped loop: examples/byo-model run end to end on CPU, as the image runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gridwise.trainer_contract import EXIT_COMPLETE, EXIT_CONFIG_ERROR, EXIT_EARLY_STOP

from .interrupt import sigterm_at_step

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "byo-model"
BIN = Path(sys.executable).parent / "gridwise-trainer"
STEP = re.compile(r" step=(\d+) loss=(\S+)")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWISE_")}
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(EXAMPLE), env.get("PYTHONPATH", "")]),
    )
    return env


def _cmd(ckpt: Path, steps: int, *extra: str, model: str = "byo_model.models:make") -> list[str]:
    return [
        str(BIN),
        "--checkpoint-dir",
        str(ckpt),
        "--total-steps",
        str(steps),
        "--model",
        model,
        "--dataset",
        "byo_model.data:load",
        "--metrics-port",
        "off",
        "--device",
        "cpu",
        "--adapt",
        "false",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1000",
        "--carbon-intensity",
        "200",
        *extra,
    ]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def test_own_model_with_every_compression_option(tmp_path: Path) -> None:
    comp = {
        "mixedPrecision": "bf16",
        "pruning": {"enabled": True, "amount": 0.5},
        "quantization": "int8-dynamic",
        "distillation": {"enabled": True},
    }
    res = _run(_cmd(tmp_path, 120, "--teacher-steps", "60", "--compression", json.dumps(comp)))
    assert res.returncode == EXIT_COMPLETE, res.stderr[-3000:]
    label = json.loads((tmp_path / "carbon-label.json").read_text())
    sys.path.insert(0, str(EXAMPLE))
    try:
        from byo_model.models import make
    finally:
        sys.path.remove(str(EXAMPLE))
    dense = sum(p.numel() for p in make().parameters())
    assert label["parameters"] < dense / 4  # a quarter-width student, then half its units pruned
    assert label["accuracy"] >= 0.8 and label["steps"] == 180
    assert label["quantized"]["linear_layers_quantized"] == 3
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model-int8.pt").is_file()
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["spec"]["factory"] == "byo_model.models:make" and saved["spec"]["pruned"] == 0.5


def test_own_pruned_model_sigterm_exit_85_and_exact_resume(tmp_path: Path) -> None:
    extra = ["--prune-at-fraction", "0.25", "--compression", '{"pruning": {"enabled": true, "amount": 0.5}}']
    ref = _run(_cmd(tmp_path / "ref", 160, *extra))
    assert ref.returncode == EXIT_COMPLETE, ref.stderr[-3000:]
    # At step 70, after the prune at step 40: the checkpoint holds a pruned model.
    first = sigterm_at_step(_cmd(tmp_path / "run", 160, *extra), _env(), STEP, 70)
    assert first.returncode == EXIT_EARLY_STOP, first.watched[-3000:]
    second = _run(_cmd(tmp_path / "run", 160, *extra))
    assert second.returncode == EXIT_COMPLETE, second.stderr[-3000:]
    assert "resumed from ckpt-" in second.stderr
    a = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize(
    ("model", "comp", "message"),
    [
        (
            "byo_model.models:make_residual",
            {"pruning": {"enabled": True}},
            "structured pruning is unsupported",
        ),
        (
            "byo_model.models:make_residual",
            {"distillation": {"enabled": True}},
            "distillation is unsupported",
        ),
        ("byo_model.nope:make", {}, "cannot import 'byo_model.nope'"),
        ("byo_model.models:missing", {}, "has no attribute 'missing'"),
    ],
)
def test_unsupported_or_missing_is_one_line_exit_2(
    tmp_path: Path, model: str, comp: object, message: str
) -> None:
    res = _run(_cmd(tmp_path, 10, "--compression", json.dumps(comp), model=model))
    assert res.returncode == EXIT_CONFIG_ERROR, res.stderr[-2000:]
    assert message in res.stderr
    assert not list(tmp_path.glob("ckpt-*"))  # refused before any training


def test_residual_model_gets_mixed_precision_and_int8(tmp_path: Path) -> None:
    comp = '{"mixedPrecision": "bf16", "quantization": "int8-dynamic"}'
    res = _run(_cmd(tmp_path, 40, "--compression", comp, model="byo_model.models:make_residual"))
    assert res.returncode == EXIT_COMPLETE, res.stderr[-3000:]
    assert (
        json.loads((tmp_path / "carbon-label.json").read_text())["quantized"]["linear_layers_quantized"] == 3
    )


def test_example_manifest_and_dockerfile_agree() -> None:
    from datetime import UTC, datetime

    from gridwise.api import parse_job_spec

    raw = yaml.safe_load((EXAMPLE / "carbonawarejob.yaml").read_text())
    spec = parse_job_spec(raw["metadata"]["name"], "default", raw["spec"], datetime(2030, 1, 1, tzinfo=UTC))
    assert spec.total_steps == 3000
    docker = (EXAMPLE / "Dockerfile").read_text()
    assert "GRIDWISE_MODEL=byo_model.models:make" in docker and "FROM ${TRAINER_IMAGE}" in docker
