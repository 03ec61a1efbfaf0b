"""Way 1: your own PyTorch loop, made pausable and metered by a gridwise Session.

    GRIDWISE_CHECKPOINT_DIR=/tmp/run GRIDWISE_TOTAL_STEPS=120 python own_loop.py

SIGTERM (a pause, a drain) finishes the step, checkpoints and exits 85; rerun to resume exactly.
The only gridwise lines are marked with `# gridwise`.
"""

from __future__ import annotations

import logging
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gridwise_trainer import Session  # gridwise


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(512, 16, generator=gen)
    y = (x[:, :4].sum(dim=1) > 0).long()
    data = TensorDataset(x, y)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)

    with Session.from_env(window_steps=5) as session:  # gridwise
        session.track(model=model, optimizer=opt, scheduler=sched)  # gridwise
        session.restore()  # gridwise
        for epoch in session.epochs():  # gridwise
            # Each epoch's order depends only on the epoch, so a resumed epoch replays it exactly.
            order = torch.Generator().manual_seed(1000 + epoch)
            loader = DataLoader(data, batch_size=32, shuffle=True, generator=order)
            for xb, yb in session.batches(loader):  # gridwise
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                print(f"step={session.step + 1} loss={loss.item()!r}", flush=True)
                if session.step_end(samples=len(xb), loss=loss):  # gridwise
                    break
        if session.complete:
            torch.save(model.state_dict(), session.checkpoint_dir / "final.pt")
    return session.exit_code  # gridwise: 0 complete, 85 stopped early


if __name__ == "__main__":
    sys.exit(main())
