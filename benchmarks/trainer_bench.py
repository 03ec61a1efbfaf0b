"""Benchmark the trainer's compression techniques and the loop's overhead on digits.

Prints a Markdown table. Every technique is measured in the same process against a baseline
measured in the same run, so ratios are comparable even on a noisy machine. Energy comes from the
trainer's own meter: NVML on a GPU, RAPL or a labelled estimate (TDP x (0.1 + 0.9 x load^3)) on a CPU.

    python benchmarks/trainer_bench.py --help
    python benchmarks/trainer_bench.py                                   # CPU, digits CNN
    python benchmarks/trainer_bench.py --device cuda --model wide-cnn --steps 2000   # on a GPU
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gridwise_trainer.compression.quantization import quantize_for_inference
from gridwise_trainer.config import (
    CompressionSettings,
    DistillationSettings,
    Precision,
    PruningSettings,
    TrainerConfig,
)
from gridwise_trainer.data import Dataset, ShardedBatchSampler, load_digits_dataset
from gridwise_trainer.energy import EnergyMeter, open_meter
from gridwise_trainer.intensity import IntensitySource
from gridwise_trainer.loop import Phase, PhaseResult, Trainer, evaluate
from gridwise_trainer.metrics import TrainerMetrics
from gridwise_trainer.model import (
    ModelSpec,
    build_model,
    count_parameters,
    default_spec,
    estimate_flops,
    serialized_size,
    student_spec,
)
from gridwise_trainer.session import Counters

SEED_CLAIMS = {  # seed 002 (Viswanath), energy reduction / accuracy change; claims, not facts
    "pruning": "-28% / -1.5 pt",
    "quantization": "-35% / -2 pt",
    "distillation": "-42% / -3 pt",
    "mixed precision": "-22% / -0.5 pt",
    "combined": "-55% / n/a",
}


CHECKPOINT_SECONDS: list[float] = []  # the one end-of-run checkpoint each Trainer run writes


@dataclass
class Row:
    name: str
    seconds: float
    joules: float
    accuracy: float
    params: int
    flops: int
    nbytes: int
    infer_ms_per_1k: float
    infer_joules_per_1k: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    meter: EnergyMeter, device: torch.device, fn: Callable[[], object]
) -> tuple[float, float, object]:
    """Wall seconds and joules of fn, with CUDA synchronised at both edges."""
    _sync(device)
    j0, t0 = meter.read_joules(), time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, meter.read_joules() - j0, out


def train(
    args: argparse.Namespace,
    data: Dataset,
    device: torch.device,
    meter: EnergyMeter,
    spec: ModelSpec,
    comp: CompressionSettings,
    teacher: nn.Module | None = None,
    name: str = "model",
) -> tuple[float, float, nn.Module, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainerConfig(
            checkpoint_dir=Path(tmp),
            total_steps=args.steps,
            compression=comp,
            metrics_port=None,
            adapt=False,
            log_every=0,
            checkpoint_every=args.steps,
            batch_size=args.batch_size,
            device=device.type,
            seed=args.seed,
            carbon_intensity=args.intensity,
        )
        phase = Phase(
            name,
            spec,
            args.steps,
            Path(tmp),
            args.seed,
            comp.pruning.amount if comp.pruning.enabled else 0.0,
            teacher,
        )
        metrics = TrainerMetrics()

        def build_and_run() -> PhaseResult:
            trainer = Trainer(
                cfg,
                phase,
                data,
                device,
                metrics,
                meter,
                IntensitySource(fixed=args.intensity),
                Counters(),
                args.steps,
                threading.Event(),
            )
            return trainer.run()

        secs, joules, res = measure(meter, device, build_and_run)
    assert isinstance(res, PhaseResult) and res.accuracy is not None
    ckpt = metrics.registry.get_sample_value("gridwise_trainer_checkpoint_seconds_sum") or 0.0
    CHECKPOINT_SECONDS.append(float(ckpt))
    return secs, joules, res.model, res.accuracy


def plain_loop(args: argparse.Namespace, data: Dataset, device: torch.device, spec: ModelSpec) -> float:
    """The same model, data order, optimizer and steps in ten lines of plain PyTorch."""
    torch.manual_seed(args.seed)
    model = build_model(spec).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = ShardedBatchSampler(len(data.x_train), args.seed)
    loss = torch.zeros(())
    for _ in range(args.steps):
        idx = sampler.next_indices(args.batch_size).to(device)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    evaluate(model, data.x_test, data.y_test)
    return float(loss.item())


def inference(model: nn.Module, x: torch.Tensor, repeats: int) -> None:
    with torch.no_grad():
        for _ in range(repeats):
            model(x)


RunFn = Callable[..., tuple[Row, nn.Module]]


def compression_rows(
    run: RunFn,
    spec: ModelSpec,
    plain: CompressionSettings,
    reduced: Precision,
    pruning: PruningSettings,
    distill: DistillationSettings,
    amount: float,
) -> list[Row]:
    """Baseline first, then each technique alone, then all four together, all in this process."""
    base, teacher = run("baseline (fp32)", spec, plain)
    return [
        base,
        run(f"mixed precision ({reduced})", spec, CompressionSettings(mixed_precision=reduced))[0],
        run(f"pruning (structured, {amount:.0%} at mid-run)", spec, CompressionSettings(pruning=pruning))[0],
        run("quantization (int8-dynamic export)", spec, plain, quantize=True)[0],
        run(
            "distillation (student 1/4 width, teacher = baseline)",
            student_spec(spec),
            CompressionSettings(distillation=distill),
            teacher=teacher,
        )[0],
        run(
            "combined (all four)",
            student_spec(spec),
            CompressionSettings(reduced, pruning, "int8-dynamic", distill),
            teacher=teacher,
            quantize=True,
        )[0],
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--model", default="cnn", choices=["mlp", "cnn", "wide-cnn"], help="default cnn")
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="runs per technique; medians are reported")
    p.add_argument("--overhead-repeats", type=int, default=7, help="interleaved runs for the overhead test")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: less noise)")
    p.add_argument("--prune", type=float, default=0.5, help="pruning amount (default 0.5)")
    p.add_argument("--intensity", type=float, default=250.0, help="g/kWh for the emissions column")
    p.add_argument("--cpu-tdp-watts", type=float, default=85.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-overhead", action="store_true", help="skip the compression table")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_digits_dataset().to(device)
    meter = open_meter(device.type, args.cpu_tdp_watts)
    spec = default_spec(args.model)
    reduced: Precision = "bf16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "fp16"
    pruning = PruningSettings(True, args.prune)
    distill = DistillationSettings(True, 2.0, 0.5)
    x_inf = data.x_test
    infer_reps = 200 if device.type == "cpu" else 2000

    def run(
        name: str,
        sp: ModelSpec,
        comp: CompressionSettings,
        teacher: nn.Module | None = None,
        quantize: bool = False,
    ) -> tuple[Row, nn.Module]:
        results = [
            train(args, data, device, meter, sp, comp, teacher, "student" if teacher else "model")
            for _ in range(args.repeats)
        ]
        secs = statistics.median(r[0] for r in results)
        joules = statistics.median(r[1] for r in results)
        model, acc = results[0][2].eval(), results[0][3]
        if quantize:
            model = model.cpu()
            model, _ = quantize_for_inference(model)
            acc = evaluate(model, data.x_test.cpu(), data.y_test.cpu())
        xi = x_inf.cpu() if quantize else x_inf
        isecs, ijoules, _ = measure(
            meter, device if not quantize else torch.device("cpu"), lambda: inference(model, xi, infer_reps)
        )
        n = len(xi) * infer_reps / 1000
        row = Row(
            name,
            secs,
            joules,
            acc,
            count_parameters(model),
            estimate_flops(results[0][2], xi.to(next(results[0][2].parameters()).device)),
            serialized_size(model),
            isecs * 1000 / n,
            ijoules / n,
        )
        return row, results[0][2]

    plain = CompressionSettings()
    rows: list[Row] = []
    if not args.only_overhead:
        rows = compression_rows(run, spec, plain, reduced, pruning, distill, args.prune)
    # Loop overhead: interleave plain and trainer runs so drift on a busy machine hits both alike.
    plain_t: list[float] = []
    loop_t: list[float] = []
    for _ in range(args.overhead_repeats):
        s, _, _loss = measure(meter, device, lambda: plain_loop(args, data, device, spec))
        plain_t.append(s)
        s, _, _m, _a = train(args, data, device, meter, spec, plain)
        loop_t.append(s)
    p_med, l_med = statistics.median(plain_t), statistics.median(loop_t)
    ck_med = statistics.median(CHECKPOINT_SECONDS[-args.overhead_repeats :])

    src = meter.source
    hw = meter.hardware()
    print(
        f"### Trainer benchmark: {args.model} on digits, {args.steps} steps x batch {args.batch_size}, "
        f"device {device.type}, {args.repeats} runs each (median)\n"
    )
    print(f"- machine: {platform.machine()} {hw}, torch {torch.__version__}, {args.threads} thread(s)")
    print(
        f"- energy source: `{src}`"
        + (" (an ESTIMATE from TDP and load, not a measurement)" if src == "estimate" else "")
    )
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"- command: `python benchmarks/trainer_bench.py {cmd}`\n")
    print(
        "| technique | train s | train J | train energy vs baseline | test acc | Δ acc (pt) | params | "
        "FLOPs/sample | bytes | infer ms/1k | infer J/1k | infer energy vs baseline | "
        "seed claim (energy / acc) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = rows[0] if rows else None
    for r in rows:
        assert base is not None
        key = next((k for k in SEED_CLAIMS if r.name.startswith(k)), "")
        print(
            f"| {r.name} | {r.seconds:.2f} | {r.joules:.1f} | {100 * (r.joules / base.joules - 1):+.1f}% "
            f"| {r.accuracy:.4f} | {100 * (r.accuracy - base.accuracy):+.1f} | {r.params:,} | {r.flops:,} "
            f"| {r.nbytes:,} | {r.infer_ms_per_1k:.2f} | {r.infer_joules_per_1k:.3f} "
            f"| {100 * (r.infer_joules_per_1k / base.infer_joules_per_1k - 1):+.1f}% "
            f"| {SEED_CLAIMS.get(key, '')} |"
        )
    print(
        f"\nLoop overhead ({args.overhead_repeats} interleaved runs, median wall s, same model/data/order/"
        f"optimizer): plain PyTorch {p_med:.3f} s, gridwise Trainer {l_med:.3f} s, overhead "
        f"{100 * (l_med / p_med - 1):+.2f}% (all runs: plain {', '.join(f'{t:.3f}' for t in plain_t)}; "
        f"trainer {', '.join(f'{t:.3f}' for t in loop_t)}). The trainer run includes writing one "
        f"checkpoint (median {1000 * ck_med:.1f} ms); without it the overhead is "
        f"{100 * ((l_med - ck_med) / p_med - 1):+.2f}%."
    )
    meter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
