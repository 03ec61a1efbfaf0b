"""Int8 quantization for export/inference via torchao (torch.ao.quantization is deprecated).

On CPU, torchao 0.14's Int8DynamicActivationInt8WeightConfig works for nn.Linear (checked on this
project's CPU runner); it does not touch Conv2d, so a CNN keeps fp32 convolutions.
"""

from __future__ import annotations

import copy

from torch import nn


def quantize_for_inference(model: nn.Module) -> tuple[nn.Module, int]:
    """Return an int8-dynamic copy for inference and how many Linear layers were quantized."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    qmodel = copy.deepcopy(model).eval()
    n_linear = sum(1 for m in qmodel.modules() if isinstance(m, nn.Linear))
    quantize_(qmodel, Int8DynamicActivationInt8WeightConfig())
    return qmodel, n_linear
