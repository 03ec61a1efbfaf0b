"""Shared wiring for the fault-injection suite: real operators, a real control plane, real faults.

Every test here injects one fault a production operator meets (SIGKILL, a second replica, the API
server gone, the carbon provider gone, the trainer killed mid-write, RBAC denying a write) and
asserts what a user would check afterwards: the deadline, the totals, the conditions and Events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import REPLAY_START, OperatorProcess, events, get_json

T0 = REPLAY_START


def status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return dict(get_json(cluster, ns, "caj", name).get("status") or {})


def job(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    r = cluster.kubectl("-n", ns, "get", "job", name, "-o", "json", check=False)
    if r.returncode != 0:
        return None
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def condition(st: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in st.get("conditions") or [] if c.get("type") == type_), None)


def reasons(cluster: Cluster, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in events(cluster, ns, name)]


def leader_gauge(op: OperatorProcess) -> float | None:
    """`gridwise_operator_leader` from the replica's /metrics (None while it does not answer)."""
    code, body = op.get("/metrics")
    if code != 200:
        return None
    for line in body.splitlines():
        if line.startswith("gridwise_operator_leader "):
            return float(line.split()[1])
    return None


class Operators:
    """Starts `gridwise operator run` children that share one replay clock anchor, so a restarted
    operator continues the same replayed time instead of starting it over."""

    def __init__(self, cluster: Cluster, namespace: str, tmp_path: Path) -> None:
        self.cluster, self.namespace, self.tmp_path = cluster, namespace, tmp_path
        self.anchor = time.time()
        self.started: list[OperatorProcess] = []

    def replay_now(self, speed: float) -> float:
        """Seconds of replayed time since T0, as every operator started here sees it."""
        return (time.time() - self.anchor) * speed

    def start(
        self,
        *,
        speed: float = 600.0,
        kubeconfig: Path | None = None,
        extra_args: tuple[str, ...] = (),
        wait_ready: bool = True,
        **kwargs: Any,
    ) -> OperatorProcess:
        op = OperatorProcess(
            kubeconfig or self.cluster.kubeconfig,
            self.tmp_path / f"operator-{len(self.started)}.log",
            clock_start=T0,
            speed=speed,
            lease_namespace=self.namespace,
            extra_args=["--namespace", self.namespace, "--clock-anchor", str(self.anchor), *extra_args],
            **kwargs,
        )
        self.started.append(op)
        return op.start(wait_ready=wait_ready)

    def stop_all(self) -> None:
        for op in self.started:
            op.stop(sig_kill=True)


@pytest.fixture
def operators(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Operators]:
    ops = Operators(cluster, namespace, tmp_path)
    yield ops
    ops.stop_all()
