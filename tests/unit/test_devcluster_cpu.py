"""The benchmark's per-part CPU reading of the local control plane (LocalControlPlane.cpu_seconds)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from gridwise.devcluster import LocalControlPlane

BURN = (
    "import time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.4: pass\n"
    "print('done', flush=True)\n"
    "input()"
)


def test_each_parts_cpu_is_read_from_proc_and_parts_of_one_name_add_up() -> None:
    cp = LocalControlPlane.__new__(LocalControlPlane)  # no cluster: only the process list is read
    burners = [
        subprocess.Popen(
            [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    idle = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        for proc in burners:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        cp._procs = [("kwok", burners[0]), ("kwok", burners[1]), ("etcd", idle)]  # type: ignore[list-item]
        used = cp.cpu_seconds()
        assert used["kwok"] >= 0.75, used  # two parts of 0.4 s each
        assert used["etcd"] < 0.4, used  # started, imported, waiting: no burst
    finally:
        everything: list[subprocess.Popen[Any]] = [*burners, idle]  # text and binary pipes
        for proc in everything:
            proc.kill()
            proc.wait()
