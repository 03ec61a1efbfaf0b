"""The grid signal the operator serves its trainers (issue 14, item 4): the JSON, and the thin handler.

`signal_document` is pure (a status and a forecast in, JSON out); the handler is exercised through a
real aiohttp server on loopback with the board and the status lookup it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from gridwise.carbon.reading import IntensityPoint
from gridwise.job_signal import (
    JobSignal,
    SignalBoard,
    from_status,
    short_forecast,
    signal_document,
    valid_name,
)
from gridwise.k8s.runtime import HealthServer
from gridwise.k8s.signal_api import SignalEndpoint
from gridwise.metrics import OperatorMetrics
from gridwise.trainer_contract import CONTRACT_VERSION, signal_url

T0 = datetime(2030, 1, 6, 12, tzinfo=UTC)
CARBON = {
    "gramsPerKWh": 217.4,
    "signalType": "marginal",
    "provider": "watttime",
    "zone": "CAISO_NORTH",
    "stale": False,
    "display": "217g/kWh marginal",
}


def hourly(start: datetime, values: list[float]) -> tuple[IntensityPoint, ...]:
    return tuple(
        IntensityPoint(start + timedelta(hours=i), start + timedelta(hours=i + 1), v)
        for i, v in enumerate(values)
    )


def test_the_document_is_the_status_reading_with_a_short_forecast() -> None:
    points = hourly(T0 - timedelta(hours=2), [float(i) for i in range(60)])
    doc = signal_document("ml", "train", JobSignal(CARBON, short_forecast(points, T0), T0))
    assert doc["gramsPerKWh"] == 217.4 and doc["signalType"] == "marginal"
    assert (doc["provider"], doc["zone"], doc["stale"]) == ("watttime", "CAISO_NORTH", False)
    assert doc["time"] == "2030-01-06T12:00:00Z" and doc["contractVersion"] == CONTRACT_VERSION
    assert (doc["namespace"], doc["name"]) == ("ml", "train")
    # Only what is still to come, within 24 hours: the point covering now first.
    first = {"start": "2030-01-06T12:00:00Z", "end": "2030-01-06T13:00:00Z", "gramsPerKWh": 2.0}
    assert doc["forecast"][0] == first
    assert len(doc["forecast"]) == 24
    # Contract 1.0 trainers read the snake_case keys only.
    assert doc["grams_per_kwh"] == 217.4 and doc["signal_type"] == "marginal"
    json.dumps(doc)  # plain JSON


def test_no_reading_yet_is_null_and_stale() -> None:
    doc = signal_document("ml", "train", JobSignal(None))
    assert doc["gramsPerKWh"] is None and doc["grams_per_kwh"] is None and doc["stale"] is True
    assert doc["forecast"] == [] and doc["time"] is None and doc["signalType"] == "average"


def test_the_document_carries_the_reading_only() -> None:
    """A tenant may read any job's zone intensity, never its spec or why a signal failed."""
    leaky = {**CARBON, "stale": True, "reason": "Secret creds not found", "spec": {"template": {}}}
    doc = signal_document("ml", "train", JobSignal(leaky, (), T0))
    assert doc["stale"] is True
    assert set(doc) == {
        "contractVersion", "namespace", "name", "gramsPerKWh", "signalType", "provider", "zone",
        "stale", "time", "forecast", "grams_per_kwh", "signal_type",
    }  # fmt: skip
    assert "creds" not in json.dumps(doc) and "display" not in doc


def test_a_written_status_gives_the_same_reading() -> None:
    status = {"carbonIntensity": CARBON, "accounting": {"lastTime": "2030-01-06T11:59:30Z"}, "spec": {}}
    signal = from_status(status)
    assert signal.carbon == CARBON and signal.forecast == ()
    assert signal.time == datetime(2030, 1, 6, 11, 59, 30, tzinfo=UTC)
    assert from_status({}) == JobSignal(None)
    assert from_status({"accounting": {"lastTime": "nope"}}).time is None


def test_names_are_kubernetes_names() -> None:
    assert valid_name("ml") and valid_name("train-1.v2")
    for bad in ("", "ML", "-x", "x-", "a/b", "..", "a" * 254, "%2e%2e"):
        assert not valid_name(bad), bad


def test_the_url_the_builder_sets_is_the_route_the_server_serves() -> None:
    assert signal_url("http://gridwise.gridwise-system.svc:8080/", "ml", "train") == (
        "http://gridwise.gridwise-system.svc:8080/v1/signal/ml/train"
    )


