"""The few Kubernetes API calls the operator makes, as plain dicts.

Responses are read as raw JSON rather than client model objects: cheaper at hundreds of
jobs, and the dicts are what the pure builders and tests already speak.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

MERGE_PATCH = "application/merge-patch+json"


async def _checked(resp: Any) -> bytes:
    """The body of a raw response; raises ApiException for non-2xx (raw responses are not checked)."""
    body: bytes = await resp.read()
    if not 200 <= resp.status <= 299:
        raise ApiException(status=resp.status, reason=body.decode(errors="replace")[:500])
    return body


async def _json(resp: Any) -> dict[str, Any]:
    """The body of a raw response as an object; raises ApiException for non-2xx."""
    data = json.loads(await _checked(resp))
    if not isinstance(data, dict):
        raise ValueError("Kubernetes API answered with something other than an object")
    return data


class Kube:
    """Async access to Jobs, Services, Pods and Secrets for the controller."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # Typed as Any: we pass and read raw JSON dicts, not the client's model classes.
        self.batch: Any = client.BatchV1Api(api)
        self.core: Any = client.CoreV1Api(api)

    async def close(self) -> None:
        await self.api.close()

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await _json(await self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """Creates a Job or Service; None when it already exists (a restart adopts, never duplicates)."""
        ns = manifest["metadata"]["namespace"]
        try:
            if manifest["kind"] == "Job":
                resp = await self.batch.create_namespaced_job(ns, manifest, _preload_content=False)
            elif manifest["kind"] == "Service":
                resp = await self.core.create_namespaced_service(ns, manifest, _preload_content=False)
            else:
                raise ValueError(f"cannot create a {manifest['kind']}")
            return await _json(resp)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    async def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patches a Job. The answer (the whole Job) is not decoded: nothing reads it, and in a
        zone wake a thousand of them were decoded only to be dropped."""
        resp = await self.batch.patch_namespaced_job(
            name, namespace, patch, _content_type=MERGE_PATCH, _preload_content=False
        )
        await _checked(resp)

    async def delete_job(self, namespace: str, name: str) -> None:
        """Deletes a Job (its pods go with it, in the background); a Job already gone is fine."""
        try:
            resp = await self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background", _preload_content=False
            )
            await _checked(resp)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Job's pods, every phase: the accounting tells Pending, Running and terminating apart."""
        resp = await self.core.list_namespaced_pod(
            namespace, label_selector=f"job-name={job}", _preload_content=False
        )
        items = (await _json(resp)).get("items", [])
        return [p for p in items if isinstance(p, dict)]

    async def get_custom(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """A custom resource (e.g. a CarbonAwareJob) as a dict; None when it does not exist."""
        api: Any = client.CustomObjectsApi(self.api)
        try:
            resp = await api.get_namespaced_custom_object(
                group, version, namespace, plural, name, _preload_content=False
            )
            return await _json(resp)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patches a custom resource's status subresource (None values delete fields).

        The answer is not decoded, as for `patch_job`."""
        api: Any = client.CustomObjectsApi(self.api)
        resp = await api.patch_namespaced_custom_object_status(
            group,
            version,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
        await _checked(resp)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's keys, decoded; the values never leave the carbon provider that needs them."""
        import base64

        resp = await self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        data = (await _json(resp)).get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
