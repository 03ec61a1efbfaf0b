"""Runs the operator: API credentials, health and metrics server, leader election, kopf.

`run_operator` is what `gridwise operator run`, the demo and the end-to-end tests call;
they differ only in the `OperatorConfig` (clock, tick interval, kubeconfig).

Lifecycle with leader election (the default): the process starts as a Ready standby and
campaigns for the Lease. While it leads, kopf runs (standalone) and the Lease is renewed. When a
renewal has not succeeded for the renew deadline (API server unreachable, partition) or another
replica holds the Lease, it steps down: kopf is stopped (cancelled if it does not stop in time,
always before the Lease can expire for the others), and the process campaigns again as a
standby. It exits only on SIGTERM/SIGINT (releasing the Lease), when kopf itself crashes, or when
the Lease is denied (401/403) for longer than a lease duration (broken RBAC).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from gridwise.api import GROUP, PLURAL, VERSION
from gridwise.clock import Clock, SystemClock
from gridwise.heap import release_periodically, shrink_tls_read_buffers
from gridwise.job_signal import SignalBoard
from gridwise.k8s import watch_transform
from gridwise.k8s.builders import METRICS_PORT
from gridwise.k8s.credentials import Credentials
from gridwise.k8s.drains import HOLD_S
from gridwise.k8s.handlers import register, watch_only_owned
from gridwise.k8s.kube import Kube
from gridwise.k8s.lease import CannotLead, KubeLeaseAPI, LeaderElector, LeaseTiming
from gridwise.k8s.reconciler import OperatorContext, Reconciler
from gridwise.k8s.signal_api import SignalEndpoint
from gridwise.k8s.wakeups import Wakeups
from gridwise.metrics import OperatorMetrics
from gridwise.progress import scrape_client
from gridwise.signal_hub import SignalHub
from gridwise.trainer_contract import SIGNAL_PATH

log = logging.getLogger(__name__)


@dataclass
class OperatorConfig:
    kubeconfig: str | None = None  # None: in-cluster, else $KUBECONFIG
    namespaces: list[str] = field(default_factory=list)  # empty: cluster-wide
    tick_seconds: float = 30.0
    pause_write_hold_s: float = HOLD_S  # drains.py: status writes wait for a mass pause's pods
    clock: Clock = field(default_factory=SystemClock)
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "gridwise-operator"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    scrape_timeout_s: float = 1.0
    trainer_metrics_port: int = METRICS_PORT
    signal_ttl_s: float = 300.0
    signal_min_interval_s: float = 60.0
    # Base URL pods reach this HTTP server at (e.g. http://gridwise.gridwise-system.svc:8080): the
    # Jobs built then tell their trainers to read GET <it>/v1/signal/<ns>/<name>. None: they are not.
    signal_base: str | None = None
    lease_timing: LeaseTiming = field(default_factory=LeaseTiming)
    # SIGTERM/SIGINT stop the operator (and release the Lease). Only for a process's main loop.
    handle_signals: bool = False


class LeanDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's change-detection essence, built without deep-copying the status it then drops.

    kopf deep-copies the whole body on every watch event of a CarbonAwareJob, then deletes the
    status and most metadata: at 1,000 jobs that copy was 11% of the operator's CPU in a zone wake
    (py-spy). The essence is the same (tests/unit/test_kopf_settings.py).
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        lean = {k: v for k, v in body.items() if k not in ("status", "metadata")}
        lean["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
        view = kopf.Body(cast(kopf.RawBody, lean))
        try:
            return super().build(body=view, extra_fields=extra_fields)
        finally:
            # A Body and its views point at each other, so the cycle would keep this event's spec
            # and annotations until the collector's next full pass; emptied, it holds nothing.
            view._replace_with({})


# Objects whose Events kopf posts at once (each over a connection of its own).
EVENT_POSTERS = 8
# Objects of one kind whose watch events kopf handles at once, and how long each object's worker
# waits for more events before it gives its slot back.
EVENT_WORKERS = 256
WORKER_IDLE_S = 0.5


def build_settings(settings: kopf.OperatorSettings) -> None:
    """gridwise's own names for kopf's bookkeeping, and limits that hold at hundreds of jobs."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = LeanDiffBase(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "gridwise-operator"  # the "From" column of kubectl describe
    settings.posting.event_name_prefix = "gridwise-"
    watch_only_owned(settings)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # kopf handles each object's watch events in a worker of its own, and a worker keeps its slot
    # for `idle_timeout` after its last event (kopf's default: 5 s). A zone wake changes a thousand
    # Jobs and then their pods, each in a burst of events: at 256 slots held 5 s each, the workers
    # drain about 50 objects a second, and the rest wait with every event queued in memory.
    # Spawning a worker again for a later event costs only a task, so the slot goes back sooner.
    settings.queueing.worker_limit = EVENT_WORKERS
    settings.queueing.idle_timeout = WORKER_IDLE_S
    # kopf posts each object's Events from a worker of its own over a session with no connection
    # limit, so a zone wake's thousand Events may each open a TLS connection at once, each with
    # Python's 256 KiB read buffer and OpenSSL's own: bounded, the wake's peak RSS fell by 18 MiB at
    # 1000 jobs (BENCHMARKS.md, issue 12, ninth round). Events are not on the path that pauses
    # pods: a few seconds' queue costs nothing.
    settings.posting.worker_limit = EVENT_POSTERS


