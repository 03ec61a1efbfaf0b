"""Runs the operator: API credentials, health and metrics server, leader election, kopf.

`run_operator` is what `gridwise operator run`, the demo and the end-to-end tests call;
they differ only in the `OperatorConfig` (clock, tick interval, kubeconfig).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gridwise.api import GROUP
from gridwise.clock import Clock, SystemClock
from gridwise.k8s.builders import METRICS_PORT
from gridwise.k8s.handlers import register
from gridwise.k8s.kube import Kube
from gridwise.k8s.lease import LeaderElector, LeaseLost
from gridwise.k8s.reconciler import OperatorContext, Reconciler
from gridwise.k8s.wakeups import Wakeups
from gridwise.metrics import OperatorMetrics
from gridwise.progress import scrape_client
from gridwise.signal_hub import SignalHub

log = logging.getLogger(__name__)


@dataclass
class OperatorConfig:
    kubeconfig: str | None = None  # None: in-cluster, else $KUBECONFIG
    namespaces: list[str] = field(default_factory=list)  # empty: cluster-wide
    tick_seconds: float = 30.0
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


def connection_info(kubeconfig: str | None) -> kopf.ConnectionInfo:
    """kopf's credentials from the same kubeconfig (or service account) the API client uses."""
    token = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    if kubeconfig is None and token.exists():
        sa = token.parent
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        return kopf.ConnectionInfo(
            server=f"https://{host}:{port}",
            ca_path=str(sa / "ca.crt"),
            token=token.read_text().strip(),
            default_namespace=(sa / "namespace").read_text().strip(),
        )
    path = Path(kubeconfig or os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    doc = yaml.safe_load(path.read_text())
    ctx_name = doc.get("current-context")
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    user: dict[str, Any] = next((u["user"] for u in doc.get("users", []) if u["name"] == ctx.get("user")), {})

    def _file(key_path: str, key_data: str) -> str | None:
        if user.get(key_path) or cluster.get(key_path):
            return str(user.get(key_path) or cluster.get(key_path))
        data = user.get(key_data) or cluster.get(key_data)
        if not data:
            return None
        fd, name = tempfile.mkstemp(prefix="gridwise-kube-")
        os.write(fd, base64.b64decode(data))
        os.close(fd)
        return name

    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=_file("certificate-authority", "certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token"),
        certificate_path=_file("client-certificate", "client-certificate-data"),
        private_key_path=_file("client-key", "client-key-data"),
        default_namespace=ctx.get("namespace"),
    )


def build_settings(settings: kopf.OperatorSettings) -> None:
    """gridwise's own names for kopf's bookkeeping, and limits that hold at hundreds of jobs."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "gridwise-operator"  # the "From" column of kubectl describe
    settings.posting.event_name_prefix = "gridwise-"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.batching.worker_limit = 256


class HealthServer:
    """/healthz (alive), /readyz (leading and watching), /metrics (Prometheus)."""

    def __init__(self, metrics: OperatorMetrics, host: str, port: int) -> None:
        self.metrics, self.host, self.port = metrics, host, port
        self.ready = False
        self.leading = False
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        # A standby replica is healthy but not ready: it does no work until it leads.
        if self.ready:
            return web.Response(text="ready")
        return web.Response(status=503, text="standby" if not self.leading else "starting")

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def run_operator(config: OperatorConfig, stop: asyncio.Event | None = None) -> None:
    """Runs until `stop` is set (or SIGTERM via kopf); exits with LeaseLost if leadership is lost."""
    stop = stop or asyncio.Event()
    metrics = OperatorMetrics()
    health = HealthServer(metrics, config.http_host, config.http_port)
    await health.start()
    kube = await Kube.connect(config.kubeconfig)
    signals = SignalHub(
        config.clock,
        config.env,
        ttl_s=config.signal_ttl_s,
        min_interval_s=config.signal_min_interval_s,
    )
    elector: LeaderElector | None = None
    scraper = scrape_client(config.scrape_timeout_s)
    try:
        if config.leader_election:
            elector = LeaderElector(
                kube.api, namespace=config.lease_namespace, name=config.lease_name, identity=config.identity
            )
            if not await elector.acquire(stop):
                return
        health.leading = True
        ctx = OperatorContext(
            clock=config.clock,
            kube=kube,
            signals=signals,
            metrics=metrics,
            scraper=scraper,
            scrape_port=config.trainer_metrics_port,
        )
        registry = kopf.OperatorRegistry()
        wakeups = Wakeups(config.clock, signals, on_zone_wake=metrics.zone_wakes.inc)
        register(registry, Reconciler(ctx), wakeups, tick_seconds=config.tick_seconds)

        @kopf.on.startup(registry=registry)
        def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            build_settings(settings)

        @kopf.on.login(registry=registry)
        def _login(**_: Any) -> kopf.ConnectionInfo:
            return connection_info(config.kubeconfig)

        kopf_stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ready: asyncio.Event = asyncio.Event()

        async def _mark_ready() -> None:
            await ready.wait()
            health.ready = True

        async def _stop_on_event() -> None:
            await stop.wait()
            if not kopf_stop.done():
                kopf_stop.set_result(None)

        tasks = [
            asyncio.create_task(_mark_ready()),
            asyncio.create_task(_stop_on_event()),
            asyncio.create_task(wakeups.watch(stop)),
        ]
        holder = asyncio.create_task(elector.hold(stop)) if elector else None
        op = asyncio.create_task(
            kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                stop_flag=kopf_stop,
                ready_flag=ready,
            )
        )
        try:
            waiting = {op} | ({holder} if holder else set())
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if holder is not None and holder in done:
                if not kopf_stop.done():
                    kopf_stop.set_result(None)
                await op
                holder.result()  # raises LeaseLost
            if op in done:
                op.result()  # an operator crash surfaces here, not as a lost task
        finally:
            for t in tasks:
                t.cancel()
            if holder is not None and not holder.done():
                holder.cancel()
    except LeaseLost:
        log.error("lost leadership; stopping so a fresh replica can take over")
        raise
    finally:
        if elector is not None:
            await elector.release()
        await signals.aclose()
        await scraper.aclose()
        await kube.close()
        await health.stop()
