"""The library API: a plain PyTorch loop with a Session pauses on SIGTERM and resumes bit for bit, and
its /metrics is what the operator's scraper reads (the contract in docs/trainer-contract.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from torch import nn

from gridwise import trainer_contract as contract
from gridwise.progress import (
    ENERGY_METRIC,
    PROGRESS_METRIC,
    THROUGHPUT_METRIC,
    parse_metrics,
    parse_throughput,
)
from gridwise_trainer import Session
from gridwise_trainer.config import ConfigError
from gridwise_trainer.intensity import IntensitySource

from .interrupt import sigterm_at_step

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "byo-model" / "own_loop.py"
STEP = re.compile(r"^step=(\d+) loss=(\S+)$", re.M)


def _env(ckpt: Path, steps: int = 60) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWISE_")}
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        GRIDWISE_CHECKPOINT_DIR=str(ckpt),
        GRIDWISE_TOTAL_STEPS=str(steps),
        GRIDWISE_METRICS_PORT="off",
        GRIDWISE_CARBON_INTENSITY="300",
    )
    return env


def test_own_loop_sigterm_exit_85_then_resume_is_exact(tmp_path: Path) -> None:
    ref = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=_env(tmp_path / "ref"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ref.returncode == contract.EXIT_COMPLETE, ref.stderr[-2000:]
    expected = dict(STEP.findall(ref.stdout))
    assert sorted(int(s) for s in expected) == list(range(1, 61))  # 16 batches/epoch: crosses 3 epochs

    run = tmp_path / "run"
    # At step 21: mid-epoch 2 (16 batches per epoch).
    got = sigterm_at_step([sys.executable, str(EXAMPLE)], _env(run), STEP, 21, watch="stdout", timeout=60)
    first, err = got.watched, got.other
    assert got.returncode == contract.EXIT_EARLY_STOP, err[-2000:]
    assert "received SIGTERM" in err
    paused = max(int(s) for s, _ in STEP.findall(first))
    assert 21 <= paused < 60 and (run / f"ckpt-{paused:010d}.pt").exists()
    assert not (run / "final.pt").exists()

    second = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=_env(run), capture_output=True, text=True, timeout=120
    )
    assert second.returncode == contract.EXIT_COMPLETE, second.stderr[-2000:]
    assert f"at step {paused} (epoch 1, batch {paused - 16})" in second.stderr
    resumed = dict(STEP.findall(second.stdout))
    assert min(int(s) for s in resumed) == paused + 1
    combined = {**dict(STEP.findall(first)), **resumed}
    assert combined == expected, "the loss curve differs from the uninterrupted run"
    a = torch.load(run / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "ref" / "final.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b), "final weights differ"


def _tiny() -> tuple[nn.Linear, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _train(session: Session, model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if session.step_end(samples=8, loss=loss):
            break


def _ten_steps_then_scrape(ckpt: Path, grams_per_kwh: float) -> tuple[Session, str]:
    """10 of 40 steps with the metrics server on, and /metrics as the operator would read it then."""
    model, opt = _tiny()
    session = Session(ckpt, 40, metrics_port=0, window_steps=5, intensity=IntensitySource(grams_per_kwh),
                      handle_signals=False)  # fmt: skip
    with session:
        session.track(model=model, optimizer=opt)
        _train(session, model, opt, 10)
        assert session.port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{session.port}/metrics", timeout=5) as resp:
            return session, resp.read().decode()


def test_live_metrics_parse_with_the_operators_scraper(tmp_path: Path) -> None:
    assert (PROGRESS_METRIC, ENERGY_METRIC, THROUGHPUT_METRIC) == (
        contract.METRIC_PROGRESS,
        contract.METRIC_ENERGY,
        contract.METRIC_THROUGHPUT,
    )
    session, text = _ten_steps_then_scrape(tmp_path, 420.0)
    progress, energy = parse_metrics(text)
    assert progress == pytest.approx(10 / 40)
    assert energy > 0  # the CPU estimate on this machine, labelled as such
    # The CPU fallback is labelled as such, beside dcgm-exporter's UUID/Hostname labels.
    series = re.search(rf"^{contract.METRIC_ENERGY}_total{{([^}}]*)}}", text, re.M)
    assert series is not None, text
    assert 'gpu="cpu"' in series.group(1) and 'source="' in series.group(1), series.group(0)
    assert set(parse_throughput(text)) == {1}
    emissions = float(re.search(rf"^{contract.METRIC_EMISSIONS}_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert emissions == pytest.approx(energy / 3.6e6 * 420.0)
    assert f'{contract.METRIC_INTENSITY}{{signal_type="average"}} 420.0' in text
    assert session.exit_code == contract.EXIT_EARLY_STOP  # 10 of 40 steps: not complete
    assert (tmp_path / "ckpt-0000000010.pt").exists()  # leaving the block checkpointed


def test_stop_request_and_restore_continue_counters(tmp_path: Path) -> None:
    model, opt = _tiny()
    with Session(tmp_path, 20, handle_signals=False, window_steps=2) as s:
        s.track(model=model, optimizer=opt)
        s.request_stop()  # what SIGTERM does
        _train(s, model, opt, 20)
    assert s.step == 1 and s.exit_code == contract.EXIT_EARLY_STOP
    model2, opt2 = _tiny()
    with Session(tmp_path, 20, handle_signals=False, window_steps=2) as s2:
        s2.track(model=model2, optimizer=opt2)
        assert s2.restore() == 1
        assert torch.equal(model2.weight, model.weight)
        _train(s2, model2, opt2, 30)
    assert s2.step == 20 and s2.counters.steps == 20 and s2.exit_code == contract.EXIT_COMPLETE


def test_bad_inputs_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GRIDWISE_CHECKPOINT_DIR"):
        Session.from_env({"GRIDWISE_TOTAL_STEPS": "5"})
    with pytest.raises(ConfigError, match="GRIDWISE_TOTAL_STEPS='x'"):
        Session.from_env({"GRIDWISE_TOTAL_STEPS": "x", "GRIDWISE_CHECKPOINT_DIR": str(tmp_path)})
    with pytest.raises(TypeError, match="no state_dict"):
        Session(tmp_path, 5).track(model=object())  # type: ignore[arg-type]
    model, opt = _tiny()
    with Session(tmp_path, 5, handle_signals=False) as s:
        s.track(model=model)
        _train(s, model, opt, 2)
    # A checkpoint without the optimizer's state must not silently restart the optimizer.
    with Session(tmp_path, 5, handle_signals=False) as s, pytest.raises(ConfigError, match="no state for"):
        s.track(model=model, optimizer=opt).restore()
    # A corrupt newest checkpoint is set aside, not deleted, and the previous one is used.
    with Session(tmp_path, 5, handle_signals=False) as s:
        s.track(model=model)
        assert s.restore() == 2
        _train(s, model, opt, 1)
    newest = tmp_path / "ckpt-0000000003.pt"
    newest.write_bytes(newest.read_bytes()[:-10])
    with Session(tmp_path, 5, handle_signals=False) as s:
        s.track(model=model)
        assert s.restore() == 2
    assert (tmp_path / "ckpt-0000000003.pt.corrupt").exists()


def test_gpu_series_carry_the_meters_uuid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library user's energy joins dcgm-exporter on (UUID, Hostname), like the shipped loop's."""
    from gridwise_trainer import session as session_module
    from gridwise_trainer.energy import EnergyMeter

    class FakeGpu(EnergyMeter):  # the GPU is the one boundary this machine cannot run
        source, device_label, uuid = "nvml", "0", "GPU-1234abcd"

        def read_joules(self) -> float:
            return 42.0

    monkeypatch.setattr(session_module, "open_meter", lambda *_a, **_k: FakeGpu())
    monkeypatch.setenv("NODE_NAME", "gpu-node-7")
    _, text = _ten_steps_then_scrape(tmp_path, 1.0)
    series = re.search(rf"^{contract.METRIC_ENERGY}_total{{([^}}]*)}}", text, re.M)
    assert series is not None, text
    assert 'UUID="GPU-1234abcd"' in series.group(1) and 'Hostname="gpu-node-7"' in series.group(1), series
