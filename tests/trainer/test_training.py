"""The baseline learns digits; real subprocess pause/resume continues the loss curve bit for bit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gridwise.trainer_contract import EXIT_EARLY_STOP
from gridwise_trainer.data import Dataset

from .conftest import make_config, make_trainer
from .interrupt import sigterm_at_step

STEP = re.compile(r" step=(\d+) loss=(\S+)")


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_baseline_reaches_accuracy(tmp_path: Path, digits: Dataset, model: str) -> None:
    res = make_trainer(make_config(tmp_path, total_steps=300), digits, model=model).run()
    assert res.completed and res.accuracy is not None
    assert res.accuracy >= 0.90, f"{model} test accuracy {res.accuracy:.3f}"


def _cmd(ckpt: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gridwise_trainer.cli",
        "--checkpoint-dir",
        str(ckpt),
        "--total-steps",
        "240",
        "--metrics-port",
        "0",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1000",
        "--adapt",
        "false",
        "--carbon-intensity",
        "120",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(ckpt: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(ckpt, extra), capture_output=True, text=True, env=_env(), timeout=120)


def _losses(text: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in STEP.finditer(text)}


def _run_and_interrupt(ckpt: Path, extra: list[str], at_step: int) -> tuple[int, str]:
    got = sigterm_at_step(_cmd(ckpt, extra), _env(), STEP, at_step, timeout=180)
    return got.returncode, got.watched


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        [],
        # fp16 exercises the GradScaler state; pruning at 25% rebuilds the model before the pause.
        # MLP, because fp16 convolutions on CPU are ~10x slower than fp32 (see BENCHMARKS.md).
        [
            "--model",
            "mlp",
            "--prune-at-fraction",
            "0.25",
            "--compression",
            '{"mixedPrecision": "fp16", "pruning": {"enabled": true, "amount": 0.5}}',
        ],
    ],
    ids=["fp32", "fp16-pruned"],
)
def test_sigterm_then_resume_is_exact(tmp_path: Path, extra: list[str]) -> None:
    ref = _run(tmp_path / "ref", extra)
    assert ref.returncode == 0, ref.stderr[-2000:]
    expected = _losses(ref.stderr)
    assert sorted(expected) == list(range(1, 241))

    rc, first = _run_and_interrupt(tmp_path / "run", extra, at_step=90)
    assert rc == EXIT_EARLY_STOP, first[-2000:]  # stopped early: never 0, which would complete a Job
    assert "received SIGTERM" in first and "paused cleanly" in first
    part1 = _losses(first)
    paused_at = max(part1)
    assert 90 <= paused_at < 240
    assert (tmp_path / "run" / f"ckpt-{paused_at:010d}.pt").exists()

    second = _run(tmp_path / "run", extra)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resumed from ckpt-{paused_at:010d}.pt at step {paused_at}" in second.stderr
    part2 = _losses(second.stderr)
    assert min(part2) == paused_at + 1
    combined = {**part1, **part2}
    missing = [s for s in expected if s not in combined]
    assert not missing, f"steps never logged by either run: {missing[:5]}"
    mismatched = [s for s in expected if combined.get(s) != expected[s]]
    assert not mismatched, f"loss differs from the uninterrupted run at steps {mismatched[:5]}"
    assert (tmp_path / "run" / "carbon-label.json").exists()
    a = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b), "final weights differ"