class LeadershipMetrics:
    """`gridwise_operator_leader` (1 while this replica acts) and how often that changed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.leader = Gauge(
            "gridwise_operator_leader",
            "1 while this operator replica holds the Lease and acts on jobs, else 0 (standby).",
            registry=registry,
        )
        self.transitions = Counter(
            "gridwise_operator_leader_transitions",
            "Times this replica started or stopped leading.",
            registry=registry,
        )

        self._leading = False
        self.leader.set(0)

    def set(self, leading: bool) -> None:
        if self._leading != leading:
            self.transitions.inc()
        self._leading = leading
        self.leader.set(1 if leading else 0)


class HealthServer:
    """/healthz (the process is alive), /readyz (it can serve: a standby, or a leader whose kopf
    is up), /metrics (Prometheus), /v1/signal/<ns>/<name> (a job's grid reading, signal_api.py).
    Leadership is the `gridwise_operator_leader` metric, not readiness: otherwise standbys would
    hold `helm --wait` and `kubectl rollout status` back for ever."""

    def __init__(self, metrics: OperatorMetrics, host: str, port: int) -> None:
        self.metrics, self.host, self.port = metrics, host, port
        self.role = "starting"  # starting | standby | leader | stopping
        self.kopf_ready = False
        self.signal: SignalEndpoint | None = None  # set once the API client exists
        self._runner: web.AppRunner | None = None

    @property
    def ready(self) -> bool:
        return self.role == "standby" or (self.role == "leader" and self.kopf_ready)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get(SIGNAL_PATH, self._signal)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port (tests, the demo): report the one we got
            server: Any = site._server
            self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text=f"ready ({self.role})")
        detail = "leader, starting kopf" if self.role == "leader" else self.role
        return web.Response(status=503, text=f"not ready ({detail})")

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _signal(self, request: web.Request) -> web.Response:
        if self.signal is None:
            return web.json_response({"error": "starting"}, status=503)
        return await self.signal.handle(request)


def _handle_signals(stop: asyncio.Event) -> None:
    """(Re)installs SIGTERM/SIGINT -> stop; kopf replaces them with its own while it runs."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


@dataclass
class _Shared:
    """What outlives one leadership term: clients, caches and metrics."""

    config: OperatorConfig
    creds: Credentials
    kube: Kube
    signals: SignalHub
    metrics: OperatorMetrics
    scraper: Any
    health: HealthServer
    board: SignalBoard = field(default_factory=SignalBoard)


async def _run_kopf(shared: _Shared, kopf_stop: asyncio.Future[None], ready: asyncio.Event) -> None:
    """One kopf run with a fresh registry (a new term starts from the API server's state)."""
    config = shared.config
    ctx = OperatorContext(
        clock=config.clock,
        kube=shared.kube,
        signals=shared.signals,
        metrics=shared.metrics,
        scraper=shared.scraper,
        scrape_port=config.trainer_metrics_port,
        signal_base=config.signal_base,
        board=shared.board,
    )
    registry = kopf.OperatorRegistry()
    # kopf keeps bodies without managedFields, with shared strings, skips superseded events and
    # counts every event it gets.
    superseded, received = shared.metrics.watch_events_superseded, shared.metrics.watch_events
    watch_transform.install(
        on_superseded=lambda kind: superseded.labels(kind=kind).inc(),
        on_event=lambda kind: received.labels(kind=kind).inc(),
    )
    reconciler = Reconciler(ctx, pause_write_hold_s=config.pause_write_hold_s)
    # A job wanted for a decision (its zone changed, its spec was edited) does not wait behind its
    # own status write while that write waits for other jobs' pauses (drains.py).
    wakeups = Wakeups(
        config.clock,
        shared.signals,
        on_zone_wake=shared.metrics.zone_wakes.inc,
        on_urgent=reconciler.drains.interrupt,
    )
    reconciler.drains.wanted = wakeups.urgent_pending
    register(registry, reconciler, wakeups, tick_seconds=config.tick_seconds)

    @kopf.on.startup(registry=registry)
    def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        build_settings(settings)

    @kopf.on.login(registry=registry)
    async def _login(**_: Any) -> kopf.ConnectionInfo:
        return await shared.creds.connection_info()

    # One zone watcher per term: it wakes the jobs of a zone when that zone's signal changes.
    watch_stop = asyncio.Event()
    watcher = asyncio.create_task(wakeups.watch(watch_stop))
    trimmer = asyncio.create_task(release_periodically(watch_stop))
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            stop_flag=kopf_stop,
            ready_flag=ready,
        )
    finally:
        watch_stop.set()
        await watcher
        # kopf cancels the loop's other tasks when it stops on a signal: a cancelled trimmer is done.
        trimmer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trimmer


