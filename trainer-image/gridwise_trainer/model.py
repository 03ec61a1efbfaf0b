"""Models as plain Sequentials of known widths, so structured pruning can rebuild them smaller."""

from __future__ import annotations

import importlib
import inspect
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .data import IMAGE_SIDE, N_CLASSES


@dataclass(frozen=True)
class ModelSpec:
    """Architecture by widths; stored in checkpoints so a pruned model is rebuilt with its real shape."""

    kind: str  # "mlp" | "cnn" (wide-cnn is a cnn with bigger widths) | "custom"
    widths: tuple[int, ...]  # mlp: hidden sizes; cnn: (conv1, conv2, hidden); custom: ()
    factory: str = ""  # custom: "package.module:callable" returning an nn.Module
    scale: float = 1.0  # custom: passed as factory(scale=...) for a distillation student
    pruned: float = 0.0  # custom: structured-pruning amount applied after building

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "widths": list(self.widths)}
        if self.kind == CUSTOM:
            out.update(factory=self.factory, scale=self.scale, pruned=self.pruned)
        return out

    @staticmethod
    def from_json(raw: dict[str, Any]) -> ModelSpec:
        return ModelSpec(
            str(raw["kind"]),
            tuple(int(w) for w in raw["widths"]),
            str(raw.get("factory", "")),
            float(raw.get("scale", 1.0)),
            float(raw.get("pruned", 0.0)),
        )


CUSTOM = "custom"


def load_factory(ref: str, what: str = "model") -> Callable[..., Any]:
    """`package.module:callable` -> the callable; every failure says which part is wrong."""
    mod_name, sep, attr = ref.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"--{what} {ref!r} must be a built-in name or package.module:factory")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(
            f"--{what} {ref!r}: cannot import {mod_name!r} ({exc}); is it on PYTHONPATH?"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--{what} {ref!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--{what} {ref!r} is not callable")
    return obj  # type: ignore[no-any-return]


def accepts_scale(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "scale" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def default_spec(name: str) -> ModelSpec:
    """The named presets: small ones for CPU tests, wide-cnn to give a GPU real work."""
    if name == "mlp":
        return ModelSpec("mlp", (128, 64))
    if name == "cnn":
        return ModelSpec("cnn", (16, 32, 64))
    if name == "wide-cnn":
        return ModelSpec("cnn", (128, 256, 1024))
    if ":" in name:
        load_factory(name)  # fail now, not after the teacher has trained
        return ModelSpec(CUSTOM, (), factory=name)
    raise ValueError(f"unknown model {name!r}")


def student_spec(teacher: ModelSpec) -> ModelSpec:
    """A student about a quarter of the teacher's width: distillation only pays if the student is smaller."""
    if teacher.kind == CUSTOM:
        if not accepts_scale(load_factory(teacher.factory)):
            raise ValueError(
                f"distillation is unsupported for --model {teacher.factory}: the factory has no `scale` "
                "keyword, so gridwise cannot build a smaller student (add scale: float = 1.0 and size "
                "layers by it); mixed precision, int8 export and pruning do not need it"
            )
        return replace(teacher, scale=teacher.scale * 0.25)
    return replace(teacher, widths=tuple(max(2, w // 4) for w in teacher.widths))


def build_model(spec: ModelSpec) -> nn.Module:
    if spec.kind == CUSTOM:
        factory = load_factory(spec.factory)
        model: object = factory(scale=spec.scale) if spec.scale != 1.0 else factory()
        if not isinstance(model, nn.Module):
            raise ValueError(f"--model {spec.factory} returned {type(model).__name__}, not a torch.nn.Module")
        if spec.pruned > 0:
            from .compression.pruning import prune_structured

            model = prune_structured(require_prunable(model, spec.factory), spec.pruned)
        return model
    return build_builtin(spec)


def require_prunable(model: nn.Module, name: str) -> nn.Sequential:
    """Structured pruning rebuilds Linear/Conv2d layers of a Sequential with fewer units; nothing else."""
    if not isinstance(model, nn.Sequential) or not any(isinstance(m, nn.Linear | nn.Conv2d) for m in model):
        raise ValueError(
            f"structured pruning is unsupported for --model {name}: it needs an nn.Sequential of "
            f"Linear/Conv2d layers (got {type(model).__name__}); mixed precision and int8 export still apply"
        )
    return model


def build_builtin(spec: ModelSpec) -> nn.Sequential:
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
