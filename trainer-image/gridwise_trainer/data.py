"""Digits data and a resumable, rank-sharded sampler: exact resume needs the epoch order and position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

N_CLASSES = 10
IMAGE_SIDE = 8


@dataclass(frozen=True)
class Dataset:
    """Whole split held as tensors: digits is 1.8k images, so a DataLoader would only add state to save."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: torch.device) -> Dataset:
        return Dataset(*(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)))


def load_digits_dataset(test_fraction: float = 0.25, split_seed: int = 0) -> Dataset:
    """Load scikit-learn's bundled digits (no network), scaled to [0, 1] as 1x8x8 images."""
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    shape = (-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    return Dataset(
        torch.from_numpy(x_tr).reshape(shape),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_te).reshape(shape),
        torch.from_numpy(y_te),
    )


def load_dataset(name: str) -> Dataset:
    """`digits` or `package.module:factory` returning a Dataset or (x_train, y_train, x_test, y_test)."""
    if name == "digits":
        return load_digits_dataset()
    from .model import load_factory

    made = load_factory(name, "dataset")()
    if isinstance(made, Dataset):
        parts = (made.x_train, made.y_train, made.x_test, made.y_test)
    elif isinstance(made, tuple | list) and len(made) == 4:
        parts = tuple(made)
    else:
        raise ValueError(
            f"--dataset {name} returned {type(made).__name__}; expected gridwise_trainer.data.Dataset "
            "or a 4-tuple of tensors (x_train, y_train, x_test, y_test)"
        )
    if not all(isinstance(t, torch.Tensor) for t in parts):
        raise ValueError(f"--dataset {name}: every part must be a torch.Tensor")
    x_tr, y_tr, x_te, y_te = parts
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te) or len(x_tr) == 0:
        raise ValueError(f"--dataset {name}: x and y lengths differ or the training split is empty")
    if y_tr.dtype != torch.int64 or y_te.dtype != torch.int64:
        raise ValueError(f"--dataset {name}: labels must be int64 class indices (cross-entropy)")
    return Dataset(x_tr, y_tr, x_te, y_te)


class ShardedBatchSampler:
    """Epoch permutations seeded by (seed, epoch) and split by rank, DistributedSampler-style.

    The position is counted in samples, not batches, so the carbon loop may change the batch
    size mid-epoch and a resumed run still continues with exactly the next unseen sample.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n = n
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=gen)
        # Pad so every rank sees the same number of samples (what DistributedSampler does).
        per_rank = -(-self.n // self.world_size)
        padded = torch.cat([perm, perm[: per_rank * self.world_size - self.n]])
        return padded[self.rank :: self.world_size]

    def next_indices(self, batch_size: int) -> torch.Tensor:
        """Next batch; a short tail is dropped so every step has the same shape (no recompiles)."""
        if self.position + batch_size > len(self._order):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        idx = self._order[self.position : self.position + batch_size]
        self.position += batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n or int(state["seed"]) != self.seed:
            raise ValueError("checkpoint was written for a different data set or seed")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)
