"""The trainer reads the grid signal the operator serves (issue 14, item 4), and never dies of it.

The operator side is its real HTTP server (`HealthServer` with the `SignalEndpoint`) on loopback, in
a background event loop, answering from a SignalBoard the way the reconciler fills it; the trainer
side is the real `IntensitySource`, `Session` and shipped loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gridwise import trainer_contract as contract
from gridwise.job_signal import JobSignal, SignalBoard
from gridwise.k8s.runtime import HealthServer
from gridwise.k8s.signal_api import SignalEndpoint
from gridwise.metrics import OperatorMetrics
from gridwise_trainer import carbon_loop
from gridwise_trainer.config import TrainerConfig
from gridwise_trainer.intensity import IntensitySource
from gridwise_trainer.job import run_job
from gridwise_trainer.session import Session

T0 = datetime(2030, 1, 6, 12, tzinfo=UTC)
# status.carbonIntensity as gridwise.step.build_status writes it.
CARBON = {
    "gramsPerKWh": 317.25,
    "signalType": "marginal",
    "provider": "watttime",
    "zone": "CAISO_NORTH",
    "stale": False,
    "display": "317g/kWh marginal",
}


@contextlib.contextmanager
def operator_http(board: SignalBoard) -> Iterator[str]:
    """The operator's HTTP server in its own event loop thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = HealthServer(OperatorMetrics(), "127.0.0.1", 0)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    server.signal = SignalEndpoint(board)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def board() -> SignalBoard:
    b = SignalBoard()
    b.put("ml", "train", JobSignal(CARBON, (), T0))
    return b


def test_the_operators_document_is_read_as_the_operator_decided(board: SignalBoard) -> None:
    with operator_http(board) as base:
        r = IntensitySource(fixed=100.0, url=contract.signal_url(base, "ml", "train")).read()
    assert r is not None
    assert (r.grams_per_kwh, r.signal_type, r.source, r.stale) == (317.25, "marginal", "url", False)