async def _stop_kopf(op: asyncio.Task[None], kopf_stop: asyncio.Future[None], grace: float) -> None:
    """Asks kopf to stop; cancels it after `grace` seconds. Crashes after the stop are logged, not raised."""
    if not kopf_stop.done():
        kopf_stop.set_result(None)  # set first: kopf's last-resort SIGKILL is armed only without it
    done, _ = await asyncio.wait({op}, timeout=grace)
    if not done:
        log.warning("kopf did not stop within %.1fs; cancelling its handlers", grace)
        op.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await op
        except Exception:
            log.exception("kopf failed while stopping")


async def _act(shared: _Shared, stop: asyncio.Event, elector: LeaderElector | None) -> str:
    """Runs kopf until `stop`, a lost Lease ("taken", "renew deadline") or a kopf crash (raised)."""
    health, config = shared.health, shared.config
    kopf_stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ready = asyncio.Event()

    async def _mark_ready() -> None:
        await ready.wait()
        health.kopf_ready = True

    op = asyncio.create_task(_run_kopf(shared, kopf_stop, ready))
    helpers = [asyncio.create_task(_mark_ready()), asyncio.create_task(stop.wait())]
    renew = asyncio.create_task(elector.renew(stop)) if elector is not None else None
    timing = config.lease_timing
    try:
        done, _ = await asyncio.wait(
            {op, helpers[1], *([renew] if renew else [])}, return_when=asyncio.FIRST_COMPLETED
        )
        if op in done:
            op.result()  # a kopf crash ends the process: a standby (or the restarted pod) takes over
            log.info("kopf stopped (signal); shutting down")
            stop.set()
            return "stopped"
        if renew is not None and renew in done and not stop.is_set():
            reason = renew.result()
            # Stop acting well before any standby may count the Lease as expired.
            await _stop_kopf(op, kopf_stop, (timing.lease_duration_s - timing.renew_deadline_s) / 2)
            return reason
        # Graceful stop: kopf finishes what it does, within what is left of our Lease.
        await _stop_kopf(op, kopf_stop, timing.renew_deadline_s - timing.retry_period_s)
        return "stopped"
    finally:
        health.kopf_ready = False
        # Out of the term, what this replica decided is history: /v1/signal reads the status instead.
        shared.board.clear()
        for t in (*helpers, *([renew] if renew else [])):
            t.cancel()
        if not op.done():  # only when an error left this function early
            if not kopf_stop.done():
                kopf_stop.set_result(None)  # so kopf arms no last-resort SIGKILL on cancellation
            op.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await op
        if config.handle_signals:
            _handle_signals(stop)


