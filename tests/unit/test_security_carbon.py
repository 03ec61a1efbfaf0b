"""A hostile CarbonAwareJob cannot get the operator's keys, files or network, nor exhaust it.

Each "attacker" is a real local HTTP server standing where a job's `baseURL` points; the tests assert
what it received (usually: nothing at all). The official endpoints cannot be reached from here, so
requests to them go through an httpx MockTransport that records them (the network boundary).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import FIXTURES
from gridwise.carbon import CarbonSignal, ProviderError, build_provider
from gridwise.carbon.access import AccessError, AccessPolicy, normalize_url
from gridwise.carbon.http import MAX_RETRY_AFTER_S, get_json, new_client, retry_after_seconds
from gridwise.clock import ManualClock
from gridwise.signal_hub import SignalHub

NOW = datetime(2023, 6, 1, 12, 10, tzinfo=UTC)
OPERATOR_KEY = "operator-EM-key-d41d8cd98f00"
OPERATOR_ENV = {
    "ELECTRICITYMAPS_API_KEY": OPERATOR_KEY,
    "WATTTIME_USERNAME": "operator-wt-user-77",
    "WATTTIME_PASSWORD": "operator-wt-PASS-77",
}
OPERATOR_SECRETS = (OPERATOR_KEY, "operator-wt-user-77", "operator-wt-PASS-77")
EM_LATEST = (FIXTURES / "electricitymaps_latest.json").read_bytes()
EM_FORECAST = (FIXTURES / "electricitymaps_forecast.json").read_bytes()

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Attacker:
    """A local HTTP server that records every request (path, headers) it ever receives."""

    url: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    connections: int = 0
    handler: Handler | None = None

    def saw(self, needle: str) -> bool:
        return any(needle in path or needle in str(headers) for path, headers in self.requests)


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    box = Attacker()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            box.connections += 1
            super().setup()

        def do_GET(self) -> None:
            box.requests.append((self.path, dict(self.headers.items())))
            try:
                if box.handler is not None:
                    box.handler(self)
                    return
                body = b'{"carbonIntensity": 100, "datetime": "2023-06-01T12:00:00Z", "forecast": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    box.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()


def recording_client(seen: list[httpx.Request]) -> httpx.AsyncClient:
    """Stands in for the public Electricity Maps API (unreachable here) and records what it was sent."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = EM_LATEST if request.url.path.endswith("/latest") else EM_FORECAST
        return httpx.Response(200, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


# --- credentials: the operator's keys only ever go to the official endpoint ----------------------------


@pytest.mark.parametrize("provider", ["electricitymaps", "watttime"])
async def test_hostile_base_url_never_receives_the_operator_key(
    attacker: Attacker, provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not allow-listed: refused before connecting. Allow-listed: still no operator credentials."""
    hub = SignalHub(ManualClock(NOW), OPERATOR_ENV)
    carbon = {"provider": provider, "zone": "DE", "baseURL": attacker.url}
    with caplog.at_level(logging.DEBUG), pytest.raises(AccessError) as refused:
        await hub.get(carbon)
    assert refused.value.reason == "BaseURLNotAllowed"

    allowing = SignalHub(ManualClock(NOW), {**OPERATOR_ENV, "GRIDWISE_CARBON_ALLOWED_URLS": attacker.url})
    with caplog.at_level(logging.DEBUG), pytest.raises(AccessError) as no_creds:
        await allowing.get(carbon)
    assert no_creds.value.reason == "OperatorCredentialsRefused"
    assert "secretRef" in no_creds.value.public_message
    # Even naming an (empty) Secret of its own does not fall back to the operator's keys.
    with caplog.at_level(logging.DEBUG), pytest.raises(AccessError) as empty:
        await allowing.get({**carbon, "secretRef": {"name": "mine"}}, {})
    assert empty.value.reason == "CredentialsMissing"
    await hub.aclose()
    await allowing.aclose()
    assert attacker.connections == 0 and attacker.requests == []
    for text in (str(refused.value), str(no_creds.value), str(empty.value), caplog.text):
        for secret in OPERATOR_SECRETS:
            assert secret not in text


async def test_allow_listed_url_gets_only_the_jobs_own_key(attacker: Attacker) -> None:
    """The tenant's own Secret may be sent to an allow-listed URL; the operator's never is."""
    clock = ManualClock(NOW)
    env = {**OPERATOR_ENV, "GRIDWISE_CARBON_ALLOWED_URLS": attacker.url + "/"}
    hub = SignalHub(clock, env, timeout_s=2.0)
    carbon = {
        "provider": "electricitymaps",
        "zone": "DE",
        "baseURL": attacker.url,
        "secretRef": {"name": "s"},
    }
    signal = await hub.get(carbon, {"ELECTRICITYMAPS_API_KEY": "tenant-key-1"})
    await signal.read()
    await hub.aclose()
    assert attacker.requests, "the allow-listed URL should have been called"
    assert all(h.get("auth-token") == "tenant-key-1" for _, h in attacker.requests)
    for secret in OPERATOR_SECRETS:
        assert not attacker.saw(secret)


async def test_tenant_secret_file_indirection_is_refused(attacker: Attacker, tmp_path: Path) -> None:
    """`<KEY>_FILE` in a job's Secret would read the operator's disk; it is refused, the file never read."""
    target = tmp_path / "operator-token"
    target.write_text("operator-sa-token-SECRET")
    os.chmod(target, 0o000)  # reading it would raise; the test proves it is not even tried
    env = {"GRIDWISE_CARBON_ALLOWED_URLS": attacker.url}
    hub = SignalHub(ManualClock(NOW), env)
    for provider, key in (("electricitymaps", "ELECTRICITYMAPS_API_KEY"), ("watttime", "WATTTIME_PASSWORD")):
        carbon = {"provider": provider, "zone": "Z", "baseURL": attacker.url, "secretRef": {"name": "t"}}
        secret = {f"{key}_FILE": str(target), key: "", "WATTTIME_USERNAME": "u"}
        with pytest.raises(AccessError) as info:
            await hub.get(carbon, secret)
        assert info.value.reason == "SecretFileIndirection"
        assert str(target) not in str(info.value)
    await hub.aclose()
    assert attacker.requests == []


async def test_operator_credentials_go_to_the_official_endpoint_only() -> None:
    seen: list[httpx.Request] = []
    clock = ManualClock(NOW)
    provider = build_provider(
        {"provider": "electricitymaps", "zone": "DE"},
        env=OPERATOR_ENV,
        clock=clock,
        http=recording_client(seen),
    )
    result = await provider.fetch()
    assert result.current is not None
    assert {r.url.host for r in seen} == {"api.electricitymap.org"}
    assert all(r.url.scheme == "https" and r.headers["auth-token"] == OPERATOR_KEY for r in seen)
    # A job with its own Secret uses its own key, also at the official endpoint.
    seen.clear()
    own = build_provider(
        {"provider": "electricitymaps", "zone": "DE", "secretRef": {"name": "x"}},
        env=OPERATOR_ENV,
        clock=clock,
        http=recording_client(seen),
        secret={"ELECTRICITYMAPS_API_KEY": "tenant-key-2"},
    )
    await own.fetch()
    assert seen and all(r.headers["auth-token"] == "tenant-key-2" for r in seen)


async def test_internal_service_is_not_probed(attacker: Attacker) -> None:
    """A baseURL at an internal plain-HTTP service: no connection, and nothing about it in the message."""

    def internal(h: BaseHTTPRequestHandler) -> None:
        h.send_response(418)
        h.send_header("Content-Length", "21")
        h.end_headers()
        h.wfile.write(b"internal admin secret")

    attacker.handler = internal
    hub = SignalHub(ManualClock(NOW), {})
    for provider in ("uk-neso", "carbon-aware-sdk"):
        with pytest.raises(AccessError) as info:
            await hub.get({"provider": provider, "zone": "x", "baseURL": attacker.url + "/admin"})
        assert "418" not in str(info.value) and "admin" not in str(info.value)
        assert "nothing was sent" in str(info.value)
    assert attacker.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@127.0.0.1:1",
        "http://127.0.0.1:1/?x=1",
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "http://",
    ],
)
def test_odd_urls_are_refused(url: str) -> None:
    policy = AccessPolicy.create(allowed_urls=["http://127.0.0.1:1"])
    with pytest.raises(AccessError):
        policy.check_base_url(url)


def test_url_normalization_matches_one_origin() -> None:
    assert normalize_url("HTTPS://Api.Example.org:443/v1/") == "https://api.example.org/v1"
    policy = AccessPolicy.create(allowed_urls=["https://carbon.internal/api"])
    assert policy.check_base_url("https://carbon.internal/api/") == "https://carbon.internal/api"
    for other in ("https://carbon.internal/api2", "https://carbon.internal", "http://carbon.internal/api"):
        with pytest.raises(AccessError):
            policy.check_base_url(other)
    with pytest.raises(ValueError, match="GRIDWISE_CARBON_ALLOWED_URLS"):
        AccessPolicy.from_env({"GRIDWISE_CARBON_ALLOWED_URLS": "not-a-url"})


# --- trace files: packaged ones and an operator-configured directory, nothing else ------------------------


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    d = tmp_path / "traces"
    d.mkdir()
    (d / "ok.csv").write_bytes((FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv").read_bytes())
    return d


def build_trace(path: str, trace_dir: Path, **policy: int) -> object:
    access = AccessPolicy.create(trace_dirs=[trace_dir], **policy)  # type: ignore[arg-type]
    return build_provider(
        {"provider": "trace", "zone": "X", "tracePath": path}, env={}, clock=ManualClock(NOW), access=access
    )


def test_packaged_and_configured_traces_are_served(trace_dir: Path) -> None:
    assert build_trace("electricitymaps_ES_2022-06_hourly.csv", trace_dir) is not None
    assert build_trace(str(trace_dir / "ok.csv"), trace_dir) is not None
    assert build_trace("ok.csv", trace_dir) is not None


@pytest.mark.parametrize(
    "requested",
    ["/etc/passwd", "/dev/zero", "/proc/self/environ", "../../etc/passwd", "{dir}/../outside.csv", "{dir}"],
)
def test_traces_outside_the_allowed_dirs_are_refused(trace_dir: Path, requested: str) -> None:
    (trace_dir.parent / "outside.csv").write_text("secret,content\n")
    path = requested.format(dir=trace_dir)
    started = time.monotonic()
    with pytest.raises(AccessError) as info:
        build_trace(path, trace_dir)
    assert time.monotonic() - started < 5.0  # /dev/zero is never read (reading it never ends)
    message = str(info.value)
    assert str(trace_dir) not in message and "secret" not in message and "root:" not in message


def test_symlink_out_of_the_trace_dir_is_refused(trace_dir: Path) -> None:
    outside = trace_dir.parent / "operator-key.csv"
    outside.write_text("Datetime (UTC),x\nSUPERSECRET,1\n")
    (trace_dir / "link.csv").symlink_to(outside)
    (trace_dir / "zero.csv").symlink_to("/dev/zero")
    for name in ("link.csv", "zero.csv"):
        with pytest.raises(AccessError) as info:
            build_trace(name, trace_dir)
        assert "SUPERSECRET" not in str(info.value)


def test_oversized_and_special_files_are_refused(trace_dir: Path) -> None:
    with pytest.raises(AccessError) as big:
        build_trace("ok.csv", trace_dir, max_trace_bytes=1024)
    assert big.value.reason == "TraceTooLarge"
    os.mkfifo(trace_dir / "fifo.csv")  # opening a FIFO would block the operator forever
    with pytest.raises(AccessError) as fifo:
        build_trace("fifo.csv", trace_dir)
    assert fifo.value.reason == "TraceNotAllowed"


def test_parse_errors_never_quote_the_file(trace_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (trace_dir / "bad.csv").write_text(
        "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct)\n"
        "not-a-time-TOPSECRET,a,b,c,1\nx,a,b,c,2\n"
    )
    with caplog.at_level(logging.WARNING), pytest.raises(AccessError) as info:
        build_trace("bad.csv", trace_dir)
    assert info.value.reason == "TraceUnreadable"
    assert "TOPSECRET" not in str(info.value) and str(trace_dir) not in str(info.value)
    assert "TOPSECRET" in caplog.text  # the operator's own log keeps the detail


# --- bounded provider I/O ---------------------------------------------------------------------------------


def _stream(h: BaseHTTPRequestHandler, total: int, *, length: bool) -> None:
    h.send_response(200)
    if length:
        h.send_header("Content-Length", str(total))
    else:
        h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b" " * 65536
    sent = 0
    while sent < total:
        if length:
            h.wfile.write(chunk)
        else:
            h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        sent += len(chunk)
    if not length:
        h.wfile.write(b"0\r\n\r\n")


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_huge_bodies_are_aborted(attacker: Attacker, length: bool) -> None:
    attacker.handler = lambda h: _stream(h, 50 * 1024 * 1024, length=length)
    client = new_client()
    started = time.monotonic()
    with pytest.raises(ProviderError, match="larger than"):
        await get_json(client, "p", attacker.url + "/big", max_bytes=1024 * 1024)
    await client.aclose()
    assert time.monotonic() - started < 5


async def test_slow_drip_provider_is_cut_at_the_total_time_cap(attacker: Attacker) -> None:
    """Each byte arrives before the per-read timeout, but the whole answer would take 30 s."""

    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "30")
        h.end_headers()
        for _ in range(30):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(1)

    attacker.handler = drip
    client = new_client(timeout_s=5)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"no complete answer within 1\.5 s"):
        await get_json(client, "p", attacker.url, total_timeout_s=1.5)
    await client.aclose()
    assert time.monotonic() - started < 8  # the whole answer would take 30 s


async def test_slow_provider_bounds_the_whole_signal_read(attacker: Attacker) -> None:
    """Retries and backoff included, a read ends within its budget and says why."""

    def slow(h: BaseHTTPRequestHandler) -> None:
        time.sleep(30)

    attacker.handler = slow
    clock = ManualClock(NOW)
    provider = build_provider(
        {"provider": "uk-neso", "baseURL": attacker.url},
        env={"GRIDWISE_CARBON_ALLOWED_URLS": attacker.url},
        clock=clock,
    )
    signal = CarbonSignal(provider, clock=clock, timeout_s=1.0, retries=2)
    started = time.monotonic()
    reading = await signal.read()
    await signal.aclose()
    assert time.monotonic() - started < 6  # the provider would take 30 s per attempt, 3 attempts
    assert reading.stale and "no answer within 1 s" in reading.reason


def test_retry_after_forms_are_parsed_and_bounded() -> None:
    now = datetime(2023, 6, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(format_datetime(now + timedelta(minutes=5), usegmt=True), now) == 300
    assert retry_after_seconds(format_datetime(now - timedelta(minutes=5), usegmt=True), now) == 0
    assert retry_after_seconds("99999999") == MAX_RETRY_AFTER_S
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


async def test_retry_after_on_429_is_honoured(attacker: Attacker) -> None:
    def limited(h: BaseHTTPRequestHandler) -> None:
        h.send_response(429)
        h.send_header("Retry-After", "600")
        h.send_header("Content-Length", "0")
        h.end_headers()

    attacker.handler = limited
    clock = ManualClock(NOW)
    provider = build_provider(
        {"provider": "uk-neso", "baseURL": attacker.url},
        env={"GRIDWISE_CARBON_ALLOWED_URLS": attacker.url},
        clock=clock,
    )
    signal = CarbonSignal(provider, clock=clock, min_interval_s=0, retries=3, timeout_s=2)
    first = await signal.read()
    assert first.stale and "429" in first.reason and "600 s" in first.reason
    assert len(attacker.requests) == 1  # no retries inside the read: the provider said when
    clock.advance(300)
    second = await signal.read()
    assert second.stale and "Retry-After" in second.reason
    assert len(attacker.requests) == 1
    clock.advance(301)
    await signal.read()
    assert len(attacker.requests) == 2
    await signal.aclose()


# --- timeliness: future-stamped data is ignored, data that does not cover now is stale ---------------------


def _em(attacker: Attacker, latest_time: str) -> None:
    latest = f'{{"carbonIntensity": 250, "datetime": "{latest_time}"}}'.encode()

    def answer(h: BaseHTTPRequestHandler) -> None:
        body = latest if h.path.startswith("/v3/carbon-intensity/latest") else EM_FORECAST
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    attacker.handler = answer


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("2023-06-02T12:00:00Z", "stamped 1430 min in the future; ignored"),
        ("2023-06-01T09:00:00Z", "ended 130 min ago; it does not cover now"),
        ("9999-12-31T23:00:00Z", "outside the years 2000..2200"),
    ],
    ids=["tomorrow", "three-hours-old", "year-9999"],
)
async def test_untimely_current_values_are_stale(attacker: Attacker, stamp: str, reason: str) -> None:
    _em(attacker, stamp)
    clock = ManualClock(NOW)
    provider = build_provider(
        {"provider": "electricitymaps", "zone": "DE", "baseURL": attacker.url, "secretRef": {"name": "s"}},
        env={"GRIDWISE_CARBON_ALLOWED_URLS": attacker.url},
        clock=clock,
        secret={"ELECTRICITYMAPS_API_KEY": "k"},
    )
    signal = CarbonSignal(provider, clock=clock, retries=0)
    reading = await signal.read()
    await signal.aclose()
    assert reading.stale and reason in reading.reason
    assert reading.current is None  # never a future value taken as now


async def test_timely_value_is_fresh(attacker: Attacker) -> None:
    _em(attacker, "2023-06-01T12:00:00Z")
    clock = ManualClock(NOW)
    provider = build_provider(
        {"provider": "electricitymaps", "zone": "DE", "baseURL": attacker.url, "secretRef": {"name": "s"}},
        env={"GRIDWISE_CARBON_ALLOWED_URLS": attacker.url},
        clock=clock,
        secret={"ELECTRICITYMAPS_API_KEY": "k"},
    )
    signal = CarbonSignal(provider, clock=clock, retries=0)
    reading = await signal.read()
    await signal.aclose()
    assert not reading.stale and reading.current is not None and reading.current.grams_per_kwh == 250


# --- WattTime's signal type -------------------------------------------------------------------------------


def test_watttime_without_signal_type_is_marginal() -> None:
    provider = build_provider(
        {"provider": "watttime", "zone": "CAISO_NORTH"},
        env=OPERATOR_ENV,
        clock=ManualClock(NOW),
        http=httpx.AsyncClient(),
    )
    assert provider.signal_type == "marginal"
    with pytest.raises(ValueError, match="marginal"):
        build_provider(
            {"provider": "watttime", "zone": "CAISO_NORTH", "signalType": "average"},
            env=OPERATOR_ENV,
            clock=ManualClock(NOW),
        )


async def test_one_stuck_provider_does_not_stall_another(attacker: Attacker) -> None:
    """Two signals: a provider hanging for 30 s does not delay a read of a healthy one."""
    attacker.handler = lambda h: time.sleep(30)
    clock = ManualClock(NOW)
    env = {"GRIDWISE_CARBON_ALLOWED_URLS": attacker.url}
    hub = SignalHub(clock, env, timeout_s=5.0)
    stuck = await hub.get({"provider": "uk-neso", "baseURL": attacker.url})
    healthy = await hub.get({"provider": "static", "zone": "x", "staticGramsPerKWh": 100})
    slow_read = asyncio.create_task(stuck.read())
    await asyncio.sleep(0.2)
    started = time.monotonic()
    reading = await healthy.read()
    assert time.monotonic() - started < 3 and not reading.stale  # not behind the 30 s provider
    slow_read.cancel()
    await hub.aclose()


async def test_refused_specs_are_not_rebuilt_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    import gridwise.signal_hub as hub_module

    calls: list[str] = []
    real = build_provider  # what gridwise.signal_hub imported and calls

    def counting(carbon: dict[str, object], **kw: object) -> object:
        calls.append(str(carbon.get("tracePath")))
        return real(carbon, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(hub_module, "build_provider", counting)
    clock = ManualClock(NOW)
    hub = SignalHub(clock, {}, ttl_s=300)
    bad = {"provider": "trace", "zone": "X", "tracePath": "/etc/passwd"}
    for _ in range(3):
        with pytest.raises(AccessError):
            await hub.get(bad)
    assert len(calls) == 1
    clock.advance(301)
    with pytest.raises(AccessError):
        await hub.get(bad)
    assert len(calls) == 2


async def test_a_slow_build_does_not_hold_up_other_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    import gridwise.signal_hub as hub_module

    real = build_provider  # what gridwise.signal_hub imported and calls

    def slow_for_traces(carbon: dict[str, object], **kw: object) -> object:
        if carbon.get("provider") == "trace":
            time.sleep(4)  # a big trace being parsed
        return real(carbon, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(hub_module, "build_provider", slow_for_traces)
    hub = SignalHub(ManualClock(NOW), {})
    slow = asyncio.create_task(hub.get({"provider": "trace", "zone": "X", "tracePath": "nope.csv"}))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await hub.get({"provider": "static", "zone": "x", "staticGramsPerKWh": 100})
    assert time.monotonic() - started < 2  # not behind the 4 s build
    with pytest.raises(AccessError):
        await slow
    await hub.aclose()


def test_signal_type_for_a_spec_follows_the_provider() -> None:
    from gridwise.carbon import signal_type_for

    assert signal_type_for({"provider": "watttime"}) == "marginal"
    assert signal_type_for({"provider": "electricitymaps"}) == "average"
    assert signal_type_for({"provider": "static", "signalType": "marginal"}) == "marginal"
    assert signal_type_for({"provider": "carbon-aware-sdk"}) == "average"
