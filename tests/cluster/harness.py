"""Runs the real operator as a child process against the test cluster, and writes traces for it.

The operator is the same `gridwise operator run` users run; tests steer it only through
its documented flags (replay clock, tick interval) and the CarbonAwareJobs they apply.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gridwise.devcluster import Cluster, free_port

TRACE_HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,Data Source,"
    "Data Estimated,Data Estimation Method"
)


def write_trace(path: Path, start: datetime, hourly: Sequence[float], zone: str = "XX") -> Path:
    """An hourly trace in the Electricity Maps export format the trace provider reads."""
    lines = [TRACE_HEADER]
    for i, value in enumerate(hourly):
        when = start + timedelta(hours=i)
        lines.append(f"{when:%Y-%m-%d %H:%M:%S},Test,Test,{zone},{value},{value * 1.2},50,50,test,false,")
    path.write_text("\n".join(lines) + "\n")
    return path


REPLAY_START = datetime(2030, 1, 6, 0, 0, tzinfo=UTC)  # trace time the tests' replay clocks start at
HISTORY_DAYS = 3


def replay_trace(path: Path, future: Sequence[float], history: float = 100.0) -> Path:
    """History days at `history` g/kWh (the forecaster's past), then `future` hourly from REPLAY_START."""
    past = [history] * (24 * HISTORY_DAYS)
    return write_trace(path, REPLAY_START - timedelta(days=HISTORY_DAYS), [*past, *future])


def gridwise_executable() -> str:
    found = shutil.which("gridwise") or str(Path(sys.executable).with_name("gridwise"))
    if not Path(found).exists():
        raise RuntimeError("the gridwise console script is not installed: run `hack/venv.sh`")
    return found


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        clock_start: datetime | None = None,
        speed: float = 3600.0,
        tick_seconds: float = 0.5,
        leader_election: bool = False,
        identity: str | None = None,
        lease_namespace: str = "default",
        extra_env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        http_port: int | None = None,
    ) -> None:
        # Chosen up front when a flag must name it (e.g. --signal-url http://127.0.0.1:<port>).
        self.http_port = http_port if http_port is not None else free_port()
        self.log_path = log_path
        args = [
            gridwise_executable(),
            "operator",
            "run",
            "--kubeconfig",
            str(kubeconfig),
            "--tick-seconds",
            str(tick_seconds),
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--lease-namespace",
            lease_namespace,
        ]
        if clock_start is not None:
            args += [
                "--clock",
                "replay",
                "--clock-start",
                clock_start.isoformat(),
                "--clock-speed",
                str(speed),
            ]
        if not leader_election:
            args.append("--no-leader-election")
        if identity:
            args += ["--identity", identity]
        self.args = [*args, *extra_args]
        # Tests write their traces next to the operator's log: that is the operator's trace directory.
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "GRIDWISE_TRACE_DIRS": str(log_path.parent),
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> OperatorProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)  # not listening yet

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"operator not ready after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        return self.get("/metrics")[1]

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """The samples of /metrics called `name` (`..._total`, `..._count`), labels and value, in order."""
        return [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(self.metrics())
            for sample in family.samples
            if sample.name == name
        ]

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig_kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def caj_manifest(
    name: str,
    *,
    trace: Path,
    work_gpu_hours: float = 4,
    min_replicas: int = 1,
    max_replicas: int = 1,
    complete_within: str = "24h",
    policy: dict[str, Any] | None = None,
    extra_spec: dict[str, Any] | None = None,
    carbon: dict[str, Any] | None = None,
) -> str:
    doc = {
        "apiVersion": "gridwise.dev/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {"name": name},
        "spec": {
            "completeWithin": complete_within,
            "replicas": {"min": min_replicas, "max": max_replicas},
            "work": {
                "gpuHours": work_gpu_hours,
                "totalSteps": 10000,
                "powerPerReplicaWatts": 400,
                "scalingEfficiency": 0.9,
            },
            "carbon": carbon or {"provider": "trace", "zone": "XX", "tracePath": str(trace)},
            "policy": policy or {"type": "forecast"},
            "checkpoint": {"gracePeriodSeconds": 30},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "gridwise/trainer:test",
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                        }
                    ]
                }
            },
            **(extra_spec or {}),
        },
    }
    return yaml.safe_dump(doc)


def get_json(cluster: Cluster, namespace: str, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("-n", namespace, "get", *args, "-o", "json").stdout)
    return out


def wait_for(
    what: str,
    probe: Callable[[], Any],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    log: Callable[[], str] | None = None,
) -> Any:
    """Polls until `probe` returns something truthy; the failure says what was awaited and shows the log."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    extra = f"\n--- operator log ---\n{log()}" if log else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){extra}")


class Revisions:
    """`kubectl get KIND NAME -w`: each change's resourceVersion and the fields `jsonpath` prints.

    On one etcd a resourceVersion is the store's revision, so two objects' changes can be put in
    the order the API server committed them, which no pair of clocks could do as precisely.
    """

    def __init__(self, cluster: Cluster, namespace: str, kind: str, name: str, jsonpath: str) -> None:
        template = 'jsonpath={.metadata.resourceVersion}{" "}' + jsonpath + '{"\\n"}'
        args = ["-n", namespace, "get", kind, name, "-w", "--output-watch-events=false", "-o", template]
        self.lines: list[tuple[int, list[str]]] = []
        self._proc = subprocess.Popen(
            [cluster.tool("kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                rv, *fields = line.split()
                self.lines.append((int(rv), fields))

    def first(self, holds: Callable[[list[str]], bool]) -> int | None:
        """The revision of the first change whose printed fields `holds`."""
        return next((rv for rv, fields in list(self.lines) if holds(fields)), None)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._thread.join(timeout=10)


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = get_json(cluster, namespace, "events", f"--field-selector=involvedObject.name={name}")["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def helm_binary() -> str:
    """helm from the control-plane bin dir (built with it), else PATH: chart tests need no cluster for it."""
    from gridwise.devcluster import ControlPlaneError, find_binaries

    try:
        return str(find_binaries() / "helm")
    except ControlPlaneError:
        found = shutil.which("helm")
        if found is None:
            raise
        return found


def helm_template(
    chart: Path, release: str, namespace: str, values: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """`helm template` of `chart` as parsed objects (kube-version pinned to the one the tests run)."""
    args = [helm_binary(), "template", release, str(chart), "--namespace", namespace]
    args += ["--kube-version", "1.35.4"]
    proc = subprocess.run(
        [*args, "--values", "-"],
        input=yaml.safe_dump(values or {}),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
