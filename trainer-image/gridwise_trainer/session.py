"""The trainer as a library: what any PyTorch loop needs to run under gridwise, in a few lines.

    from gridwise_trainer import Session

    with Session.from_env() as session:            # GRIDWISE_* env, as the operator sets it
        session.track(model=model, optimizer=opt, scheduler=sched)
        session.restore()                          # newest valid checkpoint, if any
        for epoch in session.epochs():
            loader = DataLoader(ds, shuffle=True, generator=torch.Generator().manual_seed(epoch))
            for x, y in session.batches(loader):   # skips what a resumed epoch already trained on
                loss = step(x, y)
                if session.step_end(samples=len(x), loss=loss):
                    break
    sys.exit(session.exit_code)                    # 0 complete, 85 stopped early (checkpointed)

SIGTERM/SIGINT only set a flag: the step in flight finishes, `step_end` returns True, and leaving the
`with` block writes an atomic checkpoint (model, optimizer, scheduler, every RNG, data position,
counters). The metrics server speaks the operator's contract (docs/trainer-contract.md). Exact resume
needs each epoch's data order to be a function of the epoch (seed the shuffle with it, or call
`sampler.set_epoch`), as it is for DistributedSampler.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol, Self, TypeVar, cast

import numpy as np
import torch

from gridwise.trainer_contract import (
    ENV_CARBON_FILE,
    ENV_CARBON_INTENSITY,
    ENV_CARBON_POLL_SECONDS,
    ENV_CARBON_URL,
    ENV_CHECKPOINT_DIR,
    ENV_JOB_NAME,
    ENV_METRICS_PORT,
    ENV_SIGNAL_TYPE,
    ENV_TOTAL_STEPS,
    EXIT_COMPLETE,
    EXIT_EARLY_STOP,
)

from . import elastic
from .checkpoint import CheckpointManager
from .config import ConfigError
from .energy import EnergyMeter, open_meter
from .intensity import IntensitySource, Reading
from .metrics import TrainerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
ENV_CHECKPOINT_EVERY = "GRIDWISE_CHECKPOINT_EVERY"


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, /) -> Any: ...


# -- stop on SIGTERM ---------------------------------------------------------------------------------------


class StopSignal:
    """SIGTERM/SIGINT set an event instead of killing the process; the loop stops at a step boundary.

    Installs handlers only from the main thread (Python's rule) and puts the previous ones back on exit.
    """

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        log.info("received %s: finishing the current step, then checkpointing", self.received)
        self.event.set()

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        else:
            log.warning("not the main thread: SIGTERM is not handled here; set session.stop yourself")
        return self

    def take_back(self) -> None:
        """Reinstall our handler over one a framework put in after us (Lightning exits 0 on SIGTERM)."""
        if self._previous and threading.current_thread() is threading.main_thread():
            for s in self._previous:
                signal.signal(s, self._handle)

    def __exit__(self, *_exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def is_set(self) -> bool:
        return self.event.is_set()


# -- RNG ---------------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Every RNG a loop may use, as tensors and plain lists so torch.load(weights_only=True) reads them."""
    np_state = cast(tuple[str, Any, int, int, float], np.random.get_state(legacy=True))
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- data order ----------------------------------------------------------------------------------------------


class ResumableSampler(torch.utils.data.Sampler[int]):
    """A shuffle that depends only on (seed, epoch), and can skip what a resumed epoch already used.

    For frameworks that restart the epoch's iterator on resume (Lightning): the callback calls
    `resume(epoch, samples)` from the checkpoint and the next iteration starts at the next unseen sample.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, samples: int) -> None:
        if not 0 <= samples <= self.n:
            raise ValueError(f"cannot skip {samples} samples of an epoch of {self.n}: the data changed")
        self.epoch, self._skip = epoch, samples

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        skip, self._skip = self._skip, 0
        yield from order[skip:]


# -- accounting: energy, carbon and the metric contract ------------------------------------------------------


@dataclass
class Counters:
    """Work and cost so far, across phases and restarts; checkpointed so nothing is counted twice."""

    steps: int = 0
    samples: int = 0
    energy_j: float = 0.0
    emissions_g: float = 0.0
    checkpoints: int = 0
    last_intensity: float | None = None
    signal_type: str = "average"


class Accountant:
    """Turns meter readings and the grid signal into the contract's metrics at window edges.

    Called rarely (every few steps, at checkpoints, at the end) so a loop pays nothing per step.
    With several ranks the energy delta is summed over the group; rank 0 reports and saves it.
    """

    def __init__(
        self,
        metrics: TrainerMetrics,
        meter: EnergyMeter,
        intensity: IntensitySource,
        counters: Counters,
        world_size: int = 1,
        distributed: bool = False,
    ) -> None:
        self.metrics, self.meter, self.intensity, self.counters = metrics, meter, intensity, counters
        self.world_size, self.distributed = world_size, distributed
        self.mark()

    def mark(self) -> None:
        self.last_joules = self.meter.read_joules()
        self._samples = self.counters.samples
        self._steps = self.counters.steps
        self._time = time.perf_counter()

    def restored(self, saved: Counters) -> None:
        """Counters from a checkpoint: continue the exported counters, never report a reset as work."""
        m, c = self.metrics, self.counters
        gpu, src = self.meter.device_label, self.meter.source
        m.steps.inc(max(0, saved.steps - c.steps))
        m.samples.inc(max(0, saved.samples - c.samples))
        m.energy.labels(gpu=gpu, source=src).inc(max(0.0, saved.energy_j - c.energy_j))
        m.emissions.inc(max(0.0, saved.emissions_g - c.emissions_g))
        m.checkpoints.inc(max(0, saved.checkpoints - c.checkpoints))
        c.__dict__.update(asdict(saved))
        self._samples, self._steps = c.samples, c.steps

    def window(self, loss: float | None, progress_total: int) -> tuple[float, Reading | None]:
        """Account one window; returns the meter's joules now and the grid reading used."""
        now = time.perf_counter()
        joules = self.meter.read_joules()
        d_j = max(0.0, joules - self.last_joules)
        if self.distributed:
            d_j = elastic.all_sum(d_j)
        c, m = self.counters, self.metrics
        d_samples = c.samples - self._samples
        d_t = now - self._time
        reading = self.intensity.read()
        gpu, src = self.meter.device_label, self.meter.source
        c.energy_j += d_j
        m.steps.inc(c.steps - self._steps)
        m.samples.inc(d_samples)
        m.energy.labels(gpu=gpu, source=src).inc(d_j)
        if reading is not None:
            grams = d_j / 3.6e6 * reading.grams_per_kwh
            c.emissions_g += grams
            c.last_intensity = reading.grams_per_kwh
            c.signal_type = reading.signal_type
            m.emissions.inc(grams)
            m.intensity.labels(signal_type=reading.signal_type).set(reading.grams_per_kwh)
        power = self.meter.power_watts()
        if power is not None:
            m.power.labels(gpu=gpu, source=src).set(power)
        util = self.meter.utilization()
        if util is not None:
            m.utilization.labels(gpu=gpu).set(util)
        if d_t > 0 and d_samples > 0:
            # Global samples (all ranks) per second at this world size: the planner's scaling curve.
            m.throughput.labels(world_size=str(self.world_size)).set(d_samples / d_t)
        if loss is not None:
            m.loss.set(loss)
        m.progress.set(min(1.0, c.steps / max(1, progress_total)))
        self.last_joules, self._samples, self._steps, self._time = joules, c.samples, c.steps, now
        return joules, reading


# -- the session -------------------------------------------------------------------------------------------


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be an integer") from None


def _env_port(env: Mapping[str, str]) -> int | None:
    raw = env.get(ENV_METRICS_PORT, "").strip().lower()
    if raw in {"", "off", "none", "disabled"}:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_METRICS_PORT}={raw!r} must be a port number or 'off'") from None


