"""PyTorch Lightning under gridwise: stop on SIGTERM with a checkpoint, resume exactly.

    from gridwise_trainer import Session
    from gridwise_trainer.session import ResumableSampler
    from gridwise_trainer.integrations.lightning_callback import GridwiseLightningCallback, last_checkpoint

    with Session.from_env() as session:
        sampler = ResumableSampler(len(ds), seed=0)
        loader = DataLoader(ds, batch_size=32, sampler=sampler)
        cb = GridwiseLightningCallback(session, sampler)
        trainer = L.Trainer(max_steps=session.total_steps, callbacks=[cb], ...)
        trainer.fit(model, loader, ckpt_path=last_checkpoint(session.checkpoint_dir))
    sys.exit(session.exit_code)

The checkpoint is Lightning's own `.ckpt` (weights, optimizers, schedulers, loop progress), written to
a temporary name and renamed, plus what Lightning leaves out and exact resume needs: every RNG, the
batches the epoch already used (so the ResumableSampler skips them; Lightning 2.5 restarts a plain
DataLoader's epoch from its first batch) and gridwise's counters.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..session import ResumableSampler, Session, capture_rng, restore_rng

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^gridwise-step=(\d+)\.ckpt$")


def last_checkpoint(directory: str | os.PathLike[str]) -> str | None:
    """Newest `gridwise-step=N.ckpt` in directory, or None for a fresh start (writes are atomic renames)."""
    root = Path(directory)
    if not root.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT.match(p.name)))
    return str(found[-1][1]) if found else None


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, list | tuple) and batch:
        return _batch_len(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_len(next(iter(batch.values())))
    return 0


class GridwiseLightningCallback(pl.Callback):
    """Reports through the session; on SIGTERM saves a checkpoint at the batch boundary and stops."""

    def __init__(self, session: Session, sampler: ResumableSampler | None = None) -> None:
        self.session = session
        self.sampler = sampler
        self._rng: dict[str, Any] | None = None
        self._in_epoch = 0  # batches of the current epoch done, including those before a resume
        self.stopped_early = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2.5's own SIGTERM handler raises SIGTERMException (a SystemExit, so exit code 0)
        # at the next batch end: the pod would look finished. The session's handler takes SIGTERM back;
        # Lightning restores the pre-fit handlers (the session's) when fit ends.
        if self.session.stop is not None:
            self.session.stop.take_back()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException) and not self.stopped_early:
            # Raised at a batch boundary, so the state is consistent: keep the work, then let it unwind.
            self.save(trainer)
            self.stopped_early = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._in_epoch = trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._rng is not None:
            restore_rng(self._rng)
            self._rng = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._in_epoch = batch_idx + 1
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.session.observe(trainer.global_step, _batch_len(batch) * trainer.world_size, loss)
        if self.session.stop_requested and not self.session.complete:
            self.save(trainer)
            trainer.should_stop = True
            self.stopped_early = True

    def save(self, trainer: pl.Trainer) -> Path:
        """Atomic: Lightning writes a temporary file, then it is renamed over the final name."""
        root = self.session.checkpoint_dir
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"gridwise-step={trainer.global_step}.ckpt"
        tmp = root / f".{final.name}.tmp"
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, final)
            log.info("stop requested: checkpoint %s written; stopping", final.name)
        return final

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["gridwise"] = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "batches_in_epoch": self._in_epoch,
            "batch_size": None if self.sampler is None else self._batch_size(trainer),
            "rng": capture_rng(),
            "counters": self.session.counters_state(),
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        g = checkpoint.get("gridwise")
        if g is None:
            log.warning("checkpoint has no gridwise state: RNG and data position are not restored")
            return
        # Applied at the first batch: creating the DataLoader iterator draws a base seed from the global
        # RNG, which the uninterrupted run did before this point in the epoch, not after.
        self._rng = g["rng"]
        self.session.resume_at(int(g["step"]), g["counters"])
        if self.sampler is not None and g["batch_size"]:
            self.sampler.resume(int(g["epoch"]), int(g["batches_in_epoch"]) * int(g["batch_size"]))

    @staticmethod
    def _batch_size(trainer: pl.Trainer) -> int | None:
        loader = trainer.train_dataloader
        return getattr(loader, "batch_size", None)
