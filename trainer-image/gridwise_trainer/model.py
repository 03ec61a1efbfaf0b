"""Models as plain Sequentials of known widths, so structured pruning can rebuild them smaller."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .data import IMAGE_SIDE, N_CLASSES


@dataclass(frozen=True)
class ModelSpec:
    """Architecture by widths; stored in checkpoints so a pruned model is rebuilt with its real shape."""

    kind: str  # "mlp" | "cnn" (wide-cnn is a cnn with bigger widths)
    widths: tuple[int, ...]  # mlp: hidden sizes; cnn: (conv1, conv2, hidden)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "widths": list(self.widths)}

    @staticmethod
    def from_json(raw: dict[str, Any]) -> ModelSpec:
        return ModelSpec(str(raw["kind"]), tuple(int(w) for w in raw["widths"]))


def default_spec(name: str) -> ModelSpec:
    """The named presets: small ones for CPU tests, wide-cnn to give a GPU real work."""
    if name == "mlp":
        return ModelSpec("mlp", (128, 64))
    if name == "cnn":
        return ModelSpec("cnn", (16, 32, 64))
    if name == "wide-cnn":
        return ModelSpec("cnn", (128, 256, 1024))
    raise ValueError(f"unknown model {name!r}")


def student_spec(teacher: ModelSpec) -> ModelSpec:
    """A student about a quarter of the teacher's width: distillation only pays if the student is smaller."""
    return replace(teacher, widths=tuple(max(2, w // 4) for w in teacher.widths))


def build_model(spec: ModelSpec) -> nn.Sequential:
    if spec.kind == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        prev = IMAGE_SIDE * IMAGE_SIDE
        for w in spec.widths:
            layers += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        layers.append(nn.Linear(prev, N_CLASSES))
        return nn.Sequential(*layers)
    if spec.kind == "cnn":
        c1, c2, hidden = spec.widths
        half = IMAGE_SIDE // 2
        return nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * half * half, hidden),
            nn.ReLU(),
            nn.Linear(hidden, N_CLASSES),
        )
    raise ValueError(f"unknown model kind {spec.kind!r}")


def spec_of(model: nn.Sequential, kind: str) -> ModelSpec:
    """Read the widths back from a (possibly pruned) model."""
    widths: list[int] = []
    for layer in list(model)[:-1]:
        if isinstance(layer, nn.Linear):
            widths.append(layer.out_features)
        elif isinstance(layer, nn.Conv2d):
            widths.append(layer.out_channels)
    return ModelSpec(kind, tuple(widths))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def estimate_flops(model: nn.Module, sample: torch.Tensor) -> int:
    """Forward FLOPs for one sample (2 per multiply-add of Linear/Conv2d), measured by running it."""
    total = 0

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * mod.out_features
        elif isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            per_out = (mod.in_channels // mod.groups) * kh * kw
            total += 2 * per_out * out[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def serialized_size(model: nn.Module) -> int:
    """Bytes of torch.save(state_dict): what an export actually ships."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())