# -- the endpoint on the operator's HTTP server ----------------------------------------------------------


class Lookups:
    """The CarbonAwareJobs the API server holds; counts reads, can fail."""

    def __init__(self, objects: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = dict(objects)
        self.calls: list[tuple[str, str]] = []
        self.error: Exception | None = None

    async def __call__(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append((namespace, name))
        if self.error is not None:
            raise self.error
        return self.objects.get((namespace, name))


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[tuple[str, SignalBoard, Lookups]]:
    """The operator's HTTP server on loopback (in the test's own event loop)."""
    board = SignalBoard()
    lookups = Lookups({("ml", "standby"): {"spec": {"secret": "x"}, "status": {"carbonIntensity": CARBON}}})
    server = HealthServer(OperatorMetrics(), "127.0.0.1", 0)
    await server.start()
    server.signal = SignalEndpoint(board, lookups, ["ml", "other"])
    try:
        yield f"http://127.0.0.1:{server.port}", board, lookups
    finally:
        await server.stop()


async def get(url: str) -> tuple[int, dict[str, Any]]:
    def fetch() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return await asyncio.to_thread(fetch)


async def test_the_leader_serves_what_its_last_tick_decided() -> None:
    async with served() as (base, board, lookups):
        board.put("ml", "train", JobSignal(CARBON, hourly(T0, [100.0, 90.0]), T0))
        code, doc = await get(signal_url(base, "ml", "train"))
        latest = board.get("ml", "train")
        assert latest is not None
        assert code == 200 and doc == signal_document("ml", "train", latest)
        assert doc["gramsPerKWh"] == 217.4 and len(doc["forecast"]) == 2
        assert lookups.calls == [], "the board answers without the API server"


async def test_a_standby_serves_the_written_status_and_caches_it() -> None:
    async with served() as (base, _, lookups):
        for _ in range(3):
            code, doc = await get(signal_url(base, "ml", "standby"))
            assert code == 200 and doc["gramsPerKWh"] == 217.4 and doc["forecast"] == []
            assert "secret" not in json.dumps(doc)
        assert lookups.calls == [("ml", "standby")], "one API read per job and cache period"


async def test_unknown_unwatched_and_malformed_jobs_are_404_without_an_api_read() -> None:
    async with served() as (base, _, lookups):
        code, doc = await get(signal_url(base, "ml", "nope"))
        assert code == 404 and "error" in doc and lookups.calls == [("ml", "nope")]
        for path in ("/v1/signal/kube-system/coredns", "/v1/signal/ml/UPPER", "/v1/signal/ml/a..b%2F"):
            assert (await get(base + path))[0] == 404, path
        assert lookups.calls == [("ml", "nope")], "nothing outside the watched namespaces is looked up"


async def test_an_unreadable_status_is_503_and_not_cached() -> None:
    async with served() as (base, _, lookups):
        lookups.error = OSError("connection refused")
        code, doc = await get(signal_url(base, "other", "j"))
        assert code == 503 and "refused" not in doc["error"]
        lookups.error = None
        lookups.objects[("other", "j")] = {"status": {"carbonIntensity": CARBON}}
        assert (await get(signal_url(base, "other", "j")))[0] == 200


async def test_before_the_api_client_exists_the_endpoint_says_so() -> None:
    server = HealthServer(OperatorMetrics(), "127.0.0.1", 0)
    await server.start()
    try:
        code, doc = await get(signal_url(f"http://127.0.0.1:{server.port}", "ml", "train"))
        assert code == 503 and doc == {"error": "starting"}
    finally:
        await server.stop()


async def test_the_cache_stays_bounded() -> None:
    lookups = Lookups({})
    endpoint = SignalEndpoint(SignalBoard(), lookups, max_cached=8)
    for i in range(50):
        assert await endpoint.find("ml", f"j{i}") is None
    assert len(endpoint._cache) <= 8 and len(lookups.calls) == 50


def test_the_board_keeps_the_whole_forecast_and_the_document_serves_a_short_one() -> None:
    """The reconciler records the tick's forecast as is; cutting it is the endpoint's work."""
    doc = signal_document("ml", "train", JobSignal(CARBON, hourly(T0, [100.0] * 168), T0))
    assert len(doc["forecast"]) == 24 and doc["forecast"][0]["start"].startswith(T0.strftime("%Y-%m-%dT%H"))
