"""A tiny GPT-2 built from a config (no download) trained by HF Trainer with the gridwise callback."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import cast

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from gridwise_trainer import Session
from gridwise_trainer.integrations.hf_callback import GridwiseHFCallback, last_checkpoint


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int = 48, length: int = 12) -> None:
        g = torch.Generator().manual_seed(7)
        self.ids = torch.randint(0, 64, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class PrintSteps(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
        print(f"step={state.global_step}", flush=True)
        time.sleep(0.05)  # a tiny model is too fast for a test to signal it mid-epoch otherwise

    def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
        if logs and "loss" in logs:
            print(f"loss step={state.global_step} {logs['loss']!r}", flush=True)


DROP = float(os.environ.get("HF_TINY_DROPOUT", "0.1"))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    with Session.from_env(window_steps=4) as session:
        torch.manual_seed(0)
        # transformers leaves these constructors unannotated.
        cfg = GPT2Config(  # type: ignore[no-untyped-call]
            vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
            resid_pdrop=DROP, embd_pdrop=DROP, attn_pdrop=DROP,
        )  # fmt: skip
        model = GPT2LMHeadModel(cfg)  # type: ignore[no-untyped-call]
        args = TrainingArguments(
            output_dir=str(session.checkpoint_dir),
            max_steps=session.total_steps,
            per_device_train_batch_size=4,
            learning_rate=1e-3,
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Tokens(),
            callbacks=[GridwiseHFCallback(session), PrintSteps()],
        )
        # output_dir is Optional in TrainingArguments; it was set just above.
        trainer.train(resume_from_checkpoint=last_checkpoint(cast(str, args.output_dir)))
        print(f"global_step={trainer.state.global_step}", flush=True)
        if session.complete:
            torch.save(model.state_dict(), session.checkpoint_dir / "final.pt")
    return session.exit_code


if __name__ == "__main__":
    sys.exit(main())