def test_a_session_exports_and_books_the_operators_intensity(board: SignalBoard, tmp_path: Path) -> None:
    """Session.from_env with the env the operator sets: metric, emissions and label inputs agree."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with operator_http(board) as base:
        env = {
            contract.ENV_CHECKPOINT_DIR: str(tmp_path),
            contract.ENV_TOTAL_STEPS: "40",
            contract.ENV_METRICS_PORT: "0",
            contract.ENV_SIGNAL_TYPE: "average",  # the document's own type wins
            contract.ENV_CARBON_URL: contract.signal_url(base, "ml", "train"),
        }
        session = Session.from_env(env, window_steps=5, handle_signals=False)
        with session:
            session.track(model=model, optimizer=opt)
            for _ in range(10):
                loss = model(torch.randn(8, 4)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                session.step_end(samples=8, loss=loss)
            assert session.port is not None
            with urllib.request.urlopen(f"http://127.0.0.1:{session.port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
    assert f'{contract.METRIC_INTENSITY}{{signal_type="marginal"}} 317.25' in text
    energy = float(re.search(rf"^{contract.METRIC_ENERGY}_total{{[^}}]*}} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    emissions = float(re.search(rf"^{contract.METRIC_EMISSIONS}_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert emissions == pytest.approx(energy / 3.6e6 * 317.25)
    assert (session.counters.last_intensity, session.counters.signal_type) == (317.25, "marginal")


def test_the_shipped_loops_carbon_objective_and_label_use_it(
    board: SignalBoard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[float | None] = []
    original = carbon_loop.CarbonController.end_window

    def spy(self: Any, step: int, joules: float, samples: int, intensity: float | None, *a: Any) -> Any:
        seen.append(intensity)
        return original(self, step, joules, samples, intensity, *a)

    monkeypatch.setattr(carbon_loop.CarbonController, "end_window", spy)
    with operator_http(board) as base:
        cfg = TrainerConfig(
            checkpoint_dir=tmp_path,
            total_steps=60,
            model="mlp",
            device="cpu",
            metrics_port=None,
            carbon_url=contract.signal_url(base, "ml", "train"),
            log_every=0,
            checkpoint_every=1000,
            adapt_window_steps=20,
        )
        outcome = run_job(cfg)
    assert outcome.completed and outcome.label is not None
    assert seen and set(seen) == {317.25}, "the carbon objective's pressure is the operator's intensity"
    assert outcome.label.intensity_grams_per_kwh == pytest.approx(317.25)
    assert outcome.label.signal_type == "marginal"
    written = json.loads((tmp_path / "carbon-label.json").read_text())
    assert written["intensity_grams_per_kwh"] == pytest.approx(317.25) and written["emissions_grams"] > 0
    # The label's intensity is energy-weighted (317.25 give or take a float ulp, so 317.2 or 317.3).
    shown = f"{outcome.label.intensity_grams_per_kwh:.1f} g/kWh (marginal)"
    assert shown.startswith("317.") and shown in (tmp_path / "carbon-label.md").read_text()  # no "n/a"


# -- parsing and failure: every answer keeps training going -----------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"gramsPerKWh": 210.5, "signalType": "marginal"}, (210.5, "marginal")),
        ({"grams_per_kwh": 123.5, "signal_type": "marginal"}, (123.5, "marginal")),  # contract 1.0
        ({"gramsPerKWh": 99}, (99.0, "average")),
        (321, (321.0, "average")),
    ],
)
def test_current_and_older_documents_parse(
    endpoint: tuple[str, list[tuple[int, bytes]]], body: Any, expected: tuple[float, str]
) -> None:
    url, answers = endpoint
    answers.append((200, json.dumps(body).encode()))
    r = IntensitySource(url=url).read()
    assert r is not None and (r.grams_per_kwh, r.signal_type) == expected


@pytest.mark.parametrize(
    "answer",
    [
        (200, b'{"gramsPerKWh": null, "stale": true}'),  # the operator has no reading yet
        (200, b'{"gramsPerKWh": true}'),
        (200, b'{"gramsPerKWh": [1]}'),
        (200, b'{"gramsPerKWh": 99999}'),
        (200, b"not json"),
        (404, b'{"error": "no such CarbonAwareJob is known to this operator"}'),
        (503, b'{"error": "starting"}'),
    ],
)
def test_a_bad_answer_keeps_the_last_reading_then_the_fixed_one_with_a_log_line(
    endpoint: tuple[str, list[tuple[int, bytes]]], answer: tuple[int, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    url, answers = endpoint
    answers.append((200, b'{"gramsPerKWh": 250, "signalType": "average"}'))
    src = IntensitySource(url=url, poll_seconds=0)
    assert src.read() is not None
    answers.append(answer)
    with caplog.at_level(logging.WARNING, logger="gridwise_trainer.intensity"):
        r = src.read()
    assert r is not None and r.grams_per_kwh == 250.0
    assert "carbon intensity unavailable" in caplog.text
    assert "keeping 250 g/kWh average from url" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gridwise_trainer.intensity"):
        fresh = IntensitySource(fixed=180.0, url=url, poll_seconds=0).read()
        none = IntensitySource(url=url, poll_seconds=0).read()
    assert fresh is not None and (fresh.grams_per_kwh, fresh.source) == (180.0, "env")
    assert none is None and "emissions are n/a until it answers" in caplog.text


def test_an_unreachable_operator_is_a_log_line_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    with socket_closed_port() as port, caplog.at_level(logging.WARNING, logger="gridwise_trainer.intensity"):
        assert IntensitySource(url=f"http://127.0.0.1:{port}/v1/signal/ml/train", timeout_s=1).read() is None
    assert "carbon intensity unavailable" in caplog.text


def test_a_stale_signal_is_used_and_said_once(
    endpoint: tuple[str, list[tuple[int, bytes]]], caplog: pytest.LogCaptureFixture
) -> None:
    """Stale: the operator follows its last good forecast; the trainer books what the operator books."""
    url, answers = endpoint
    answers.append((200, b'{"gramsPerKWh": 400, "signalType": "average", "stale": true}'))
    src = IntensitySource(url=url, poll_seconds=0)
    with caplog.at_level(logging.INFO, logger="gridwise_trainer.intensity"):
        first, second = src.read(), src.read()
        answers.append((200, b'{"gramsPerKWh": 380, "signalType": "average", "stale": false}'))
        third = src.read()
    assert first is not None and first.stale and first.grams_per_kwh == 400.0 and second == first
    assert third is not None and not third.stale and third.grams_per_kwh == 380.0
    assert caplog.text.count("the carbon signal is stale") == 1
    assert "fresh again" in caplog.text


def test_the_session_reads_the_poll_interval_from_env(tmp_path: Path) -> None:
    env = {
        contract.ENV_CHECKPOINT_DIR: str(tmp_path),
        contract.ENV_TOTAL_STEPS: "5",
        contract.ENV_CARBON_POLL_SECONDS: "7.5",
    }
    assert Session.from_env(env, handle_signals=False).intensity.poll_seconds == 7.5
    from gridwise_trainer.config import ConfigError

    with pytest.raises(ConfigError, match="GRIDWISE_CARBON_POLL_SECONDS"):
        Session.from_env({**env, contract.ENV_CARBON_POLL_SECONDS: "often"}, handle_signals=False)


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port
