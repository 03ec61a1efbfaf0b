"""Dataset factory: `--dataset byo_model.data:load` -> (x_train, y_train, x_test, y_test) tensors.

Synthetic and seeded so the example runs anywhere; replace it with your own loading code.
"""

from __future__ import annotations

import torch

from .models import CLASSES, FEATURES


def load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(42)
    centres = torch.randn(CLASSES, FEATURES, generator=g) * 2
    y = torch.randint(0, CLASSES, (1200,), generator=g)
    x = centres[y] + torch.randn(1200, FEATURES, generator=g)
    return x[:900], y[:900], x[900:], y[900:]
