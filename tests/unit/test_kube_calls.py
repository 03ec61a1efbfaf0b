"""The raw API calls: errors still raise with the server's reason; writes do not decode the answer;
no more requests are in flight than `Kube` has slots, and the leader election keeps a connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gridwise.k8s import credentials
from gridwise.k8s.credentials import direct_session
from gridwise.k8s.kube import Kube, Slots
from gridwise.k8s.lease import KubeLeaseAPI


class Raw:
    """A raw (`_preload_content=False`) response as kubernetes_asyncio hands it back."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self._body = status, body

    async def read(self) -> bytes:
        return self._body


class Api:
    """Answers every call with one raw response and records what was asked."""

    def __init__(self, answer: Raw) -> None:
        self.answer = answer
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Raw:
            self.calls.append((name, args, kwargs))
            return self.answer

        return call


def kube(answer: Raw) -> Kube:
    k = Kube.__new__(Kube)
    k.batch = k.core = k.custom = Api(answer)
    k._slots = Slots(4)
    return k


async def test_a_write_succeeds_without_decoding_the_object_the_server_sends_back() -> None:
    # A patched Job comes back whole (template and managedFields); nothing reads it, so a thousand
    # pauses must not decode a thousand of them. A body that is not JSON proves it is not parsed.
    k = kube(Raw(200, b"not json: never parsed"))
    # Typed to return None; checked at run time too, so its result is read as an object.
    patched: Awaitable[object] = k.patch_job("ml", "train-job", {"spec": {"suspend": True}})
    assert await patched is None
    await k.delete_job("ml", "train-job")
    assert await k.create({"kind": "Job", "metadata": {"namespace": "ml", "name": "train-job"}}) is True
    name, _, kwargs = k.batch.calls[0]
    assert name == "patch_namespaced_job" and kwargs["_content_type"] == "application/merge-patch+json"


async def test_a_refused_write_raises_with_the_servers_reason() -> None:
    k = kube(Raw(422, b'{"kind":"Status","message":"spec.parallelism: Invalid value: -1"}'))
    with pytest.raises(ApiException) as raised:
        await k.patch_job("ml", "train-job", {"spec": {"parallelism": -1}})
    assert raised.value.status == 422 and "spec.parallelism: Invalid value" in str(raised.value.reason)


async def test_a_job_gone_before_its_delete_is_not_an_error_but_other_failures_are() -> None:
    await kube(Raw(404, b'{"reason":"NotFound"}')).delete_job("ml", "gone")
    with pytest.raises(ApiException):
        await kube(Raw(500, b"etcd unavailable")).delete_job("ml", "train-job")


async def test_a_read_still_decodes_and_rejects_an_answer_that_is_not_an_object() -> None:
    assert await kube(Raw(200, b'{"metadata":{"name":"train-job"}}')).get_job("ml", "train-job") == {
        "metadata": {"name": "train-job"}
    }
    with pytest.raises(ValueError, match="something other than an object"):
        await kube(Raw(200, b"[1, 2]")).get_job("ml", "train-job")


async def test_a_create_of_an_object_that_exists_is_adopted_and_other_kinds_are_refused() -> None:
    manifest = {"kind": "Service", "metadata": {"namespace": "ml", "name": "train-job"}}
    assert await kube(Raw(409, b'{"reason":"AlreadyExists"}')).create(manifest) is False
    with pytest.raises(ValueError, match="cannot create a Secret"):
        await kube(Raw(201, b"{}")).create({**manifest, "kind": "Secret"})


class HeldServer:
    """An API server on localhost that holds every Job patch until released and answers Lease reads
    at once; it counts the patches in flight."""

    def __init__(self) -> None:
        self.release, self.arrived = asyncio.Event(), asyncio.Event()
        self.in_flight = self.most = 0

    async def patch(self, request: web.Request) -> web.Response:
        await request.read()
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.arrived.set()
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return web.json_response({"kind": "Job"})

    async def lease(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "metadata": {"resourceVersion": "7"},
                "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15},
            }
        )

    async def reached(self, n: int) -> None:
        while self.in_flight < n:
            self.arrived.clear()
            await self.arrived.wait()