async def _campaign(
    shared: _Shared, stop: asyncio.Event, elector: LeaderElector, leading: LeadershipMetrics
) -> None:
    """Standby -> leader -> standby ... until stopped. Never exits because the API server is away."""
    health = shared.health
    try:
        while not stop.is_set():
            if not await elector.acquire(stop):
                break
            health.role = "leader"
            leading.set(True)
            log.info("leading: %s acts on CarbonAwareJobs", elector.identity)
            reason = await _act(shared, stop, elector)
            leading.set(False)
            health.role = "standby"
            if reason == "stopped":
                break
            log.warning(
                "lost leadership (%s): %s stopped acting and campaigns again as a standby",
                reason,
                elector.identity,
            )
    finally:
        health.role = "stopping"
        leading.set(False)
        if elector.is_leader:
            await elector.release()


async def run_operator(config: OperatorConfig, stop: asyncio.Event | None = None) -> None:
    """Runs until `stop` is set (or SIGTERM); raises CannotLead if RBAC never lets it lead."""
    stop = stop or asyncio.Event()
    if config.handle_signals:
        _handle_signals(stop)
    shrink_tls_read_buffers()  # before any connection: about 190 KiB less for each of them
    metrics = OperatorMetrics()
    leading = LeadershipMetrics(metrics.registry)
    health = HealthServer(metrics, config.http_host, config.http_port)
    await health.start()
    creds = await Credentials.load(config.kubeconfig)
    kube = Kube(creds.api_client())
    shared = _Shared(
        config=config,
        creds=creds,
        kube=kube,
        signals=SignalHub(
            config.clock,
            config.env,
            ttl_s=config.signal_ttl_s,
            min_interval_s=config.signal_min_interval_s,
        ),
        metrics=metrics,
        scraper=scrape_client(config.scrape_timeout_s),
        health=health,
    )

    async def caj(namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await kube.get_custom(GROUP, VERSION, PLURAL, namespace, name)
        except ApiException as exc:
            if exc.status == 403:  # a namespace this operator may not read: no job of ours
                return None
            raise

    health.signal = SignalEndpoint(shared.board, caj, config.namespaces)
    try:
        if config.leader_election:
            lease_api = KubeLeaseAPI(
                creds.api_client(),
                config.lease_namespace,
                config.lease_name,
                round(config.lease_timing.lease_duration_s),
            )
            elector = LeaderElector(lease_api, config.identity, timing=config.lease_timing)

            def standby() -> None:  # Ready once the first campaign attempt has run (and not won)
                health.role = "standby"

            elector.on_standby = standby
            log.info(
                "standby: %s campaigns for Lease %s/%s",
                config.identity,
                config.lease_namespace,
                config.lease_name,
            )
            try:
                await _campaign(shared, stop, elector, leading)
            except CannotLead as exc:
                log.error("%s", exc)
                raise
        else:
            health.role = "leader"
            leading.set(True)
            await _act(shared, stop, None)
    finally:
        health.role = "stopping"
        await shared.signals.aclose()
        await shared.scraper.aclose()
        await creds.close()
        await health.stop()
