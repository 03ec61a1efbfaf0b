"""A tiny Lightning module trained with the gridwise callback (CPU, no downloads)."""

from __future__ import annotations

import logging
import sys
import time

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gridwise_trainer import Session
from gridwise_trainer.integrations.lightning_callback import GridwiseLightningCallback, last_checkpoint
from gridwise_trainer.session import ResumableSampler


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class PrintSteps(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        print(f"step={trainer.global_step}", flush=True)
        print(
            f"loss step={trainer.global_step} {float(outputs['loss'])!r} x0={float(batch[0][0, 0])!r}",
            flush=True,
        )
        time.sleep(0.05)  # slow enough for a test to signal it mid-epoch


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(48, 8, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    with Session.from_env(window_steps=4) as session:
        pl.seed_everything(0)
        model = Tiny()
        sampler = ResumableSampler(len(data), seed=0)
        loader = DataLoader(data, batch_size=4, sampler=sampler)  # 12 batches per epoch
        trainer = pl.Trainer(
            max_steps=session.total_steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[GridwiseLightningCallback(session, sampler), PrintSteps()],
        )
        trainer.fit(model, loader, ckpt_path=last_checkpoint(session.checkpoint_dir))
        print(f"global_step={trainer.global_step}", flush=True)
        if session.complete:
            torch.save(model.state_dict(), session.checkpoint_dir / "final.pt")
    return session.exit_code


if __name__ == "__main__":
    sys.exit(main())
