"""gridwise-trainer: flags for people, GRIDWISE_* env vars for the operator; flags win over env."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from gridwise.trainer_contract import EXIT_COMPLETE, EXIT_CONFIG_ERROR, EXIT_EARLY_STOP

from .config import ConfigError, SignalType, TrainerConfig, parse_compression, parse_objective

log = logging.getLogger("gridwise_trainer")

EPILOG = """\
examples:
  # 600 steps of the digits CNN, bf16 autocast, half the hidden units pruned at mid-run:
  gridwise-trainer --checkpoint-dir /tmp/run --total-steps 600 \\
      --compression '{"mixedPrecision": "bf16", "pruning": {"enabled": true, "amount": 0.5}}'

  # what the operator does: everything through the environment. GRIDWISE_CARBON_URL is the
  # operator's reading for this job; GRIDWISE_CARBON_INTENSITY (yours) the fallback while it is down
  GRIDWISE_CHECKPOINT_DIR=/ckpt GRIDWISE_TOTAL_STEPS=5000 GRIDWISE_CARBON_INTENSITY=210 \\
  GRIDWISE_CARBON_URL=http://gridwise.gridwise-system.svc:8080/v1/signal/ml/train \\
  GRIDWISE_OBJECTIVE='{"accuracy": 1, "energy": 0.5, "carbon": 1}' gridwise-trainer

compression JSON (GRIDWISE_COMPRESSION), every key optional:
  {"mixedPrecision": "none|bf16|fp16",
   "pruning": {"enabled": bool, "amount": 0..0.9},        structured: layers are rebuilt smaller
   "quantization": "none|int8-dynamic",                   torchao int8 export of the final model
   "distillation": {"enabled": bool, "temperature": T, "alpha": soft-target weight}}
  With distillation, a teacher (the --model) is trained first unless --teacher-checkpoint is given,
  then a student a quarter as wide; progress counts both.

objective JSON (GRIDWISE_OBJECTIVE): {"accuracy": a, "energy": b, "carbon": c}, L = a*L_acc + b*E + c*C.
  With b = c = 0 the carbon loop never adapts. Otherwise it tries one knob per window (GPU power
  limit if permitted, fp32 instead of reduced precision, a doubled batch when energy/carbon outweigh
  accuracy), compares energy per sample with the window before and keeps it only if it is cheaper.

