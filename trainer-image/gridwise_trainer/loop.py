"""One training phase: steps, windows (energy, metrics, carbon loop), evaluation and checkpoints.

The step itself is a plain PyTorch step; everything else happens at window edges so the loop's
overhead stays near zero. With more than one rank (issue 7, see elastic.py) `self.model` is wrapped in
DistributedDataParallel after it is built, restored or pruned; every rank draws the same global batch
and trains on its slice, ranks agree every step on whether to stop, and only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import elastic
from .carbon_loop import CarbonController, Knobs
from .checkpoint import CheckpointManager
from .compression.distillation import distillation_loss
from .compression.precision import DTYPE_NAMES, PrecisionPolicy
from .compression.pruning import prune_structured, sparsity
from .config import Precision, TrainerConfig
from .data import Dataset, ShardedBatchSampler
from .energy import EnergyMeter
from .intensity import IntensitySource
from .metrics import TrainerMetrics
from .model import CUSTOM, ModelSpec, build_model, count_parameters, require_prunable, spec_of
from .session import Accountant, Counters, capture_rng, restore_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """What one Trainer trains: the model itself, or a teacher/student for distillation."""

    name: str
    spec: ModelSpec
    steps: int
    checkpoint_dir: Path
    seed: int
    prune_amount: float = 0.0
    teacher: nn.Module | None = None


@dataclass
class PhaseResult:
    completed: bool
    model: nn.Module
    spec: ModelSpec
    step: int
    accuracy: float | None
    dense_params: int
    decisions: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "float32"
    reform: bool = False  # stopped because another rank asked to: the group should re-form


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    policy: PrecisionPolicy | None = None,
    precision: Precision = "none",
    batch: int = 512,
) -> float:
    """Held-out accuracy; leaves the model in the mode it found it in."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            if policy is not None:
                with policy.autocast(precision):
                    out = model(x[i : i + batch])
            else:
                out = model(x[i : i + batch])
            correct += int((out.argmax(dim=1) == y[i : i + batch]).sum().item())
    model.train(was_training)
    return correct / max(1, len(x))


