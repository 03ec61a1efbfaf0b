"""Elastic multi-replica training (issue 7): the torchrun launcher and the process-group helpers.

How a multi-replica CarbonAwareJob runs
---------------------------------------
The operator runs an Indexed Job (one pod per replica) with a headless Service and sets
GRIDWISE_NNODES="min:max", GRIDWISE_RDZV_ENDPOINT="<job>-0.<svc>.<ns>.svc:29400", GRIDWISE_RDZV_ID and
GRIDWISE_NODE_RANK (the pod's completion index). The image's entrypoint stays `gridwise-trainer`: when
GRIDWISE_NNODES is set and the process is not already a torchrun worker, `cli.main` runs (as a child
it supervises, see `run_torchrun`)

    python -m torch.distributed.run --nnodes MIN:MAX --nproc-per-node 1 --rdzv-backend c10d
        --rdzv-endpoint $GRIDWISE_RDZV_ENDPOINT --rdzv-id $GRIDWISE_RDZV_ID
        --rdzv-conf is_host=<NODE_RANK == 0>[,$GRIDWISE_RDZV_CONF] --max-restarts N
        [--local-addr $GRIDWISE_LOCAL_ADDR] -m gridwise_trainer <the same args>

so the operator never overrides the container command, and a user's own command that calls
`gridwise-trainer` gets the same behaviour. Pod 0 hosts the c10d store (is_host), so the rendezvous
address is stable for the Job's life: a scale-down removes the highest indices, never index 0.

Re-forming at a new size
------------------------
* Scale up: the new pod's agent joins the rendezvous; the running agents see a waiting node, SIGTERM
  their workers, rank 0 checkpoints, and the group re-forms at the new size (torchrun's own
  membership change; it does not use up restarts).
* Scale down: the removed pods get SIGTERM. Every step the ranks agree on "anyone asked to stop?"
  (one tiny all-reduce), so all ranks stop after the same step and rank 0 checkpoints it. A worker
  that stopped only because a peer did exits REFORM_EXIT_CODE; its agent restarts it (one of
  --max-restarts) and the survivors re-form at the smaller size from that checkpoint.
* Pause, drain, eviction: every pod gets SIGTERM: all ranks stop after the same step, rank 0
  checkpoints, the workers exit EXIT_EARLY_STOP (85). torchrun itself ends with an error when it is
  signalled, so the pod's main process is a small supervisor: it forwards SIGTERM/SIGINT to torchrun
  and, if a signal came and torchrun did not finish cleanly, exits EXIT_EARLY_STOP; the Job's
  podFailurePolicy ignores that code, so an early stop is neither a failure nor a completion.

Global batch rule
-----------------
`--batch-size` is the *global* batch of one optimizer step at any world size. Every rank draws the
same global batch from one world-size-independent sampler and trains on its slice `idx[rank::W]`;
the local loss is weighted by len(slice) * W / B, so DDP's gradient average equals the gradient of
the global-batch mean. One optimizer step is the same mathematics at 1, 2, 3 or 8 replicas (up to
float reduction order) and the learning rate never changes with the replica count; the checkpointed
sampler position is in global samples, so any size resumes any checkpoint.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from gridwise.trainer_contract import EXIT_EARLY_STOP, EXIT_REFORM

if TYPE_CHECKING:  # torch is imported lazily: the launcher path must stay light
    import torch

log = logging.getLogger(__name__)

ENV_NNODES = "GRIDWISE_NNODES"
ENV_RDZV_ENDPOINT = "GRIDWISE_RDZV_ENDPOINT"
ENV_RDZV_ID = "GRIDWISE_RDZV_ID"
ENV_NODE_RANK = "GRIDWISE_NODE_RANK"
ENV_RDZV_CONF = "GRIDWISE_RDZV_CONF"
ENV_LOCAL_ADDR = "GRIDWISE_LOCAL_ADDR"
ENV_MAX_RESTARTS = "GRIDWISE_MAX_RESTARTS"
DEFAULT_MAX_RESTARTS = 100  # each scale-down spends one; membership changes (scale-ups) spend none
REFORM_EXIT_CODE = EXIT_REFORM  # EX_TEMPFAIL: "a peer left; restart me so the group re-forms"
PROCESS_GROUP_TIMEOUT = timedelta(minutes=5)
_NNODES = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")

T = TypeVar("T")


class LaunchError(ValueError):
    """Elastic settings the launcher cannot use; reported like a configuration error (exit 2)."""


def is_torchrun_worker(env: Mapping[str, str]) -> bool:
    """True inside a process torchrun started (it sets these for every worker)."""
    return "TORCHELASTIC_RUN_ID" in env or "LOCAL_RANK" in env


def wants_elastic_launch(env: Mapping[str, str]) -> bool:
    return bool(env.get(ENV_NNODES, "").strip()) and not is_torchrun_worker(env)


def parse_nnodes(text: str) -> tuple[int, int]:
    m = _NNODES.match(text)
    if not m:
        raise LaunchError(f"{ENV_NNODES}={text!r} must be N or MIN:MAX")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if not 1 <= lo <= hi:
        raise LaunchError(f"{ENV_NNODES}={text!r} needs 1 <= MIN <= MAX")
    return lo, hi


def torchrun_argv(argv: Sequence[str], env: Mapping[str, str], python: str | None = None) -> list[str]:
    """The exact command the entrypoint execs for an elastic job (pure, so it is unit-tested)."""
    lo, hi = parse_nnodes(env.get(ENV_NNODES, ""))
    endpoint = env.get(ENV_RDZV_ENDPOINT, "").strip()
    if not endpoint:
        raise LaunchError(f"{ENV_NNODES} is set but {ENV_RDZV_ENDPOINT} is not")
    rdzv_id = env.get(ENV_RDZV_ID, "").strip() or env.get("GRIDWISE_JOB_NAME", "").strip() or "gridwise"
    try:
        max_restarts = int(env.get(ENV_MAX_RESTARTS, str(DEFAULT_MAX_RESTARTS)))
    except ValueError:
        raise LaunchError(f"{ENV_MAX_RESTARTS} must be an integer") from None
    conf: list[str] = []
    node_rank = env.get(ENV_NODE_RANK, "").strip()
    if node_rank:
        # Pod 0 hosts the c10d store; the others are clients. Explicit beats guessing from hostnames.
        conf.append(f"is_host={'true' if node_rank == '0' else 'false'}")
    extra = env.get(ENV_RDZV_CONF, "").strip()
    if extra:
        conf.append(extra)
    cmd = [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        f"{lo}:{hi}",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        rdzv_id,
        "--max-restarts",
        str(max_restarts),
    ]
    if conf:
        cmd += ["--rdzv-conf", ",".join(conf)]
    local_addr = env.get(ENV_LOCAL_ADDR, "").strip()
    if local_addr:
        cmd += ["--local-addr", local_addr]
    return [*cmd, "-m", "gridwise_trainer", *argv]


def torchrun_env(env: Mapping[str, str]) -> dict[str, str]:
    """The launcher's environment plus the one torch setting re-formation needs.

    torch 2.9's c10d handler caches the first round's bootstrap store info (TORCH_DISABLE_SHARE_RDZV_TCP_STORE
    unset): when a later round gives group rank 0 to another node, that node hits an assertion, or the
    others wait forever for a MASTER_ADDR nobody publishes. Seen here on scale-up and scale-down; with
    sharing off every round publishes its own master address.
    """
    return {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", **env}


def supervised_exit_code(torchrun_rc: int, signalled: bool) -> int:
    """The pod's exit code from torchrun's: an early stop must never look like success or a crash.

    torchrun raises (exit 1) when it is signalled, whatever its workers did, so the code alone cannot
    tell a pause from a failure; the supervisor knows whether it forwarded a signal. 0 after a signal
    means the workers had already finished: that really is completion.
    """
    if signalled and torchrun_rc != 0:
        return EXIT_EARLY_STOP
    return torchrun_rc if torchrun_rc >= 0 else 128 - torchrun_rc  # killed by a signal: shell convention


def run_torchrun(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run torchrun as a child, forward SIGTERM/SIGINT to it, and return the pod's exit code.

    The pod's PID 1 gets the kubelet's SIGTERM; torchrun's agent then stops its workers (they finish
    the step and rank 0 checkpoints) and the supervisor maps the result with `supervised_exit_code`.
    """
    cmd = torchrun_argv(argv, env)
    log.info("elastic job: running %s", " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    signalled: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        signalled.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        child = subprocess.Popen(cmd, env=torchrun_env(env))
        if signalled and child.poll() is None:  # a signal that came while the child was starting
            child.send_signal(signalled[-1])
        rc = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    code = supervised_exit_code(rc, bool(signalled))
    if code == EXIT_EARLY_STOP:
        log.info("stopped early by %s; exiting %d (resume from the checkpoint)", _names(signalled), code)
    return code


def _names(signums: Sequence[int]) -> str:
    return ",".join(sorted({signal.Signals(s).name for s in signums}))


# -- inside a worker ---------------------------------------------------------------------------------


def init_process_group(device: torch.device) -> None:
    """Join the group torchrun set up (env://): NCCL on GPUs, gloo on CPUs."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
    log.info("process group up: backend %s, rank %d of %d", backend, dist.get_rank(), dist.get_world_size())


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_true(flag: bool) -> bool:
    """Collective OR: every rank gets True if any rank passed True."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_sum(value: float) -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def from_rank0(obj: T) -> T:
    """Rank 0's value of a small picklable object, on every rank."""
    import torch.distributed as dist

    box: list[object] = [obj]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]  # type: ignore[return-value]


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def shard(idx: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's part of a global batch: idx[rank::W] (sizes differ by at most one)."""
    return idx[rank::world_size] if world_size > 1 else idx