signals: SIGTERM/SIGINT finish the current step, write an atomic checkpoint and exit 85 (stopped
  early: the work is not done; the operator's Job ignores this code and resumes from the checkpoint).
  On start the newest valid checkpoint in --checkpoint-dir is resumed; corrupt ones are set aside.
elastic (several replicas): with GRIDWISE_NNODES=MIN:MAX (set by the operator for multi-replica jobs)
  this command runs torchrun (c10d rendezvous at GRIDWISE_RDZV_ENDPOINT, id GRIDWISE_RDZV_ID, pod
  GRIDWISE_NODE_RANK=0 hosts it; GRIDWISE_RDZV_CONF, GRIDWISE_LOCAL_ADDR, GRIDWISE_MAX_RESTARTS optional)
  with one DDP worker per pod. --batch-size is the global batch at any size, so the learning rate
  never changes with the replica count; ranks stop together and rank 0 checkpoints. A worker stopped
  only because a peer left exits 75 so torchrun re-forms the group from that checkpoint.
your own model: --model mypkg.models:make (and --dataset mypkg.data:load) import your code from
  PYTHONPATH, e.g. baked into an image FROM the trainer image (examples/byo-model). Mixed precision
  and int8 export apply to any model; structured pruning needs an nn.Sequential of Linear/Conv2d;
  distillation needs a factory taking scale= (the student is built at scale 0.25).
metrics: Prometheus text on http://0.0.0.0:PORT/metrics (gridwise_trainer_*).
output: checkpoints, model.pt, model-int8.pt (if quantized), carbon-label.{json,md} in --checkpoint-dir.
exit codes (docs/trainer-contract.md): 0 training complete, 85 stopped early after a checkpoint
  (SIGTERM/SIGINT), 2 bad configuration, 75 re-form (elastic worker), 1 anything else.
"""


@dataclass(frozen=True)
class Option:
    flag: str
    env: str | None
    default: Any
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None


def _int(text: str) -> int:
    return int(text)


def _float(text: str) -> float:
    return float(text)


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in {"1", "true", "yes", "on"}:
        return True
    if t in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _port(text: str) -> int | None:
    return None if text.strip().lower() in {"off", "none", "disabled"} else int(text)


def _opt_float(text: str) -> float | None:
    return float(text) if text.strip() else None


def _opt_str(text: str) -> str | None:
    return text.strip() or None


def _opt_path(text: str) -> Path | None:
    return Path(text) if text.strip() else None


OPTIONS: tuple[Option, ...] = (
    Option(
        "--checkpoint-dir",
        "GRIDWISE_CHECKPOINT_DIR",
        None,
        Path,
        "where checkpoints, exports and the carbon label go (required)",
        "DIR",
    ),
    Option(
        "--total-steps",
        "GRIDWISE_TOTAL_STEPS",
        None,
        _int,
        "planned optimizer steps; progress_ratio = steps / this (required)",
        "N",
    ),
    Option(
        "--compression", "GRIDWISE_COMPRESSION", "", str, "compression settings as JSON (see below)", "JSON"
    ),
    Option(
        "--objective",
        "GRIDWISE_OBJECTIVE",
        "",
        str,
        'objective weights as JSON (default {"accuracy": 1}: no adaptation)',
        "JSON",
    ),
    Option(
        "--metrics-port",
        "GRIDWISE_METRICS_PORT",
        "9400",
        _port,
        "port for /metrics; 0 picks a free one, 'off' disables (default 9400)",
        "PORT",
    ),
    Option(
        "--carbon-intensity",
        "GRIDWISE_CARBON_INTENSITY",
        "",
        _opt_float,
        "grid intensity in gCO2/kWh; also the fallback when the URL/file fails",
        "G_PER_KWH",
    ),
    Option(
        "--carbon-url",
        "GRIDWISE_CARBON_URL",
        "",
        _opt_str,
        'URL returning {"gramsPerKWh": x, "signalType": "average|marginal"}, polled; the operator '
        "sets it to its own reading for the job (/v1/signal/<ns>/<name>)",
        "URL",
    ),
    Option(
        "--carbon-file",
        "GRIDWISE_CARBON_FILE",
        "",
        _opt_path,
        "file with the same JSON as --carbon-url (e.g. a mounted ConfigMap)",
        "PATH",
    ),
    Option(
        "--signal-type",
        "GRIDWISE_SIGNAL_TYPE",
        "average",
        str,
        "average or marginal: what the intensity number means (default average)",
        "TYPE",
    ),
    Option(
        "--job-name",
        "GRIDWISE_JOB_NAME",
        "local",
        str,
        "CarbonAwareJob name; checkpoints of other jobs are refused",
        "NAME",
    ),
    Option(
        "--model",
        "GRIDWISE_MODEL",
        "cnn",
        str,
        "mlp | cnn | wide-cnn (the GPU-sized one) | package.module:factory (your nn.Module)",
        "NAME",
    ),
    Option(
        "--dataset",
        "GRIDWISE_DATASET",
        "digits",
        str,
        "digits | package.module:factory returning (x_train, y_train, x_test, y_test) tensors",
        "NAME",
    ),
    Option(
        "--batch-size",
        "GRIDWISE_BATCH_SIZE",
        "64",
        _int,
        "global batch per optimizer step, split across ranks (default 64)",
        "N",
    ),
    Option("--min-batch-size", "GRIDWISE_MIN_BATCH_SIZE", "16", _int, "lower bound for the carbon loop", "N"),
    Option(
        "--max-batch-size", "GRIDWISE_MAX_BATCH_SIZE", "256", _int, "upper bound for the carbon loop", "N"
    ),
    Option(
        "--learning-rate",
        "GRIDWISE_LEARNING_RATE",
        "0.05",
        _float,
        "SGD (momentum 0.9) rate at --batch-size; scaled by sqrt(batch ratio)",
        "LR",
    ),
    Option("--seed", "GRIDWISE_SEED", "0", _int, "seed for init and data order", "N"),
    Option("--device", "GRIDWISE_DEVICE", "auto", str, "auto | cpu | cuda | cuda:N", "DEV"),
    Option("--checkpoint-every", "GRIDWISE_CHECKPOINT_EVERY", "100", _int, "steps between checkpoints", "N"),
    Option("--keep-checkpoints", "GRIDWISE_KEEP_CHECKPOINTS", "3", _int, "how many checkpoints to keep", "N"),
    Option(
        "--eval-every",
        "GRIDWISE_EVAL_EVERY",
        "0",
        _int,
        "steps between held-out evaluations (0: at end)",
        "N",
    ),
    Option("--log-every", "GRIDWISE_LOG_EVERY", "50", _int, "steps between loss log lines (0: never)", "N"),
    Option(
        "--adapt", "GRIDWISE_ADAPT", "true", _bool, "let the carbon loop try adaptations (true/false)", "BOOL"
    ),
    Option(
        "--adapt-window-steps",
        "GRIDWISE_ADAPT_WINDOW_STEPS",
        "50",
        _int,
        "steps per measurement window (energy/metrics and each trial)",
        "N",
    ),
    Option(
        "--adapt-min-gain",
        "GRIDWISE_ADAPT_MIN_GAIN",
        "0.03",
        _float,
        "a trial is kept only if it cuts J/sample by at least this fraction",
        "FRAC",
    ),
    Option(
        "--allow-power-limit",
        "GRIDWISE_ALLOW_POWER_LIMIT",
        "false",
        _bool,
        "let the loop lower the GPU power limit via NVML (needs CAP_SYS_ADMIN)",
        "BOOL",
    ),
    Option(
        "--precision-warmup-fraction",
        "GRIDWISE_PRECISION_WARMUP_FRACTION",
        "0",
        _float,
        "dynamic precision: run fp32 for this fraction of steps, then mixedPrecision",
        "FRAC",
    ),
    Option(
        "--prune-at-fraction",
        "GRIDWISE_PRUNE_AT_FRACTION",
        "0.5",
        _float,
        "when pruning is on: train dense this fraction of steps, prune, fine-tune the rest",
        "FRAC",
    ),
    Option(
        "--teacher-steps",
        "GRIDWISE_TEACHER_STEPS",
        "",
        lambda t: int(t) if t.strip() else None,
        "steps to train the distillation teacher (default: --total-steps)",
        "N",
    ),
    Option(
        "--teacher-checkpoint",
        "GRIDWISE_TEACHER_CHECKPOINT",
        "",
        _opt_path,
        "gridwise checkpoint file to use as the teacher instead of training one",
        "PATH",
    ),
    Option(
        "--cpu-tdp-watts",
        "GRIDWISE_CPU_TDP_WATTS",
        "85",
        _float,
        "TDP for the CPU estimate when neither NVML nor RAPL is readable",
        "W",
    ),
    Option(
        "--carbon-poll-seconds",
        "GRIDWISE_CARBON_POLL_SECONDS",
        "60",
        _float,
        "how often to re-read the intensity",
        "S",
    ),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> _Parser:
    p = _Parser(
        prog="gridwise-trainer",
        description="Train a model on scikit-learn's digits with carbon-aware compression, energy metering, "
        "Prometheus metrics and pause/resume via checkpoints. Every flag has an env var (shown in "
        "brackets) so the gridwise operator can configure it; a flag overrides its env var.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for o in OPTIONS:
        suffix = f" [{o.env}]" if o.env else ""
        p.add_argument(o.flag, default=None, metavar=o.metavar, help=o.help + suffix)
    return p


def config_from(argv: Sequence[str] | None, environ: dict[str, str] | None = None) -> TrainerConfig:
    """Resolve flag > env > default, parse and validate; raises ConfigError naming the culprit."""
    env = dict(os.environ if environ is None else environ)
    ns = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for o in OPTIONS:
        key = o.flag[2:].replace("-", "_")
        raw, origin = ns[key], o.flag
        if raw is None and o.env and env.get(o.env) is not None:
            raw, origin = env[o.env], o.env
        if raw is None:
            raw = o.default
        if raw is None:
            raise ConfigError(f"{o.flag} (or {o.env}) is required")
        try:
            values[key] = o.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{origin}={raw!r} is invalid: {exc}") from None
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
    except ValueError:
        raise ConfigError("WORLD_SIZE and RANK must be integers") from None
    if world_size > 1 and not ("MASTER_ADDR" in env and "MASTER_PORT" in env):
        raise ConfigError(
            f"WORLD_SIZE={world_size} needs torchrun (MASTER_ADDR/MASTER_PORT unset); "
            "set GRIDWISE_NNODES and the rendezvous env to launch it"
        )
    signal_type: SignalType = values["signal_type"]
    cfg = TrainerConfig(
        checkpoint_dir=values["checkpoint_dir"],
        total_steps=values["total_steps"],
        compression=parse_compression(values["compression"]),
        objective=parse_objective(values["objective"]),
        metrics_port=values["metrics_port"],
        carbon_intensity=values["carbon_intensity"],
        carbon_url=values["carbon_url"],
        carbon_file=values["carbon_file"],
        signal_type=signal_type,
        job_name=values["job_name"],
        model=values["model"],
        dataset=values["dataset"],
        batch_size=values["batch_size"],
        min_batch_size=values["min_batch_size"],
        max_batch_size=values["max_batch_size"],
        learning_rate=values["learning_rate"],
        seed=values["seed"],
        device=values["device"],
        checkpoint_every=values["checkpoint_every"],
        keep_checkpoints=values["keep_checkpoints"],
        eval_every=values["eval_every"],
        log_every=values["log_every"],
        adapt=values["adapt"],
        adapt_window_steps=values["adapt_window_steps"],
        adapt_min_gain=values["adapt_min_gain"],
        allow_power_limit=values["allow_power_limit"],
        precision_warmup_fraction=values["precision_warmup_fraction"],
        prune_at_fraction=values["prune_at_fraction"],
        teacher_steps=values["teacher_steps"],
        teacher_checkpoint=values["teacher_checkpoint"],
        cpu_tdp_watts=values["cpu_tdp_watts"],
        carbon_poll_seconds=values["carbon_poll_seconds"],
        world_size=world_size,
        rank=rank,
    )
    cfg.validate()
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("GRIDWISE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .elastic import LaunchError, run_torchrun, wants_elastic_launch

    if wants_elastic_launch(os.environ):
        try:
            # Fail fast, before torchrun.
            launch_cfg = config_from(argv, {**os.environ, "WORLD_SIZE": "1", "RANK": "0"})
            from .checkpoint import completed_step

            done = completed_step(launch_cfg.checkpoint_dir, launch_cfg.job_name, launch_cfg.total_steps)
            if done is not None:
                # A replica added after the last step: no rendezvous host is left to wait for.
                log.info("training already complete (checkpoint at step %d); nothing to do", done)
                return EXIT_COMPLETE
            return run_torchrun(sys.argv[1:] if argv is None else list(argv), os.environ)
        except (ConfigError, LaunchError) as exc:
            print(f"gridwise-trainer: error: {exc}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
    try:
        cfg = config_from(argv)
    except ConfigError as exc:
        print(f"gridwise-trainer: error: {exc}", file=sys.stderr)
        return 2
    from .elastic import REFORM_EXIT_CODE
    from .job import run_job  # torch is imported only once the configuration is known to be good
    from .session import StopSignal

    try:
        with StopSignal() as stop:
            outcome = run_job(cfg, stop.event)
    except ConfigError as exc:
        print(f"gridwise-trainer: error: {exc}", file=sys.stderr)
        return 2
    if outcome.reform:
        log.info("a peer rank left; exiting %d so torchrun re-forms the group", REFORM_EXIT_CODE)
        return REFORM_EXIT_CODE
    if not outcome.completed:
        log.info(
            "paused cleanly; exiting %d (stopped early); rerun with the same --checkpoint-dir to resume",
            EXIT_EARLY_STOP,
        )
        return EXIT_EARLY_STOP
    return EXIT_COMPLETE


if __name__ == "__main__":
    sys.exit(main())
