"""The carbon loop keeps only adaptations that measured cheaper and did not hurt the loss."""

from __future__ import annotations

import json
from pathlib import Path

from gridwise_trainer.carbon_loop import CarbonController, Knobs
from gridwise_trainer.config import Objective
from gridwise_trainer.data import Dataset
from gridwise_trainer.intensity import IntensitySource

from .conftest import make_config, make_trainer


def controller(obj: Objective, precision: str = "bf16", power: bool = False) -> CarbonController:
    return CarbonController(obj, Knobs(64), 256, precision, power)  # type: ignore[arg-type]


def feed(c: CarbonController, eps: float, loss: float = 1.0, intensity: float = 400.0) -> Knobs:
    return c.end_window(step=0, joules=eps * 1000, samples=1000, intensity=intensity, mean_loss=loss)


def test_accuracy_only_never_adapts() -> None:
    c = controller(Objective(1, 0, 0))
    for _ in range(5):
        assert feed(c, 1.0) == Knobs(64)
    assert c.state.phase == "settled" and not c.state.decisions


def test_cheaper_trial_is_kept_and_dearer_reverted() -> None:
    c = controller(Objective(1, 1, 1), precision="bf16", power=True)
    feed(c, 1.0)  # warm-up window ignored
    assert feed(c, 1.0) == Knobs(64, power_fraction=0.85)  # baseline -> power-limit trial
    assert feed(c, 0.8) == Knobs(64, power_fraction=0.85)  # kept: now the committed knobs
    assert c.state.decisions[-1].kept
    assert feed(c, 0.8) == Knobs(64, power_fraction=0.7)  # next step down
    assert feed(c, 0.85) == Knobs(64, power_fraction=0.85)  # dearer: reverted
    assert not c.state.decisions[-1].kept
    assert feed(c, 0.8) == Knobs(64, precision="none", power_fraction=0.85)  # next knob: fp32
    feed(c, 0.79)  # within min_gain (3%): reverted
    assert c.state.committed.precision is None


def test_loss_guard_reverts_cheap_but_harmful_trial() -> None:
    c = controller(Objective(0, 1, 1), precision="none")
    feed(c, 1.0)
    assert feed(c, 1.0, loss=0.3).batch_size == 128
    assert feed(c, 0.5, loss=2.0).batch_size == 64  # half the energy, but the loss blew up
    assert not c.state.decisions[-1].kept


def test_batch_growth_needs_environmental_pressure() -> None:
    c = controller(Objective(10, 1, 1), precision="none")
    assert c.pressure(400) < 0.5
    feed(c, 1.0)
    feed(c, 1.0)
    assert c.state.phase == "settled"  # nothing accuracy-neutral to try, batch not permitted
    dirty = controller(Objective(1, 0, 1), precision="none")
    assert dirty.pressure(800) > dirty.pressure(100)


def test_state_round_trip_drops_a_cut_off_trial() -> None:
    c = controller(Objective(1, 1, 1), precision="bf16")
    feed(c, 1.0)
    feed(c, 1.0)
    assert c.state.phase == "trial"
    c2 = controller(Objective(1, 1, 1), precision="bf16")
    c2.load_state_dict(c.state_dict())
    assert c2.state.phase == "baseline" and c2.knobs == Knobs(64)


def test_loop_applies_and_logs_adaptations(tmp_path: Path, digits: Dataset) -> None:
    cfg = make_config(
        tmp_path,
        total_steps=200,
        adapt=True,
        adapt_window_steps=20,
        model="mlp",
        objective=Objective(1, 1, 1),
    )
    res = make_trainer(cfg, digits, model="mlp").run()
    assert res.decisions, "the loop should have tried at least one adaptation"
    for d in res.decisions:
        assert d["knob"] == "batch" and d["trial_j_per_sample"] > 0
    assert res.accuracy is not None and res.accuracy > 0.9


def test_intensity_from_url_file_and_fallback(
    endpoint: tuple[str, list[tuple[int, bytes]]], tmp_path: Path
) -> None:
    url, answers = endpoint
    answers.append((200, json.dumps({"grams_per_kwh": 123.5, "signal_type": "marginal"}).encode()))
    src = IntensitySource(fixed=300.0, url=url, poll_seconds=0)
    r = src.read()
    assert r is not None and (r.grams_per_kwh, r.signal_type, r.source) == (123.5, "marginal", "url")
    answers.append((500, b""))  # endpoint starts failing: keep the last good reading
    r = src.read()
    assert r is not None and r.grams_per_kwh == 123.5
    failing = IntensitySource(fixed=300.0, url=url, poll_seconds=0)
    r = failing.read()
    assert r is not None and (r.grams_per_kwh, r.source) == (300.0, "env")
    f = tmp_path / "intensity.json"
    f.write_text('{"grams_per_kwh": 42}')
    r = IntensitySource(path=f, signal_type="average").read()
    assert r is not None and (r.grams_per_kwh, r.signal_type) == (42.0, "average")
    assert IntensitySource().read() is None
