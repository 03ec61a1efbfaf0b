"""One trainer job end to end: (teacher ->) model, export, int8 export, carbon label."""

from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import elastic
from .checkpoint import decode
from .config import ConfigError, TrainerConfig
from .data import load_dataset
from .energy import open_meter
from .intensity import IntensitySource
from .label import CarbonLabel
from .loop import Phase, PhaseResult, Trainer, evaluate
from .metrics import TrainerMetrics
from .model import (
    ModelSpec,
    build_model,
    count_parameters,
    default_spec,
    estimate_flops,
    require_prunable,
    serialized_size,
)
from .model import student_spec as make_student_spec
from .session import Counters

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    completed: bool
    result: PhaseResult | None
    label: CarbonLabel | None
    metrics_port: int | None

    @property
    def reform(self) -> bool:
        """Stopped because another rank left or was asked to: torchrun should re-form the group."""
        return not self.completed and self.result is not None and self.result.reform


def choose_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA device is visible")
    return dev


def _load_teacher(path: Path) -> nn.Module:
    """A teacher from any gridwise checkpoint file (e.g. another job's final one)."""
    try:
        _header, state = decode(path, expected_job=None)
    except Exception as exc:
        raise ConfigError(f"teacher checkpoint {path} is unusable: {exc}") from None
    model = build_model(ModelSpec.from_json(state["spec"]))
    model.load_state_dict(state["model"])
    return model


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_compression(cfg: TrainerConfig, base: ModelSpec) -> None:
    """Refuse, before any training, compression the model cannot take, naming what is unsupported."""
    if base.kind != "custom":
        return
    if cfg.compression.pruning.enabled:
        require_prunable(build_model(base), base.factory)
    if cfg.compression.distillation.enabled:
        make_student_spec(base)


def run_job(cfg: TrainerConfig, stop: threading.Event | None = None) -> JobOutcome:
    """Train what the settings ask for; returns early (completed=False) when `stop` is set."""
    cfg.validate()
    stop = stop or threading.Event()
    device = choose_device(cfg.device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.world_size > 1:
        elastic.init_process_group(device)
    try:
        data = load_dataset(cfg.dataset)
        base = default_spec(cfg.model)
        _check_compression(cfg, base)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    metrics = TrainerMetrics()
    port = None
    if cfg.metrics_port is not None and cfg.rank == 0:
        try:
            port = metrics.serve(cfg.metrics_port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on port {cfg.metrics_port}: {exc}") from None
    meter = open_meter(device.type, cfg.cpu_tdp_watts)
    metrics.set_device(meter.uuid)
    intensity = IntensitySource(
        cfg.carbon_intensity, cfg.carbon_url, cfg.carbon_file, cfg.signal_type, cfg.carbon_poll_seconds
    )
    if intensity.read() is None:
        if cfg.carbon_url or cfg.carbon_file:
            log.warning("no carbon intensity yet: emissions are n/a until the URL/file answers")
        else:
            log.warning("no carbon intensity configured: emissions and the Green Score will be n/a")
    counters = Counters(signal_type=cfg.signal_type)
    comp = cfg.compression
    try:
        teacher: nn.Module | None = None
        teacher_steps = 0
        if comp.distillation.enabled:
            if cfg.teacher_checkpoint is not None:
                teacher = _load_teacher(cfg.teacher_checkpoint)
            else:
                teacher_steps = cfg.teacher_steps or cfg.total_steps
        total = teacher_steps + cfg.total_steps

        def trainer(phase: Phase) -> Trainer:
            return Trainer(cfg, phase, data, device, metrics, meter, intensity, counters, total, stop)

        if teacher_steps:
            t_res = trainer(
                Phase("teacher", base, teacher_steps, cfg.checkpoint_dir / "teacher", cfg.seed + 1)
            ).run()
            if not t_res.completed:
                return JobOutcome(False, t_res, None, port)
            teacher = t_res.model
            log.info("teacher ready: %d parameters, accuracy %s", count_parameters(teacher), t_res.accuracy)
        spec = make_student_spec(base) if comp.distillation.enabled else base
        phase = Phase(
            "student" if comp.distillation.enabled else "model",
            spec,
            cfg.total_steps,
            cfg.checkpoint_dir,
            cfg.seed,
            comp.pruning.amount if comp.pruning.enabled else 0.0,
            teacher,
        )
        res = trainer(phase).run()
        if not res.completed:
            return JobOutcome(False, res, None, port)
        if cfg.rank != 0:
            return JobOutcome(True, res, None, port)
        label = _finish(cfg, res, data.x_test, data.y_test, meter.hardware(), meter.source, counters)
        return JobOutcome(True, res, label, port)
    finally:
        meter.close()
        metrics.shutdown()
        elastic.destroy_process_group()


def _finish(
    cfg: TrainerConfig,
    res: PhaseResult,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    hardware: str,
    source: str,
    counters: Counters,
) -> CarbonLabel:
    """Export the model (and its int8 version) and write the carbon label beside the checkpoints."""
    model = res.model.cpu().eval()
    out = cfg.checkpoint_dir
    _atomic_save({"spec": res.spec.to_json(), "model": model.state_dict()}, out / "model.pt")
    quantized: dict[str, Any] | None = None
    if cfg.compression.quantization == "int8-dynamic":
        from .compression.quantization import quantize_for_inference

        qmodel, n_linear = quantize_for_inference(model)
        q_acc = evaluate(qmodel, x_test.cpu(), y_test.cpu())
        _atomic_save({"spec": res.spec.to_json(), "model": qmodel.state_dict()}, out / "model-int8.pt")
        quantized = {
            "accuracy": round(q_acc, 4),
            "bytes": serialized_size(qmodel),
            "linear_layers_quantized": n_linear,
            "note": "torchao Int8DynamicActivationInt8Weight; Conv2d stays fp32",
        }
        log.info("int8-dynamic export: accuracy %.4f, %d bytes", q_acc, quantized["bytes"])
    kwh = counters.energy_j / 3.6e6
    intensity = counters.emissions_g / kwh if kwh > 0 and counters.last_intensity is not None else None
    label = CarbonLabel(
        job=cfg.job_name,
        energy_joules=counters.energy_j,
        energy_source=source,
        emissions_grams=counters.emissions_g if counters.last_intensity is not None else None,
        intensity_grams_per_kwh=intensity if intensity is not None else counters.last_intensity,
        signal_type=counters.signal_type,
        hardware=hardware,
        accuracy=res.accuracy,
        parameters=count_parameters(model),
        model_bytes=serialized_size(model),
        flops_per_sample=estimate_flops(model, x_test[:1].cpu()),
        compression=cfg.compression.to_json(),
        steps=counters.steps,
        samples=counters.samples,
        quantized=quantized,
        adaptations=res.decisions,
    )
    json_path, _md = label.write(out)
    log.info("carbon label written to %s (energy %.1f J, source %s)", json_path, counters.energy_j, source)
    return label
