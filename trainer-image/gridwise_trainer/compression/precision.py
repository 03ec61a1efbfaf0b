"""Mixed precision with the current torch.amp API, plus a warm-up schedule and runtime switching."""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager

import torch
from torch.amp.grad_scaler import GradScaler

from ..config import Precision

log = logging.getLogger(__name__)

DTYPES: dict[Precision, torch.dtype] = {"none": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES: dict[Precision, str] = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_precision(requested: Precision, device: torch.device) -> Precision:
    """bf16 on a GPU without it (pre-Ampere) falls back to fp16 rather than failing the job."""
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("bf16 is not supported on this GPU; using fp16 with a GradScaler instead")
        return "fp16"
    return requested


class PrecisionPolicy:
    """Which dtype to use at each step; fp32 during an optional warm-up, then the configured one.

    The carbon loop may also drop back to fp32 (`override`) if reduced precision proves no cheaper.
    """

    def __init__(self, configured: Precision, device: torch.device, warmup_steps: int = 0) -> None:
        self.device = device
        self.configured = resolve_precision(configured, device)
        self.warmup_steps = warmup_steps
        self.override: Precision | None = None
        # One scaler for the whole run, so its scale survives switches and checkpoints; fp32 steps
        # through an enabled scaler are still exact, just scaled and unscaled.
        self.scaler = GradScaler(device.type, enabled=self.configured == "fp16")

    def active(self, step: int) -> Precision:
        if self.override is not None:
            return self.override
        if step < self.warmup_steps:
            return "none"
        return self.configured

    def autocast(self, precision: Precision) -> AbstractContextManager[object]:
        """fp32 gets a null context: even a disabled autocast costs microseconds on every step."""
        if precision == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[precision])
