"""Credentials Secrets are read once per minute and once for many readers, not per job and tick."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from gridwise.k8s.secret_cache import MISS_TTL_S, TTL_S, SecretCache


class Reader:
    """The API server's Secret reads, counted; `answer` is what the next read gets."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str]] = []
        self.answer: dict[str, str] | ApiException = {"KEY": "v1"}
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, namespace: str, name: str) -> dict[str, str]:
        self.reads.append((namespace, name))
        await self.gate.wait()
        if isinstance(self.answer, ApiException):
            raise self.answer
        return dict(self.answer)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_thousand_readers_at_once_share_one_read_and_a_minute_of_ticks_reads_nothing() -> None:
    async def run() -> None:
        reader, clock = Reader(), Clock()
        cache = SecretCache(reader, clock=clock)
        reader.gate.clear()  # the read is in flight while the others ask
        waiting = [asyncio.ensure_future(cache.get("team-a", "keys")) for _ in range(1000)]
        await asyncio.sleep(0)
        reader.gate.set()
        assert all(v == {"KEY": "v1"} for v in await asyncio.gather(*waiting))
        assert reader.reads == [("team-a", "keys")], "a zone wake of a thousand jobs: one GET"
        clock.now += TTL_S - 1
        assert await cache.get("team-a", "keys") == {"KEY": "v1"}
        assert len(reader.reads) == 1
        # A rotated key is used within the TTL.
        reader.answer = {"KEY": "v2"}
        clock.now += 1
        assert await cache.get("team-a", "keys") == {"KEY": "v2"}
        assert len(reader.reads) == 2

    asyncio.run(run())


def test_namespaces_never_share_a_secret() -> None:
    async def run() -> None:
        reader = Reader()
        cache = SecretCache(reader)
        await cache.get("team-a", "keys")
        reader.answer = {"KEY": "b's own"}
        assert await cache.get("team-b", "keys") == {"KEY": "b's own"}
        assert await cache.get("team-a", "keys") == {"KEY": "v1"}

    asyncio.run(run())


@pytest.mark.parametrize("status", [403, 404])
def test_a_missing_or_forbidden_secret_is_remembered_briefly(status: int) -> None:
    async def run() -> None:
        reader, clock = Reader(), Clock()
        cache = SecretCache(reader, clock=clock)
        reader.answer = ApiException(status=status, reason="nope")
        for _ in range(3):
            with pytest.raises(ApiException) as raised:
                await cache.get("ns", "keys")
            assert raised.value.status == status
        assert len(reader.reads) == 1
        # Created (or granted) meanwhile: seen once the miss expires.
        reader.answer = {"KEY": "v1"}
        clock.now += MISS_TTL_S
        assert await cache.get("ns", "keys") == {"KEY": "v1"}
        assert len(reader.reads) == 2

    asyncio.run(run())


def test_other_failures_are_not_remembered() -> None:
    async def run() -> None:
        reader = Reader()
        cache = SecretCache(reader)
        reader.answer = ApiException(status=500, reason="etcd timeout")
        with pytest.raises(ApiException):
            await cache.get("ns", "keys")
        reader.answer = {"KEY": "v1"}
        assert await cache.get("ns", "keys") == {"KEY": "v1"}
        assert len(reader.reads) == 2

    asyncio.run(run())


def test_a_cancelled_reader_does_not_cancel_the_others_and_values_are_copies() -> None:
    async def run() -> None:
        reader = Reader()
        cache = SecretCache(reader)
        reader.gate.clear()
        first = asyncio.ensure_future(cache.get("ns", "keys"))
        second = asyncio.ensure_future(cache.get("ns", "keys"))
        await asyncio.sleep(0)
        first.cancel()  # its job was deleted mid-read
        reader.gate.set()
        values = await second
        assert values == {"KEY": "v1"} and first.cancelled()
        values["KEY"] = "changed by a caller"
        assert await cache.get("ns", "keys") == {"KEY": "v1"}
        assert len(reader.reads) == 1

    asyncio.run(run())


def test_expired_secrets_are_dropped() -> None:
    async def run() -> None:
        reader, clock = Reader(), Clock()
        cache = SecretCache(reader, clock=clock)
        for i in range(50):
            await cache.get("ns", f"old-{i}")
        clock.now += TTL_S
        await cache.get("ns", "new")
        assert len(cache._entries) == 1, "Secrets no job reads any more leave memory"

    asyncio.run(run())
