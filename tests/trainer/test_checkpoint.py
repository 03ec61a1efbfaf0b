"""Atomic checkpoints, retention and every kind of bad file: each falls back with a clear log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from gridwise_trainer.checkpoint import MAGIC, CheckpointManager
from gridwise_trainer.data import Dataset

from .conftest import make_config, make_trainer


def _state(step: int) -> dict[str, object]:
    return {"step": step, "w": torch.full((4,), float(step)), "meta": {"epoch": step // 2}}


def _three(tmp_path: Path) -> CheckpointManager:
    mgr = CheckpointManager(tmp_path, job="job-a", keep=3)
    for step in (10, 20, 30, 40):
        mgr.save(step, _state(step))
    return mgr


def test_save_is_atomic_and_keeps_last_n(tmp_path: Path) -> None:
    mgr = _three(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-0000000020.pt", "ckpt-0000000030.pt", "ckpt-0000000040.pt"]  # no temp files
    found = mgr.load_latest()
    assert found is not None
    step, state, _ = found
    assert step == 40 and torch.equal(state["w"], torch.full((4,), 40.0))


def test_stale_temp_file_is_cleaned(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-0000000050.pt.tmp.123").write_bytes(b"half a checkpoint")
    CheckpointManager(tmp_path, job="job-a")
    assert not list(tmp_path.glob(".ckpt-*"))


def _flip(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: _flip(p, 100), "checksum mismatch"),
        (lambda p: p.write_bytes(b"\x00" * 64), "not a gridwise checkpoint"),
        (lambda p: p.write_bytes(MAGIC + b"{not json\n" + b"x" * 10), "unreadable header"),
    ],
    ids=["truncated", "bad-checksum", "garbage", "bad-header"],
)
def test_bad_newest_falls_back_to_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, message: str
) -> None:
    mgr = _three(tmp_path)
    newest = tmp_path / "ckpt-0000000040.pt"
    damage(newest)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="gridwise_trainer.checkpoint"):
        found = mgr.load_latest()
    assert found is not None and found[0] == 30
    assert message in caplog.text and "ckpt-0000000040.pt is unusable" in caplog.text
    assert "falling back to the previous one" in caplog.text


def test_foreign_job_and_foreign_file_are_skipped_not_touched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _three(tmp_path)
    CheckpointManager(tmp_path, job="job-b").save(50, _state(50))
    torch.save({"model": torch.zeros(2)}, tmp_path / "ckpt-0000000060.pt")  # a plain torch file
    with caplog.at_level(logging.WARNING):
        found = CheckpointManager(tmp_path, job="job-a").load_latest()
    assert found is not None and found[0] == 40
    assert "belongs to job 'job-b'" in caplog.text and "bad magic" in caplog.text
    assert (tmp_path / "ckpt-0000000050.pt").exists() and (tmp_path / "ckpt-0000000060.pt").exists()


def test_corrupt_file_is_set_aside_so_nothing_is_lost(tmp_path: Path) -> None:
    mgr = _three(tmp_path)
    _flip(tmp_path / "ckpt-0000000040.pt", 10)
    mgr.load_latest()
    assert (tmp_path / "ckpt-0000000040.pt.corrupt").exists()


def test_all_bad_means_fresh_start(tmp_path: Path) -> None:
    mgr = _three(tmp_path)
    for p in tmp_path.glob("ckpt-*.pt"):
        _flip(p, 5)
    assert mgr.load_latest() is None


def test_training_resumes_from_previous_when_newest_is_corrupt(
    tmp_path: Path, digits: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, total_steps=120, checkpoint_every=40, model="mlp")
    make_trainer(cfg, digits, model="mlp").run()
    newest = tmp_path / "ckpt-0000000120.pt"
    newest.write_bytes(newest.read_bytes()[:-7])
    with caplog.at_level(logging.INFO):
        res = make_trainer(cfg, digits, model="mlp").run()
    assert "resumed from ckpt-0000000080.pt at step 80" in caplog.text
    assert res.completed and res.step == 120 and res.accuracy is not None and res.accuracy > 0.9
