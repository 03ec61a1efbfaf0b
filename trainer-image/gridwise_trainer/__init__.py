"""The gridwise trainer: a compression-enabled PyTorch loop that pauses without losing work.

The public API for your own loop is `Session` (see session.py and docs/trainer-contract.md); it is
imported lazily so the launcher path (`gridwise-trainer` exec'ing torchrun) never pays for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session, StopSignal

__all__ = ["Session", "StopSignal"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import session

        return getattr(session, name)
    raise AttributeError(f"module 'gridwise_trainer' has no attribute {name!r}")
