"""Trainer settings: the operator speaks env vars, people speak flags, both end up here validated."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Precision = Literal["none", "bf16", "fp16"]
Quantization = Literal["none", "int8-dynamic"]
SignalType = Literal["average", "marginal"]

PRECISIONS: tuple[Precision, ...] = ("none", "bf16", "fp16")
QUANTIZATIONS: tuple[Quantization, ...] = ("none", "int8-dynamic")
SIGNAL_TYPES: tuple[SignalType, ...] = ("average", "marginal")
MODELS = ("mlp", "cnn", "wide-cnn")


class ConfigError(ValueError):
    """A setting the trainer cannot honour; the CLI turns it into one line and exit code 2."""


@dataclass(frozen=True)
class PruningSettings:
    enabled: bool = False
    amount: float = 0.0


@dataclass(frozen=True)
class DistillationSettings:
    enabled: bool = False
    temperature: float = 2.0
    alpha: float = 0.25


@dataclass(frozen=True)
class CompressionSettings:
    """Mirror of CarbonAwareJob.spec.compression, so the same JSON drives both."""

    mixed_precision: Precision = "none"
    pruning: PruningSettings = field(default_factory=PruningSettings)
    quantization: Quantization = "none"
    distillation: DistillationSettings = field(default_factory=DistillationSettings)

    def to_json(self) -> dict[str, Any]:
        return {
            "mixedPrecision": self.mixed_precision,
            "pruning": {"enabled": self.pruning.enabled, "amount": self.pruning.amount},
            "quantization": self.quantization,
            "distillation": {
                "enabled": self.distillation.enabled,
                "temperature": self.distillation.temperature,
                "alpha": self.distillation.alpha,
            },
        }


@dataclass(frozen=True)
class Objective:
    """Weights of L = a*L_acc + b*E + c*C (seeds 000/001); only their ratios matter."""

    accuracy: float = 1.0
    energy: float = 0.0
    carbon: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "energy": self.energy, "carbon": self.carbon}


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} is not valid JSON ({exc.msg} at char {exc.pos})") from None


def _as_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{what} must be true or false, got {value!r}")


def _as_number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise ConfigError(f"{what} must be within [{lo}, {hi}], got {value}")
    return float(value)


def _check_keys(obj: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ConfigError(f"{what} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def parse_compression(text: str | None) -> CompressionSettings:
    """Parse GRIDWISE_COMPRESSION; unknown keys are errors so typos never silently disable savings."""
    if text is None or not text.strip():
        return CompressionSettings()
    raw = _load_json(text, "GRIDWISE_COMPRESSION")
    if not isinstance(raw, dict):
        raise ConfigError("GRIDWISE_COMPRESSION must be a JSON object")
    _check_keys(raw, {"mixedPrecision", "pruning", "quantization", "distillation"}, "GRIDWISE_COMPRESSION")
    precision = raw.get("mixedPrecision", "none")
    if precision not in PRECISIONS:
        raise ConfigError(f"compression.mixedPrecision must be one of {list(PRECISIONS)}, got {precision!r}")
    quant = raw.get("quantization", "none")
    if quant not in QUANTIZATIONS:
        raise ConfigError(f"compression.quantization must be one of {list(QUANTIZATIONS)}, got {quant!r}")
    pr = raw.get("pruning", {}) or {}
    if not isinstance(pr, dict):
        raise ConfigError("compression.pruning must be an object")
    _check_keys(pr, {"enabled", "amount"}, "compression.pruning")
    pruning = PruningSettings(
        enabled=_as_bool(pr.get("enabled", False), "compression.pruning.enabled"),
        amount=_as_number(pr.get("amount", 0.0), "compression.pruning.amount", 0.0, 0.9),
    )
    di = raw.get("distillation", {}) or {}
    if not isinstance(di, dict):
        raise ConfigError("compression.distillation must be an object")
    _check_keys(di, {"enabled", "temperature", "alpha"}, "compression.distillation")
    distillation = DistillationSettings(
        enabled=_as_bool(di.get("enabled", False), "compression.distillation.enabled"),
        temperature=_as_number(di.get("temperature", 2.0), "compression.distillation.temperature", 0.05, 100),
        alpha=_as_number(di.get("alpha", 0.25), "compression.distillation.alpha", 0.0, 1.0),
    )
    return CompressionSettings(precision, pruning, quant, distillation)


def parse_objective(text: str | None) -> Objective:
    """Parse GRIDWISE_OBJECTIVE; at least one weight must be positive or nothing can be optimised."""
    if text is None or not text.strip():
        return Objective()
    raw = _load_json(text, "GRIDWISE_OBJECTIVE")
    if not isinstance(raw, dict):
        raise ConfigError("GRIDWISE_OBJECTIVE must be a JSON object")
    _check_keys(raw, {"accuracy", "energy", "carbon"}, "GRIDWISE_OBJECTIVE")
    obj = Objective(
        accuracy=_as_number(raw.get("accuracy", 0.0), "objective.accuracy", 0.0, 1e6),
        energy=_as_number(raw.get("energy", 0.0), "objective.energy", 0.0, 1e6),
        carbon=_as_number(raw.get("carbon", 0.0), "objective.carbon", 0.0, 1e6),
    )
    if obj.accuracy + obj.energy + obj.carbon <= 0:
        raise ConfigError("GRIDWISE_OBJECTIVE needs at least one positive weight")
    return obj


@dataclass(frozen=True)
class TrainerConfig:
    """Everything one run needs; built by cli.py, consumed by job.py/loop.py."""

    checkpoint_dir: Path
    total_steps: int
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    objective: Objective = field(default_factory=Objective)
    metrics_port: int | None = 9400
    carbon_intensity: float | None = None
    carbon_url: str | None = None
    carbon_file: Path | None = None
    signal_type: SignalType = "average"
    job_name: str = "local"
    model: str = "cnn"
    dataset: str = "digits"
    batch_size: int = 64
    min_batch_size: int = 16
    max_batch_size: int = 256
    learning_rate: float = 0.05
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    eval_every: int = 0
    log_every: int = 50
    adapt: bool = True
    adapt_window_steps: int = 50
    adapt_min_gain: float = 0.03
    allow_power_limit: bool = False
    precision_warmup_fraction: float = 0.0
    prune_at_fraction: float = 0.5
    teacher_steps: int | None = None
    teacher_checkpoint: Path | None = None
    cpu_tdp_watts: float = 85.0
    carbon_poll_seconds: float = 60.0
    world_size: int = 1
    rank: int = 0

    def validate(self) -> None:
        """Reject nonsense early: a job that fails at step 9000 wastes the carbon it was meant to save."""
        if self.total_steps < 1:
            raise ConfigError(f"total steps must be >= 1, got {self.total_steps}")
        if self.model not in MODELS and ":" not in self.model:
            raise ConfigError(
                f"model must be one of {list(MODELS)} or package.module:factory, got {self.model!r}"
            )
        if self.dataset != "digits" and ":" not in self.dataset:
            raise ConfigError(f"dataset must be 'digits' or package.module:factory, got {self.dataset!r}")
        if not 1 <= self.min_batch_size <= self.batch_size <= self.max_batch_size:
            raise ConfigError("batch sizes must satisfy 1 <= min <= batch size <= max")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port must be 0..65535, got {self.metrics_port}")
        if self.carbon_intensity is not None and not 0 <= self.carbon_intensity < 5000:
            raise ConfigError(f"carbon intensity must be 0..5000 g/kWh, got {self.carbon_intensity}")
        if self.signal_type not in SIGNAL_TYPES:
            raise ConfigError(f"signal type must be one of {list(SIGNAL_TYPES)}, got {self.signal_type!r}")
        if self.keep_checkpoints < 1:
            raise ConfigError("keep at least 1 checkpoint")
        if self.checkpoint_every < 1 or self.adapt_window_steps < 2:
            raise ConfigError("checkpoint interval must be >= 1 and adaptation window >= 2 steps")
        if not 0.0 <= self.precision_warmup_fraction <= 1.0 or not 0.0 <= self.prune_at_fraction < 1.0:
            raise ConfigError("precision warm-up fraction must be in [0, 1] and prune-at fraction in [0, 1)")
        if self.learning_rate <= 0 or self.cpu_tdp_watts <= 0:
            raise ConfigError("learning rate and CPU TDP must be positive")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"RANK {self.rank} must be in [0, WORLD_SIZE={self.world_size})")
        if self.world_size > self.batch_size:
            raise ConfigError(f"global batch size {self.batch_size} must be >= WORLD_SIZE={self.world_size}")
        if self.teacher_steps is not None and self.teacher_steps < 1:
            raise ConfigError("teacher steps must be >= 1")