class Trainer:
    """Trains one Phase to its step count, or until `stop` is set (then checkpoints and returns)."""

    def __init__(
        self,
        cfg: TrainerConfig,
        phase: Phase,
        data: Dataset,
        device: torch.device,
        metrics: TrainerMetrics,
        meter: EnergyMeter,
        intensity: IntensitySource,
        counters: Counters,
        progress_total: int,
        stop: threading.Event,
    ) -> None:
        self.cfg, self.phase, self.device = cfg, phase, device
        self.data = data.to(device)
        self.metrics, self.meter, self.intensity = metrics, meter, intensity
        self.counters = counters
        self.progress_total = progress_total
        self.stop = stop
        self.ckpt = CheckpointManager(phase.checkpoint_dir, cfg.job_name, cfg.keep_checkpoints, cfg.rank == 0)
        self.prune_at = round(cfg.prune_at_fraction * phase.steps) if phase.prune_amount > 0 else None
        self.policy = PrecisionPolicy(
            cfg.compression.mixed_precision, device, round(cfg.precision_warmup_fraction * phase.steps)
        )
        limits = meter.power_limit_watts()
        self.default_power_w = limits[0] if limits else None
        self.controller = CarbonController(
            cfg.objective,
            Knobs(cfg.batch_size),
            cfg.max_batch_size,
            self.policy.configured,
            power_limit_settable=cfg.allow_power_limit and limits is not None,
            min_gain=cfg.adapt_min_gain,
            enabled=cfg.adapt,
        )
        torch.manual_seed(phase.seed)
        self.model: nn.Module = build_model(phase.spec).to(device)
        self.dense_params = count_parameters(self.model)
        self.pruned = False
        self.optimizer = self._make_optimizer()
        # One global, world-size-independent order: every rank draws the same global batch and keeps
        # its slice, so a checkpoint written at one size resumes exactly at any other.
        self.sampler = ShardedBatchSampler(len(self.data.x_train), phase.seed)
        self.distributed = cfg.world_size > 1 and elastic.active()
        self.acct = Accountant(metrics, meter, intensity, counters, cfg.world_size, self.distributed)
        self._net: nn.Module = self.model
        self.reform = False
        self.step = 0
        self._knobs = self.controller.knobs
        self._precision: Precision = "none"
        metrics.set_precision(DTYPE_NAMES["none"])
        self._c_joules = 0.0
        self._c_samples = 0
        self._c_loss_sum = torch.zeros((), device=device)
        self._c_steps = 0
        if phase.teacher is not None:
            phase.teacher.eval().to(device)

    # -- state -------------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=self.cfg.learning_rate, momentum=0.9)

    def _lr_for(self, batch_size: int) -> float:
        """Square-root scaling (Hoffer et al. 2017): gentler than linear, which diverged small models here."""
        return self.cfg.learning_rate * math.sqrt(batch_size / self.cfg.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.name,
            "step": self.step,
            "spec": self.spec.to_json(),
            "pruned": self.pruned,
            "dense_params": self.dense_params,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.policy.scaler.state_dict(),
            "rng": capture_rng(),
            "sampler": self.sampler.state_dict(),
            "controller": self.controller.state_dict(),
            "counters": asdict(self.counters),
        }

    @property
    def spec(self) -> ModelSpec:
        if self.phase.spec.kind == CUSTOM:
            return replace(self.phase.spec, pruned=self.phase.prune_amount if self.pruned else 0.0)
        assert isinstance(self.model, nn.Sequential)
        return spec_of(self.model, self.phase.spec.kind)

    def _restore(self) -> None:
        found = self.ckpt.load_latest()
        if found is None:
            log.info("%s: no checkpoint in %s; starting fresh", self.phase.name, self.phase.checkpoint_dir)
            return
        step, state, path = found
        if state.get("phase") != self.phase.name:
            log.warning("checkpoint %s is for phase %r; ignoring it", path.name, state.get("phase"))
            return
        self.model = build_model(ModelSpec.from_json(state["spec"])).to(self.device)
        self.model.load_state_dict(state["model"])
        self.pruned = bool(state["pruned"])
        self.dense_params = int(state["dense_params"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.policy.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.sampler.load_state_dict(state["sampler"])
        self.controller.load_state_dict(state["controller"])
        self.acct.restored(Counters(**state["counters"]))
        self.step = step
        log.info(
            "%s: resumed from %s at step %d (epoch %d, sample %d)",
            self.phase.name,
            path.name,
            step,
            self.sampler.epoch,
            self.sampler.position,
        )

    def save(self) -> None:
        t0 = time.perf_counter()
        self.counters.checkpoints += 1
        path = self.ckpt.save(self.step, self.state_dict())
        dt = time.perf_counter() - t0
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(dt)
        if path is not None:
            log.info("%s: checkpoint %s written in %.3f s", self.phase.name, path.name, dt)

    # -- knobs -------------------------------------------------------------------------------
    def _apply_knobs(self, knobs: Knobs) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr_for(knobs.batch_size)
        self.policy.override = knobs.precision
        if self.default_power_w is not None and knobs.power_fraction != self._knobs.power_fraction:
            self.meter.set_power_limit_watts(self.default_power_w * knobs.power_fraction)
        self._knobs = knobs

    def restore_power_limit(self) -> None:
        """The GPU keeps a lowered limit after we exit; always put it back."""
        if self.default_power_w is not None and self._knobs.power_fraction != 1.0:
            self.meter.set_power_limit_watts(self.default_power_w)

    def _set_precision(self, precision: Precision) -> None:
        if precision != self._precision:
            self._precision = precision
            self.metrics.set_precision(DTYPE_NAMES[precision])

    # -- windows -----------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _window(self, loss: torch.Tensor | None, feed: bool = True) -> None:
        """Window edge: sync, read energy, account carbon, update gauges, feed the carbon loop.

        Accounting also runs at checkpoints and at the end (feed=False); the carbon loop only sees
        whole windows, measured from its own start marks.
        """
        self._sync()
        joules, reading = self.acct.window(
            float(loss.item()) if loss is not None else None, self.progress_total
        )
        if feed:
            mean_loss = float(self._c_loss_sum.item()) / max(1, self._c_steps)
            new = self.controller.end_window(
                self.step,
                joules - self._c_joules,
                self.counters.samples - self._c_samples,
                reading.grams_per_kwh if reading is not None else None,
                mean_loss,
            )
            self._c_loss_sum.zero_()
            self._c_steps = 0
            if self.distributed and self.controller.enabled:
                new = elastic.from_rank0(new)  # one decision for the whole group: rank 0's
            if new != self._knobs:
                self._apply_knobs(new)
            self._sync()
            self._c_joules, self._c_samples = self.meter.read_joules(), self.counters.samples

    # -- the loop ----------------------------------------------------------------------------
    def _maybe_prune(self) -> None:
        if self.prune_at is None or self.pruned or self.step < self.prune_at:
            return
        before = count_parameters(self.model)
        seq = require_prunable(self.model, self.phase.spec.factory or self.phase.spec.kind)
        self.model = prune_structured(seq, self.phase.prune_amount).to(self.device)
        # New parameters mean a new optimizer; momentum restarts, which fine-tuning tolerates.
        self._wrap()
        self.optimizer = self._make_optimizer()
        self._apply_knobs(self._knobs)
        self.pruned = True
        after = count_parameters(self.model)
        self.metrics.sparsity.set(sparsity(self.dense_params, after))
        log.info(
            "%s: structured pruning at step %d: %d -> %d parameters (%s)",
            self.phase.name,
            self.step,
            before,
            after,
            self.spec.widths,
        )

    def _wrap(self) -> None:
        """DDP around the current model (after build, restore or pruning); a collective on all ranks."""
        if not self.distributed:
            self._net = self.model
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        self._net = DistributedDataParallel(self.model, device_ids=ids)

    def _should_stop(self) -> bool:
        """Single process: the stop event. Several: stop after this step if any rank was asked to."""
        local = self.stop.is_set()
        if not self.distributed:
            return local
        agreed = elastic.any_true(local)
        if agreed and not local:
            self.reform = True
        return agreed

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.policy.autocast(self._precision):
            logits = self._net(x)
            teacher = self.phase.teacher
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                d = self.cfg.compression.distillation
                return distillation_loss(logits, t_logits, y, d.temperature, d.alpha)
            return F.cross_entropy(logits, y)

    def run(self) -> PhaseResult:
        self._restore()
        if self.distributed:
            first = elastic.from_rank0(self.step)
            if first != self.step:
                raise RuntimeError(f"rank {self.cfg.rank} resumed at step {self.step}, rank 0 at {first}")
        self._wrap()
        log.info(
            "%s: world_size=%d rank=%d global batch %d at step %d",
            self.phase.name,
            self.cfg.world_size,
            self.cfg.rank,
            self.controller.knobs.batch_size,
            self.step,
        )
        self.model.train()
        self._apply_knobs(self.controller.knobs)
        self.metrics.sparsity.set(sparsity(self.dense_params, count_parameters(self.model)))
        self._set_precision(self.policy.active(self.step))
        self.metrics.progress.set(min(1.0, self.counters.steps / max(1, self.progress_total)))
        self._sync()
        self.acct.mark()
        self._c_joules, self._c_samples = self.acct.last_joules, self.counters.samples
        window = self.cfg.adapt_window_steps
        x_all, y_all = self.data.x_train, self.data.y_train
        scaler = self.policy.scaler
        loss: torch.Tensor | None = None
        saved_at = self.step if self.step > 0 else -1
        try:
            world, rank = self.cfg.world_size, self.cfg.rank
            stopped = False
            while self.step < self.phase.steps:
                if self._should_stop():
                    stopped = True
                    break
                self._maybe_prune()
                self._set_precision(self.policy.active(self.step))
                bs = self._knobs.batch_size  # global batch: the same at every world size
                global_idx = self.sampler.next_indices(bs)
                idx = elastic.shard(global_idx, rank, world).to(self.device, non_blocking=True)
                x, y = x_all[idx], y_all[idx]
                loss = self._loss(x, y)
                objective = loss
                if self.distributed:
                    # DDP averages over ranks; weighting by slice size makes that the global-batch mean.
                    objective = loss * (len(idx) * world / bs)
                self.optimizer.zero_grad(set_to_none=True)
                scaled: torch.Tensor = scaler.scale(objective)
                torch.autograd.backward(scaled)
                scaler.step(self.optimizer)
                scaler.update()
                if self.controller.enabled:
                    self._c_loss_sum += loss.detach().float()
                    self._c_steps += 1
                self.step += 1
                self.counters.steps += 1
                self.counters.samples += bs
                if self.cfg.log_every and self.step % self.cfg.log_every == 0:
                    log.info("%s step=%d loss=%r", self.phase.name, self.step, float(loss.item()))
                if self.step % window == 0:
                    self._window(loss)
                if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                    acc = evaluate(
                        self.model, self.data.x_test, self.data.y_test, self.policy, self._precision
                    )
                    self.metrics.accuracy.set(acc)
                    log.info("%s step=%d test_accuracy=%.4f", self.phase.name, self.step, acc)
                if self.step % self.cfg.checkpoint_every == 0:
                    self._window(loss, feed=False)
                    self.save()
                    saved_at = self.step
            completed = self.step >= self.phase.steps
            if stopped and not completed:
                why = "a peer rank asked to stop" if self.reform else "stop requested"
                log.info(
                    "%s: rank %d: %s; finishing at step %d", self.phase.name, self.cfg.rank, why, self.step
                )
            self._window(loss, feed=False)
            accuracy = None
            if completed:
                accuracy = evaluate(
                    self.model, self.data.x_test, self.data.y_test, self.policy, self._precision
                )
                self.metrics.accuracy.set(accuracy)
                log.info("%s: done at step %d, test accuracy %.4f", self.phase.name, self.step, accuracy)
            if saved_at != self.step:
                self.save()
            if self.distributed:
                elastic.barrier()  # nobody leaves (and re-forms) before rank 0's checkpoint is on disk
        finally:
            self.restore_power_limit()
        return PhaseResult(
            completed,
            self.model,
            self.spec,
            self.step,
            accuracy,
            self.dense_params,
            [dict(d) for d in self.controller.state_dict()["decisions"]],
            DTYPE_NAMES[self._precision],
            self.reform,
        )
