"""HF Trainer and Lightning callbacks: SIGTERM mid-epoch -> checkpoint -> exit 85 -> a new process
resumes -> the same final weights and step count as an uninterrupted run (tiny models from configs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gridwise.trainer_contract import EXIT_COMPLETE, EXIT_EARLY_STOP

from .interrupt import sigterm_at_step

SCRIPTS = Path(__file__).parent / "scripts"
STEP = re.compile(r"^step=(\d+)$", re.M)


def _env(ckpt: Path, steps: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWISE_")}
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        GRIDWISE_CHECKPOINT_DIR=str(ckpt),
        GRIDWISE_TOTAL_STEPS=str(steps),
        GRIDWISE_METRICS_PORT="off",
        GRIDWISE_CARBON_INTENSITY="250",
    )
    return env


def _run(script: str, ckpt: Path, steps: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script)],
        env=_env(ckpt, steps),
        capture_output=True,
        text=True,
        timeout=240,
    )


def _interrupt(script: str, ckpt: Path, steps: int, at: int) -> tuple[int, str, str]:
    cmd = [sys.executable, str(SCRIPTS / script)]
    got = sigterm_at_step(cmd, _env(ckpt, steps), STEP, at, watch="stdout")
    return got.returncode, got.watched, got.other


def _same_weights(a: Path, b: Path) -> None:
    x = torch.load(a, weights_only=True)
    y = torch.load(b, weights_only=True)
    assert x.keys() == y.keys()
    diff = [k for k in y if not torch.equal(x[k], y[k])]
    assert not diff, f"final weights differ in {diff[:3]}"


@pytest.mark.slow
def test_hf_trainer_sigterm_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    pytest.importorskip(
        "transformers", reason="needs the trainer-hf extra: pip install 'gridwise[trainer-hf]'"
    )
    steps = 30  # 12 steps per epoch
    ref = _run("hf_tiny.py", tmp_path / "ref", steps)
    assert ref.returncode == EXIT_COMPLETE, ref.stderr[-3000:]
    assert "global_step=30" in ref.stdout

    run = tmp_path / "run"
    rc, out, err = _interrupt("hf_tiny.py", run, steps, at=17)
    assert rc == EXIT_EARLY_STOP, err[-3000:]
    paused = max(int(s) for s in STEP.findall(out))
    assert 17 <= paused < 30 and paused % 12 != 0, paused  # mid-epoch
    ckpt = run / f"checkpoint-{paused}"
    assert (ckpt / "trainer_state.json").is_file()
    counters = json.loads((ckpt / "gridwise-counters.json").read_text())
    assert counters["steps"] == paused and counters["energy_j"] > 0
    assert not (run / "final.pt").exists()

    second = _run("hf_tiny.py", run, steps)
    assert second.returncode == EXIT_COMPLETE, second.stderr[-3000:]
    assert min(int(s) for s in STEP.findall(second.stdout)) == paused + 1
    assert "global_step=30" in second.stdout
    _same_weights(run / "final.pt", tmp_path / "ref" / "final.pt")


@pytest.mark.slow
def test_lightning_sigterm_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    pytest.importorskip(
        "lightning", reason="needs the trainer-lightning extra: pip install 'gridwise[trainer-lightning]'"
    )
    steps = 30  # 12 steps per epoch
    ref = _run("lightning_tiny.py", tmp_path / "ref", steps)
    assert ref.returncode == EXIT_COMPLETE, ref.stderr[-3000:]
    assert "global_step=30" in ref.stdout

    run = tmp_path / "run"
    rc, out, err = _interrupt("lightning_tiny.py", run, steps, at=17)
    # Lightning on its own raises SystemExit (exit 0) on SIGTERM: the callback must turn that into 85.
    assert rc == EXIT_EARLY_STOP, err[-3000:]
    paused = max(int(s) for s in STEP.findall(out))
    assert 17 <= paused < 30 and paused % 12 != 0, paused
    assert (run / f"gridwise-step={paused}.ckpt").is_file()
    assert not list(run.glob(".*.tmp")) and not (run / "final.pt").exists()

    second = _run("lightning_tiny.py", run, steps)
    assert second.returncode == EXIT_COMPLETE, second.stderr[-3000:]
    assert min(int(s) for s in STEP.findall(second.stdout)) == paused + 1
    assert "global_step=30" in second.stdout
    _same_weights(run / "final.pt", tmp_path / "ref" / "final.pt")


def test_hf_last_checkpoint_skips_an_interrupted_save(tmp_path: Path) -> None:
    pytest.importorskip(
        "transformers", reason="needs the trainer-hf extra: pip install 'gridwise[trainer-hf]'"
    )
    from gridwise_trainer.integrations.hf_callback import last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-9").mkdir()  # killed mid-save: no trainer_state.json
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")
    assert (tmp_path / "checkpoint-9").is_dir()  # kept for inspection, not deleted
