"""Model factories: `--model byo_model.models:make` calls make(); a distillation student make(scale=0.25)."""

from __future__ import annotations

import torch
from torch import nn

FEATURES, CLASSES = 12, 3


def make(scale: float = 1.0) -> nn.Sequential:
    """An nn.Sequential of Linear layers: structured pruning can rebuild it with fewer units."""
    h1, h2 = max(2, round(64 * scale)), max(2, round(32 * scale))
    return nn.Sequential(
        nn.Linear(FEATURES, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, CLASSES)
    )


class Residual(nn.Module):
    """Not a Sequential: mixed precision and int8 export work, structured pruning does not."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(FEATURES, 32)
        self.block = nn.Linear(32, 32)
        self.out = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.out(h + torch.relu(self.block(h)))


def make_residual() -> nn.Module:
    return Residual()
