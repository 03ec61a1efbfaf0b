"""Throughput of one elastic digits run against its replica count, through the real launcher.

Each size starts N `gridwise-trainer` processes with GRIDWISE_NNODES (torchrun elastic, c10d
rendezvous on 127.0.0.1, gloo DDP on CPU), the same way the pods do, and times the training steps
from the trainer's own log (rendezvous and start-up excluded). Prints a Markdown table with the ratio
against 1 process measured in the same run: the planner's throughput table, normalised.

    python benchmarks/elastic_bench.py --help
    python benchmarks/elastic_bench.py --sizes 1 2 3 --steps 600
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

BIN = Path(sys.executable).parent / "gridwise-trainer"
STAMP = re.compile(
    r"^(\S+ \S+) INFO gridwise_trainer\.loop: model: (world_size=\d+ rank=0|done at step)", re.M
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(size: int, steps: int, batch: int, threads: int, device: str = "cpu") -> float:
    """Global samples per second of the training steps at `size` replicas."""
    with tempfile.TemporaryDirectory() as tmp:
        port = _port()
        args = [
            str(BIN),
            "--checkpoint-dir",
            tmp,
            "--total-steps",
            str(steps),
            "--batch-size",
            str(batch),
            "--metrics-port",
            "off",
            "--checkpoint-every",
            str(steps),
            "--device",
            device,
            "--log-every",
            "0",
        ]
        procs = []
        for i in range(size):
            env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWISE_")}
            env.update(
                OMP_NUM_THREADS=str(threads),
                GRIDWISE_NNODES=f"{size}:{size}",
                GRIDWISE_RDZV_ENDPOINT=f"127.0.0.1:{port}",
                GRIDWISE_RDZV_ID="bench",
                GRIDWISE_NODE_RANK=str(i),
                GRIDWISE_LOCAL_ADDR="127.0.0.1",
            )
            procs.append(
                subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        outs = [p.communicate(timeout=600)[0] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"size {size} failed:\n{outs[0][-3000:]}")
        marks = [m for out in outs for m in STAMP.findall(out)]
        start = next(t for t, what in marks if what.startswith("world_size"))
        end = next(t for t, what in marks if what.startswith("done"))
        fmt = "%Y-%m-%d %H:%M:%S,%f"
        seconds = (datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds()
        return steps * batch / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (fixed across sizes)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (each process uses its cuda:0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    a = p.parse_args()
    sizes = sorted(set([1, *a.sizes]))
    rates = {n: run(n, a.steps, a.batch_size, a.threads, a.device) for n in sizes}
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.processor() or 'cpu'}; "
        f"torch threads/process {a.threads}; {a.steps} steps, global batch {a.batch_size}\n"
    )
    print("| replicas | samples/s (global) | vs 1 process | per replica |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        print(f"| {n} | {rates[n]:.0f} | {rates[n] / rates[1]:.2f}x | {rates[n] / rates[1] / n:.2f} |")


if __name__ == "__main__":
    main()
