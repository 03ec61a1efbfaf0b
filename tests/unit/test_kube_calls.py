"""The raw API calls: errors still raise with the server's reason; writes do not decode the answer."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from gridwise.k8s.kube import Kube


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
    k.batch = k.core = Api(answer)
    return k


async def test_a_write_succeeds_without_decoding_the_object_the_server_sends_back() -> None:
    # A patched Job comes back whole (template and managedFields); nothing reads it, so a thousand
    # pauses must not decode a thousand of them. A body that is not JSON proves it is not parsed.
    k = kube(Raw(200, b"not json: never parsed"))
    assert await k.patch_job("ml", "train-job", {"spec": {"suspend": True}}) is None
    await k.delete_job("ml", "train-job")
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
