"""The few Kubernetes API calls the operator makes, as plain dicts.

Responses are read as raw JSON rather than client model objects: cheaper at hundreds of
jobs, and the dicts are what the pure builders and tests already speak.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gridwise.k8s import credentials

MERGE_PATCH = "application/merge-patch+json"


async def _checked(resp: Any) -> bytes:
    """The body of a raw response; raises ApiException for non-2xx (raw responses are not checked)."""
    body: bytes = await resp.read()
    if not 200 <= resp.status <= 299:
        raise ApiException(status=resp.status, reason=body.decode(errors="replace")[:500])
    return body


def _object(body: bytes) -> dict[str, Any]:
    """An answer's JSON object; a JSON answer of any other shape is an error."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("Kubernetes API answered with something other than an object")
    return data


async def read_object(resp: Any) -> dict[str, Any]:
    """A raw response's JSON object (`_preload_content=False`), or its ApiException."""
    return _object(await _checked(resp))


class Slots:
    """At most `n` requests in flight; a freed slot goes to a waiting Job change or read first.

    Status writes wait last: when a mass pause's held status writes are let go together (drains.py),
    a thousand of them queue at once, and a Job patch decided then (another zone's change, a
    resume) would otherwise wait behind all of them (12.6 s in a 1000-job scale run).
    """

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    @contextlib.asynccontextmanager
    async def take(self, *, last: bool = False) -> AsyncIterator[None]:
        if self._free > 0 and not (self._waiting[0] or self._waiting[1]):
            self._free -= 1
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting[int(last)].append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._give()  # the slot was handed over as the waiter was cancelled
                else:
                    self._waiting[int(last)].remove(turn)
                raise
        try:
            yield
        finally:
            self._give()

    def _give(self) -> None:
        for queue in self._waiting:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._free += 1


class Kube:
    """Async access to Jobs, Services, Pods and Secrets for the controller.

    At most `slots` requests are in flight at once; the others wait here. There are fewer slots than
    the client has connections because the leader election shares the client: a zone wake's
    thousand Job patches and status writes would otherwise queue ahead of a Lease renewal for
    seconds, and a leader that misses its 10 s renew deadline stops handling every job. (Waiting
    here or in the client's pool holds the same memory: `benchmarks/request_queue_bench.py`.)
    """

    def __init__(self, api: client.ApiClient, *, slots: int | None = None) -> None:
        self.api = api
        # Typed as Any: we pass and read raw JSON dicts, not the client's model classes.
        self.batch: Any = client.BatchV1Api(api)
        self.core: Any = client.CoreV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self._slots = Slots(credentials.request_slots() if slots is None else slots)

    async def close(self) -> None:
        await self.api.close()

    async def _send(
        self, call: Callable[..., Awaitable[Any]], *args: Any, last: bool = False, **kwargs: Any
    ) -> bytes:
        """One request and its answer's bytes, in one of the slots (the connection is busy until read).

        `last`: a status write, which waits until no Job change or read waits (`Slots`)."""
        async with self._slots.take(last=last):
            return await _checked(await call(*args, _preload_content=False, **kwargs))

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _object(await self._send(self.batch.read_namespaced_job, name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Creates a Job or Service; False when it already exists (a restart adopts, never duplicates).

        The created object the server sends back is not decoded: nothing reads it."""
        ns = manifest["metadata"]["namespace"]
        if manifest["kind"] == "Job":
            call = self.batch.create_namespaced_job
        elif manifest["kind"] == "Service":
            call = self.core.create_namespaced_service
        else:
            raise ValueError(f"cannot create a {manifest['kind']}")
        try:
            await self._send(call, ns, manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patches a Job. The answer (the whole Job) is not decoded: nothing reads it, and in a
        zone wake a thousand of them were decoded only to be dropped."""
        await self._send(self.batch.patch_namespaced_job, name, namespace, patch, _content_type=MERGE_PATCH)

    async def delete_job(self, namespace: str, name: str) -> None:
        """Deletes a Job (its pods go with it, in the background); a Job already gone is fine."""
        try:
            await self._send(
                self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Job's pods, every phase: the accounting tells Pending, Running and terminating apart."""
        body = await self._send(self.core.list_namespaced_pod, namespace, label_selector=f"job-name={job}")
        items = _object(body).get("items", [])
        return [p for p in items if isinstance(p, dict)]

    async def get_custom(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """A custom resource (e.g. a CarbonAwareJob) as a dict; None when it does not exist."""
        try:
            body = await self._send(
                self.custom.get_namespaced_custom_object, group, version, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _object(body)

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patches a custom resource's status subresource (None values delete fields).

        The answer is not decoded, as for `patch_job`."""
        await self._send(
            self.custom.patch_namespaced_custom_object_status,
            group,
            version,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            _content_type=MERGE_PATCH,
            last=True,
        )

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's keys, decoded; the values never leave the carbon provider that needs them."""
        import base64

        data = _object(await self._send(self.core.read_namespaced_secret, name, namespace)).get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