@contextlib.asynccontextmanager
async def held() -> AsyncIterator[tuple[HeldServer, str]]:
    """Served on the test's own event loop (the session's fixture loop would not run it)."""
    server = HeldServer()
    app = web.Application()
    app.router.add_route("PATCH", "/apis/batch/v1/namespaces/{ns}/jobs/{name}", server.patch)
    app.router.add_route("GET", "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}", server.lease)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.release.set()
        await runner.cleanup()


def api_client(host: str, connections: int) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = host
    cfg.connection_pool_maxsize = connections
    api = client.ApiClient(cfg)
    direct_session(api)  # as the operator's: no proxy from the environment
    return api


async def test_no_more_requests_than_slots_are_in_flight_and_all_of_them_are_sent() -> None:
    # A zone wake's thousand Job patches wait in Kube, so the client's other connections stay free.
    async with held() as (server, host):
        api = api_client(host, connections=8)
        try:
            k = Kube(api, slots=3)
            suspend = {"spec": {"suspend": True}}
            patches = [asyncio.create_task(k.patch_job("ml", f"job-{i}", suspend)) for i in range(20)]
            await asyncio.wait_for(server.reached(3), timeout=10)
            await asyncio.sleep(0.2)  # the connections left free are not used by the waiting patches
            assert server.in_flight == 3
            server.release.set()
            await asyncio.wait_for(asyncio.gather(*patches), timeout=10)
            assert server.most == 3
        finally:
            await api.close()


async def test_the_leader_election_gets_a_connection_while_a_wake_fills_kubes_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As shipped, Kube leaves RESERVED_CONNECTIONS of the client's connections free; with as many
    # slots as connections (the baseline) a renewal waits behind the wake's patches.
    monkeypatch.setattr(credentials, "API_CONNECTIONS", 6)
    for slots, renewal_waits in ((None, False), (6, True)):
        async with held() as (server, host):
            api = api_client(host, connections=credentials.API_CONNECTIONS)
            try:
                k = Kube(api, slots=slots)
                patches = [asyncio.create_task(k.patch_job("ml", f"job-{i}", {})) for i in range(30)]
                await asyncio.wait_for(server.reached(slots or credentials.request_slots()), timeout=10)
                read = asyncio.create_task(KubeLeaseAPI(api, "gridwise", "gridwise-operator").get())
                done, _ = await asyncio.wait({read}, timeout=1.0)
                assert (read not in done) is renewal_waits, f"slots={slots}"
                server.release.set()
                await asyncio.wait_for(asyncio.gather(*patches), timeout=10)
                found = await asyncio.wait_for(read, timeout=10)
                assert found is not None and found[1] == "7"
            finally:
                await api.close()


def test_the_slots_leave_the_reserve_free_and_never_fall_below_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert credentials.request_slots() == credentials.API_CONNECTIONS - credentials.RESERVED_CONNECTIONS > 0
    monkeypatch.setattr(credentials, "API_CONNECTIONS", 2)
    assert credentials.request_slots() == 1


async def test_a_freed_slot_goes_to_a_job_change_before_the_status_writes_waiting() -> None:
    """A mass pause's held status writes are let go together; a Job patch decided then goes first."""
    slots, order = Slots(1), []

    async def request(name: str, last: bool) -> None:
        async with slots.take(last=last):
            order.append(name)
            await asyncio.sleep(0.01)

    first = asyncio.create_task(request("status-0", True))
    await asyncio.sleep(0)
    writes = [asyncio.create_task(request(f"status-{i}", True)) for i in (1, 2, 3)]
    gone = asyncio.create_task(request("cancelled", False))
    await asyncio.sleep(0)
    patch = asyncio.create_task(request("patch", False))
    await asyncio.sleep(0)
    gone.cancel()  # a waiter that gives up takes no slot with it
    await asyncio.wait_for(asyncio.gather(first, patch, *writes), timeout=2.0)
    assert order == ["status-0", "patch", "status-1", "status-2", "status-3"], order
    async with slots.take():  # and every slot came back
        pass
    assert slots._free == 1
