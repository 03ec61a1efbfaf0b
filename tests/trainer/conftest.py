"""Shared fixtures: small, real runs on scikit-learn's digits; no fakes above the pynvml boundary."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gridwise_trainer.config import TrainerConfig
from gridwise_trainer.data import Dataset, load_digits_dataset
from gridwise_trainer.energy import EstimateMeter
from gridwise_trainer.intensity import IntensitySource
from gridwise_trainer.loop import Phase, Trainer
from gridwise_trainer.metrics import TrainerMetrics
from gridwise_trainer.model import default_spec
from gridwise_trainer.session import Counters

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits_dataset()


def make_config(tmp: Path, **kw: object) -> TrainerConfig:
    base: dict[str, object] = {
        "checkpoint_dir": tmp,
        "total_steps": 300,
        "metrics_port": None,
        "adapt": False,
        "log_every": 0,
        "checkpoint_every": 1000,
        "carbon_intensity": 250.0,
    }
    base.update(kw)
    return TrainerConfig(**base)  # type: ignore[arg-type]


def make_trainer(
    cfg: TrainerConfig,
    data: Dataset,
    metrics: TrainerMetrics | None = None,
    model: str = "cnn",
    **phase_kw: object,
) -> Trainer:
    phase = Phase(
        phase_kw.pop("name", "model"),  # type: ignore[arg-type]
        phase_kw.pop("spec", default_spec(model)),  # type: ignore[arg-type]
        cfg.total_steps,
        cfg.checkpoint_dir,
        cfg.seed,
        **phase_kw,  # type: ignore[arg-type]
    )
    return Trainer(
        cfg,
        phase,
        data,
        torch.device("cpu"),
        metrics or TrainerMetrics(),
        EstimateMeter(),
        IntensitySource(fixed=cfg.carbon_intensity),
        Counters(),
        cfg.total_steps,
        threading.Event(),
    )


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    """A local HTTP endpoint (the operator's /v1/signal, say) answering the last (status, body) queued."""
    answers: list[tuple[int, bytes]] = [(200, b"{}")]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = answers[-1]
            self.send_response(code)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/", answers
    srv.shutdown()
    srv.server_close()
