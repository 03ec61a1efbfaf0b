"""The carbon provider goes down past the signal TTL while a job waits out a dirty grid.

A local HTTP server speaks the Electricity Maps v3 format (stamped in the operator's replayed
time) and then starts failing. Whatever the operator does with a stale signal, a user must see
the signal marked stale (condition and Warning Event) and the job must still finish by its deadline.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import REPLAY_START, caj_manifest, events, replay_trace, wait_for

from .conftest import Operators, condition, status

pytestmark = pytest.mark.cluster

SPEED = 600.0
DIRTY = 500.0


class Provider:
    """Electricity Maps v3 `latest` and `forecast`, always dirty, until `down` is set."""

    def __init__(self, operators: Operators) -> None:
        self.operators = operators
        self.down = threading.Event()
        self.requests = 0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests += 1
                if provider.down.is_set():
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"upstream down")
                    return
                body = json.dumps(provider.answer(self.path)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def answer(self, path: str) -> dict[str, Any]:
        now = REPLAY_START + timedelta(seconds=self.operators.replay_now(SPEED))
        hour = now.replace(minute=0, second=0, microsecond=0)

        def stamp(t: datetime) -> str:
            return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")

        if "/latest" in path:
            return {"zone": "ES", "carbonIntensity": DIRTY, "datetime": stamp(hour), "updatedAt": stamp(now),
                    "emissionFactorType": "lifecycle", "isEstimated": False}  # fmt: skip
        forecast = [
            {"carbonIntensity": DIRTY, "datetime": stamp(hour + timedelta(hours=i))} for i in range(24)
        ]
        return {"zone": "ES", "forecast": forecast, "updatedAt": stamp(now)}

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def provider(operators: Operators) -> Iterator[Provider]:
    p = Provider(operators)
    yield p
    p.close()


def test_provider_down_past_the_ttl_marks_the_signal_stale_and_the_deadline_holds(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators, provider: Provider
) -> None:
    # The stand-in is allow-listed at the operator, and the job brings its own key: a baseURL
    # override never gets the operator's credentials (tests/cluster/test_security.py).
    op = operators.start(speed=SPEED, extra_env={"GRIDWISE_CARBON_ALLOWED_URLS": provider.url})
    cluster.kubectl(
        "-n", namespace, "create", "secret", "generic", "em-key",
        "--from-literal=ELECTRICITYMAPS_API_KEY=fault-test-key",
    )  # fmt: skip
    carbon = {
        "provider": "electricitymaps",
        "zone": "ES",
        "baseURL": provider.url,
        "secretRef": {"name": "em-key"},
    }
    manifest = caj_manifest(
        "stale",
        trace=replay_trace(tmp_path / "unused.csv", [DIRTY]),
        work_gpu_hours=1,
        max_replicas=2,
        complete_within="5h",
        # Work counts once pods run; at 600x replay the 1-3 s a kwok pod takes to start is 10-30
        # replayed minutes: the restart cost a user would state for such a job.
        policy={"type": "threshold", "thresholdGramsPerKWh": 200, "switchingCostMinutes": 30},
        carbon=carbon,
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    paused = wait_for(
        "a pause on the dirty, fresh signal",
        lambda: (s := status(cluster, namespace, "stale")).get("phase") == "Paused" and s,
        log=op.log_tail,
    )
    fresh = condition(paused, "CarbonSignalStale")
    assert fresh is not None and fresh["status"] == "False", paused.get("conditions")
    provider.down.set()  # from now on every request fails; the TTL (300 s replayed) passes in 0.5 s

    def stale_condition() -> dict[str, Any] | None:
        c = condition(status(cluster, namespace, "stale"), "CarbonSignalStale")
        return c if c is not None and c["status"] == "True" else None

    stale = wait_for("CarbonSignalStale=True", stale_condition, timeout=60, log=op.log_tail)
    assert stale["reason"] != "Fresh" and stale["message"], stale
    warnings = [e for e in events(cluster, namespace, "stale") if e["type"] == "Warning"]
    assert any("CarbonSignal" in e["reason"] or "signal" in e["message"].lower() for e in warnings), warnings
    done = wait_for(
        "the work to finish",
        lambda: (s := status(cluster, namespace, "stale")).get("progress", 0) >= 0.999 and s,
        timeout=90,
        log=op.log_tail,
    )
    finished = datetime.fromisoformat(done["accounting"]["lastTime"].replace("Z", "+00:00"))
    deadline = datetime.fromisoformat(done["deadline"].replace("Z", "+00:00"))
    assert finished <= deadline + timedelta(minutes=15), (finished, deadline)
    assert "fault-test-key" not in op.log_tail(10_000)