class Session:
    """One training run under gridwise: stop on SIGTERM, checkpoint, resume, meter and report.

    Use as a context manager. Leaving it normally checkpoints unless the newest checkpoint is already
    current; leaving it with an exception writes nothing (a half-done step must never be resumed).
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str],
        total_steps: int,
        *,
        job_name: str = "local",
        metrics_port: int | None = None,
        checkpoint_every: int = 0,
        keep_checkpoints: int = 3,
        window_steps: int = 10,
        device_type: str | None = None,
        intensity: IntensitySource | None = None,
        cpu_tdp_watts: float = 85.0,
        handle_signals: bool = True,
        world_size: int | None = None,
        rank: int | None = None,
    ) -> None:
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
        if checkpoint_every < 0 or window_steps < 1 or keep_checkpoints < 1:
            raise ConfigError("checkpoint_every >= 0, window_steps >= 1 and keep_checkpoints >= 1 please")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.total_steps = total_steps
        self.job_name = job_name
        self.metrics_port = metrics_port
        self.checkpoint_every = checkpoint_every
        self.window_steps = window_steps
        self.world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
        self.intensity = intensity or IntensitySource()
        self.cpu_tdp_watts = cpu_tdp_watts
        self.stop = StopSignal() if handle_signals else None
        self._stop_event = self.stop.event if self.stop is not None else threading.Event()
        self.ckpt = CheckpointManager(self.checkpoint_dir, job_name, keep_checkpoints, self.rank == 0)
        self.metrics = TrainerMetrics()
        self.counters = Counters(signal_type=self.intensity.signal_type)
        self._objects: dict[str, Stateful] = {}
        self.step = 0
        self.epoch = 0
        self.position = 0  # batches of `epoch` already trained on
        self.extra: dict[str, Any] = {}  # small plain values of your own, saved with each checkpoint
        self._saved_at = -1
        self._finished = False
        self._epoch_exhausted = False
        self._loss: float | None = None
        self._meter: EnergyMeter | None = None
        self._acct: Accountant | None = None
        self.port: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Session:
        """Settings from the env the operator sets (docs/trainer-contract.md); keyword arguments win."""
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        if env.get(ENV_CHECKPOINT_DIR, "").strip():
            kw["checkpoint_dir"] = env[ENV_CHECKPOINT_DIR].strip()
        steps = _env_int(env, ENV_TOTAL_STEPS)
        if steps is not None:
            kw["total_steps"] = steps
        if env.get(ENV_JOB_NAME, "").strip():
            kw["job_name"] = env[ENV_JOB_NAME].strip()
        kw["metrics_port"] = _env_port(env)
        every = _env_int(env, ENV_CHECKPOINT_EVERY)
        if every is not None:
            kw["checkpoint_every"] = every
        fixed = env.get(ENV_CARBON_INTENSITY, "").strip()
        try:
            fixed_value = float(fixed) if fixed else None
        except ValueError:
            raise ConfigError(f"{ENV_CARBON_INTENSITY}={fixed!r} must be a number (gCO2/kWh)") from None
        path = env.get(ENV_CARBON_FILE, "").strip()
        poll = env.get(ENV_CARBON_POLL_SECONDS, "").strip()
        try:
            poll_s = float(poll) if poll else 60.0
        except ValueError:
            raise ConfigError(f"{ENV_CARBON_POLL_SECONDS}={poll!r} must be a number of seconds") from None
        kw["intensity"] = IntensitySource(
            fixed_value,
            env.get(ENV_CARBON_URL, "").strip() or None,
            Path(path) if path else None,
            env.get(ENV_SIGNAL_TYPE, "average").strip() or "average",
            poll_s,
        )
        kw.update(overrides)
        for need, var in (("checkpoint_dir", ENV_CHECKPOINT_DIR), ("total_steps", ENV_TOTAL_STEPS)):
            if need not in kw:
                raise ConfigError(f"{var} is not set and no {need}= was given")
        return cls(**kw)

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        if self.stop is not None:
            self.stop.__enter__()
        self._meter = open_meter(self.device_type, self.cpu_tdp_watts)
        # dcgm-exporter's UUID on every GPU series, so library users' energy joins DCGM and Kepler too.
        self.metrics.set_device(self._meter.uuid)
        if self._meter.source != "nvml":
            log.info(
                "energy source is %r (no NVML GPU): the joules are not a GPU measurement", self._meter.source
            )
        distributed = self.world_size > 1 and elastic.active()
        self._acct = Accountant(
            self.metrics, self._meter, self.intensity, self.counters, self.world_size, distributed
        )
        if self.metrics_port is not None and self.rank == 0:
            try:
                self.port = self.metrics.serve(self.metrics_port)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on port {self.metrics_port}: {exc}") from None
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._account()
                if self._objects and self._saved_at != self.step and self.step > 0:
                    self.save()  # framework callbacks track nothing: the framework checkpoints
                if self.complete:
                    log.info("training complete at step %d", self.step)
                else:
                    log.info(
                        "stopped early at step %d of %d; exit %d and resume from %s",
                        self.step,
                        self.total_steps,
                        EXIT_EARLY_STOP,
                        self.checkpoint_dir,
                    )
        finally:
            if self._meter is not None:
                self._meter.close()
            self.metrics.shutdown()
            if self.stop is not None:
                self.stop.__exit__(exc_type, exc, tb)

    # -- state -----------------------------------------------------------------------------------------
    def track(self, **objects: Stateful) -> Self:
        """Objects whose state_dict() goes into every checkpoint: model, optimizer, scheduler, scaler..."""
        for name, obj in objects.items():
            if not (
                callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))
            ):
                raise TypeError(f"{name}={type(obj).__name__} has no state_dict()/load_state_dict()")
            self._objects[name] = obj
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "session": 1,
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "objects": {name: obj.state_dict() for name, obj in self._objects.items()},
            "rng": capture_rng(),
            "counters": asdict(self.counters),
            "extra": dict(self.extra),
        }

    def restore(self) -> int:
        """Load the newest valid checkpoint (bad ones are set aside, never deleted); returns the step."""
        found = self.ckpt.load_latest()
        if found is None:
            log.info("no checkpoint in %s; starting fresh", self.checkpoint_dir)
            return 0
        step, state, path = found
        if state.get("session") != 1:
            raise ConfigError(f"{path} was not written by a gridwise Session (it has no session state)")
        saved = state["objects"]
        missing = sorted(set(self._objects) - set(saved))
        if missing:
            raise ConfigError(f"{path.name} has no state for {missing}; it holds {sorted(saved)}")
        for name, obj in self._objects.items():
            obj.load_state_dict(saved[name])
        restore_rng(state["rng"])
        self.step, self.epoch, self.position = step, int(state["epoch"]), int(state["position"])
        self.extra = dict(state.get("extra", {}))
        if self._acct is not None:
            self._acct.restored(Counters(**state["counters"]))
        else:
            self.counters.__dict__.update(state["counters"])
        self._saved_at = step
        self.metrics.progress.set(min(1.0, self.counters.steps / self.total_steps))
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)", path.name, step, self.epoch, self.position
        )
        return step

    def resume_at(self, step: int, counters: Mapping[str, Any] | None = None) -> None:
        """A framework restored its own checkpoint at `step`: continue from there, with the counters
        (energy, emissions, samples) saved beside it so the exported counters never go back."""
        self.step = step
        saved = (
            Counters(**dict(counters))
            if counters
            else Counters(steps=step, signal_type=self.counters.signal_type)
        )
        if self._acct is not None:
            self._acct.restored(saved)
        else:
            self.counters.__dict__.update(asdict(saved))
        self._saved_at = step
        self.metrics.progress.set(min(1.0, self.counters.steps / self.total_steps))

    def counters_state(self) -> dict[str, Any]:
        """The counters to save beside a framework's checkpoint (plain JSON-able values)."""
        if self._acct is not None:
            self._acct.window(self._loss, self.total_steps)
        return asdict(self.counters)

    def save(self) -> Path | None:
        """Atomic, checksummed checkpoint of everything tracked (only rank 0 writes)."""
        t0 = time.perf_counter()
        self.counters.checkpoints += 1
        path = self.ckpt.save(self.step, self.state_dict())
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
        self._saved_at = self.step
        if path is not None:
            log.info("checkpoint %s written", path.name)
        return path

    # -- the loop --------------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self._finished or self.step >= self.total_steps

    @property
    def stop_requested(self) -> bool:
        return self._stop_event.is_set()

    def request_stop(self) -> None:
        """Stop at the next step boundary, as SIGTERM does (for callers that handle signals themselves)."""
        self._stop_event.set()

    def finish(self) -> None:
        """Your own criterion says training is done (e.g. converged early): exit 0."""
        self._finished = True

    @property
    def exit_code(self) -> int:
        """0 only when training is complete, else EXIT_EARLY_STOP (the work resumes from a checkpoint)."""
        return EXIT_COMPLETE if self.complete else EXIT_EARLY_STOP

    def _should_stop(self) -> bool:
        local = self.stop_requested
        if self.world_size > 1 and elastic.active():
            return elastic.any_true(local)  # every rank stops after the same step
        return local

    def epochs(self) -> Iterator[int]:
        """Epoch numbers from the resumed one on, until complete or asked to stop."""
        while not self.complete and not self._should_stop():
            self._epoch_exhausted = False
            yield self.epoch
            if self._epoch_exhausted:
                self.epoch += 1
                self.position = 0

    def batches(self, iterable: Iterable[T]) -> Iterator[T]:
        """The epoch's batches, minus the ones a resumed epoch already trained on."""
        it = iter(iterable)
        for _ in range(self.position):
            if next(it, _END) is _END:
                raise ConfigError(
                    f"the resumed epoch {self.epoch} has fewer than {self.position} batches: the data changed"
                )
        for item in it:
            self.position += 1
            yield item
        self._epoch_exhausted = True

    def step_end(self, samples: int = 0, loss: float | torch.Tensor | None = None) -> bool:
        """Call after each optimizer step; True means leave the loop (complete or asked to stop)."""
        return self.observe(self.step + 1, samples, loss)

    def observe(self, step: int, samples: int = 0, loss: float | torch.Tensor | None = None) -> bool:
        """A framework's own step count (HF `global_step`, Lightning `global_step`) and the samples since
        the last call; accounts windows and periodic checkpoints like `step_end`."""
        done = max(0, step - self.step)
        self.step = step
        self.counters.steps += done
        self.counters.samples += samples
        edge = done > 0 and self.step % self.window_steps == 0
        if loss is not None and edge:
            self._loss = float(loss.item()) if isinstance(loss, torch.Tensor) else float(loss)
        if edge:
            self._account()
        if self._objects and self.checkpoint_every and done > 0 and self.step % self.checkpoint_every == 0:
            self._account()
            self.save()
        return self.complete or self._should_stop()

    def _account(self) -> None:
        if self._acct is not None:
            self._acct.window(self._loss, self.total_steps)


_END = object()
