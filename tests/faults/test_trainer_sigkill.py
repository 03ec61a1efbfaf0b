"""The trainer killed with SIGKILL while it writes a checkpoint, again and again.

The real `gridwise-trainer` runs as a local process (a GPU is the only thing we cannot run; the
checkpoint path is the same on CPU). The test waits until a checkpoint write is in flight (its temp
file exists) and SIGKILLs the trainer right then. After every kill, every checkpoint on disk must
be a complete, valid one (the previous or the new one, never a torn file), the next run must resume
from the newest of them, and in the end the job must finish all its steps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from gridwise_trainer.checkpoint import CheckpointManager, decode

JOB = "kill-loop"
TOTAL_STEPS = 150
KILLS = 5


def trainer_cmd(ckpt: Path) -> list[str]:
    exe = str(Path(sys.executable).with_name("gridwise-trainer"))
    return [
        exe, "--checkpoint-dir", str(ckpt), "--total-steps", str(TOTAL_STEPS), "--model", "mlp",
        "--job-name", JOB, "--checkpoint-every", "1", "--keep-checkpoints", "2", "--metrics-port", "off",
        "--eval-every", "0", "--log-every", "0", "--carbon-intensity", "100", "--adapt", "false",
        "--device", "cpu",
    ]  # fmt: skip


def valid_steps(ckpt: Path) -> list[int]:
    """Decodes every checkpoint file on disk: any torn or corrupt file fails the test."""
    steps = []
    for path in sorted(ckpt.glob("ckpt-*.pt")):
        header, _ = decode(path, JOB)  # raises CheckpointError on a torn file
        steps.append(header.step)
    assert not list(ckpt.glob("*.corrupt")), "a checkpoint was set aside as corrupt"
    return steps


def kill_during_write(proc: subprocess.Popen[bytes], ckpt: Path, after: int, timeout: float = 120.0) -> bool:
    """SIGKILLs `proc` the moment it writes a checkpoint past step `after` while a complete one is on
    disk (so there is a "previous" to fall back to); False if that never happened before it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with os.scandir(ckpt) as it:
            names = [e.name for e in it]
        writing = [n for n in names if n.startswith(".ckpt-") and ".tmp" in n]
        if writing and any(n.startswith("ckpt-") for n in names) and int(writing[0][6:16]) > after:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    return False


def test_sigkill_during_checkpoint_writes_never_corrupts_and_resume_continues(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    log = tmp_path / "trainer.log"
    newest: list[int] = []
    mid_write = 0
    for attempt in range(KILLS):
        with log.open("ab") as out:
            proc = subprocess.Popen(trainer_cmd(ckpt), stdout=out, stderr=subprocess.STDOUT)
        hit = kill_during_write(proc, ckpt, after=newest[-1] if newest else 0)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), log.read_text()[-3000:]
        mid_write += hit
        steps = valid_steps(ckpt)
        assert steps, f"run {attempt}: no valid checkpoint after the kill"
        newest.append(max(steps))
        if proc.returncode == 0:
            break  # finished before we could kill it: nothing more to test in the loop
    assert mid_write >= 3, f"only {mid_write} kills landed during a checkpoint write"
    assert newest == sorted(newest), f"a restart went back in time: {newest}"
    # The next run resumes from the newest valid checkpoint and finishes the job.
    resumed_from = max(valid_steps(ckpt))
    done = subprocess.run(trainer_cmd(ckpt), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    said = re.search(r"resumed from \S+ at step (\d+)", done.stdout + done.stderr)
    assert said is not None, done.stderr[-3000:]
    assert int(said.group(1)) == resumed_from
    final = CheckpointManager(ckpt, JOB, writer=False).load_latest()
    assert final is not None and final[0] == TOTAL_STEPS
    assert not list(ckpt.glob(".ckpt-*")), "temp files of killed writes were not cleaned up"
