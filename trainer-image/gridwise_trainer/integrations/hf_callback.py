"""Hugging Face Transformers `Trainer` under gridwise: stop on SIGTERM with a checkpoint, resume exactly.

    from gridwise_trainer import Session
    from gridwise_trainer.integrations.hf_callback import GridwiseHFCallback, last_checkpoint

    with Session.from_env() as session:
        args = TrainingArguments(output_dir=session.checkpoint_dir, max_steps=session.total_steps, ...)
        trainer = Trainer(model, args, train_dataset=ds, callbacks=[GridwiseHFCallback(session)])
        trainer.train(resume_from_checkpoint=last_checkpoint(args.output_dir))
    sys.exit(session.exit_code)

The checkpoint is the Trainer's own (`checkpoint-<step>/`: weights, optimizer, scheduler, RNG, and
the step it resumes at, skipping the batches the epoch already used); the callback asks for it when
SIGTERM arrives, and stores gridwise's counters beside it so energy and emissions continue too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..session import Session

log = logging.getLogger(__name__)

COUNTERS_FILE = "gridwise-counters.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """Newest *complete* `checkpoint-N` in output_dir, or None for a fresh start.

    `trainer_state.json` is written last, so a folder without it was cut off mid-save (the pod was
    killed): it is skipped, and kept for inspection rather than deleted.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))),
        reverse=True,
    )
    for step, path in found:
        if (path / "trainer_state.json").is_file():
            return str(path)
        log.warning("checkpoint-%d has no trainer_state.json (interrupted save); skipping it", step)
    return None


def _epoch_samplers(loader: Any) -> list[Any]:
    """Samplers under an (accelerate-prepared) DataLoader that keep the epoch for their shuffle seed."""
    found = []
    bs = getattr(loader, "batch_sampler", None)
    for cand in (
        getattr(loader, "sampler", None),
        getattr(bs, "sampler", None),
        getattr(getattr(bs, "batch_sampler", None), "sampler", None),
    ):
        if cand is not None and hasattr(cand, "epoch") and hasattr(cand, "set_epoch") and cand not in found:
            found.append(cand)
    return found


class GridwiseHFCallback(TrainerCallback):
    """Reports progress/energy/throughput through the session and turns SIGTERM into save-and-stop.

    It also pins the shuffle epoch while an epoch runs. On a mid-epoch resume, accelerate's
    `skip_first_batches` (1.11) wraps the loader in a new DataLoaderShard whose iteration counter is 0
    and whose iter() calls set_epoch(0) on the shared seedable sampler: the resumed epoch would replay
    epoch 0's order and the run would silently diverge. Found by this package's exact-resume test.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._last_step = 0
        self._pinned: list[Any] = []

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._unpin()
        for sampler in _epoch_samplers(kw.get("train_dataloader")):
            epoch = sampler.epoch  # just set by the Trainer for this epoch
            sampler.set_epoch = lambda _e, _s=sampler, _epoch=epoch: setattr(_s, "epoch", _epoch)
            self._pinned.append(sampler)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._unpin()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._unpin()

    def _unpin(self) -> None:
        for sampler in self._pinned:
            sampler.__dict__.pop("set_epoch", None)
        self._pinned.clear()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.max_steps and state.max_steps != self.session.total_steps:
            log.warning(
                "Trainer max_steps=%d but the session plans %d steps: progress uses the session's",
                state.max_steps,
                self.session.total_steps,
            )
        if state.global_step > 0:  # resumed: continue gridwise's counters from beside the checkpoint
            ckpt = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}" / COUNTERS_FILE
            counters = json.loads(ckpt.read_text()) if ckpt.is_file() else None
            self.session.resume_at(state.global_step, counters)
        self._last_step = state.global_step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        steps = state.global_step - self._last_step
        samples = (
            steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        self._last_step = state.global_step
        loss = state.log_history[-1].get("loss") if state.log_history else None
        self.session.observe(state.global_step, samples, loss)
        if self.session.stop_requested and state.global_step < state.max_steps:
            log.info("stop requested: saving checkpoint-%d and stopping", state.global_step)
            control.should_save = True
            control.should_training_stop = True

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        folder = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            tmp = folder / f".{COUNTERS_FILE}.tmp"
            tmp.write_text(json.dumps(self.session.counters_state()))
            os.replace(tmp, folder / COUNTERS_FILE)
