"""The carbon loop keeps only adaptations that measured cheaper and did not hurt the loss."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def intensity_server() -> Iterator[tuple[str, list[bytes]]]:
    bodies = [json.dumps({"grams_per_kwh": 123.5, "signal_type": "marginal"}).encode()]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies[-1]
            self.send_response(200 if body else 500)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/", bodies
    srv.shutdown()


def test_intensity_from_url_file_and_fallback(
    intensity_server: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    url, bodies = intensity_server
    src = IntensitySource(fixed=300.0, url=url, poll_seconds=0)
    r = src.read()
    assert r is not None and (r.grams_per_kwh, r.signal_type, r.source) == (123.5, "marginal", "url")
    bodies.append(b"")  # endpoint starts failing: keep the last good reading
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
