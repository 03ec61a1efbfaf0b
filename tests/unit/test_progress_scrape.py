"""Scraping trainers: a pod that times out is left alone a minute; a refused one is asked next tick,
except in a zone wake's burst, which asks only pods that answered last time."""

from __future__ import annotations

import asyncio
import sys

import httpx

from gridwise.progress import MAX_REMEMBERED, SilentPods, scrape, scrape_client

METRICS = "gridwise_trainer_progress_ratio 0.25\ngridwise_trainer_gpu_energy_joules_total 12.0\n"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def client(asked: list[str]) -> httpx.AsyncClient:
    """Pods as the network shows them: 10.0.0.1 answers, .2 never does (timeout), .3 refuses."""

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        asked.append(host)
        if host == "10.0.0.2":
            raise httpx.ConnectTimeout("timed out", request=request)
        if host == "10.0.0.3":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, text=METRICS)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_pod_that_times_out_is_not_asked_again_until_its_hold_ends() -> None:
    asked: list[str] = []
    clock = Clock()
    silent = SilentPods(hold_s=60.0, clock=clock)
    ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    async with client(asked) as c:
        sample = await scrape(c, ips, 9400, silent)
        assert sample is not None and sample.progress == 0.25 and sample.workers == 1
        assert sorted(asked) == ips
        asked.clear()
        clock.t += 30
        await scrape(c, ips, 9400, silent)
        # A trainer still starting refuses; it must be asked each tick, or its first progress is late.
        assert sorted(asked) == ["10.0.0.1", "10.0.0.3"], "the silent pod is skipped, the refusing one is not"
        asked.clear()
        clock.t += 31
        await scrape(c, ips, 9400, silent)
        assert sorted(asked) == ips, "after its hold the silent pod is asked again"


async def test_in_a_wake_only_pods_that_answered_last_time_are_asked() -> None:
    asked: list[str] = []
    clock = Clock()
    silent = SilentPods(hold_s=60.0, clock=clock)
    ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    async with client(asked) as c:
        await scrape(c, ips[:3], 9400, silent)  # .4 is new: it has not been asked yet
        asked.clear()
        clock.t += 120  # the timed-out pod's hold is over
        counts: dict[str, int] = {}
        sample = await scrape(
            c, ips, 9400, silent, busy=True, counted=lambda r, n: counts.__setitem__(r, counts.get(r, 0) + n)
        )
        assert sample is not None and sample.progress == 0.25, "the answering trainer is still measured"
        assert sorted(asked) == ["10.0.0.1", "10.0.0.4"], "the refusing and the silent pod wait"
        assert counts == {"skipped": 2, "answered": 2}, counts
        asked.clear()
        await scrape(c, ips, 9400, silent)
        assert sorted(asked) == ips, "outside a wake every pod is asked again"


async def test_without_a_memory_every_pod_is_asked_each_time() -> None:
    asked: list[str] = []
    async with client(asked) as c:
        for _ in range(2):
            await scrape(c, ["10.0.0.2"], 9400)
    assert asked == ["10.0.0.2", "10.0.0.2"]


def test_the_memory_of_silent_pods_stays_bounded() -> None:
    clock = Clock()
    silent = SilentPods(hold_s=1.0, clock=clock)
    for i in range(70_000):
        if i == 35_000:
            clock.t += 5  # the first half has expired by the time the map is trimmed
        silent.timed_out(f"ip-{i}")  # also remembered as unanswered
    assert len(silent._until) <= MAX_REMEMBERED and len(silent._unanswered) <= MAX_REMEMBERED
    assert silent.silent("ip-69999") and not silent.silent("ip-0")
    assert silent.silent("ip-69999", busy=True) and not silent.silent("ip-0", busy=True), "oldest forgotten"


async def test_scrapes_in_flight_are_bounded_across_jobs() -> None:
    """A zone wake scrapes every job's pods at once; no more than the slots may be in flight."""
    in_flight, peak = 0, 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, text=METRICS)

    slots = asyncio.Semaphore(3)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
        jobs = [scrape(c, [f"10.0.{j}.1", f"10.0.{j}.2"], 9400, None, slots) for j in range(10)]
        samples = await asyncio.gather(*jobs)
    assert all(s is not None and s.workers == 2 for s in samples)
    assert peak == 3


def test_pod_scrapes_never_go_through_a_proxy_from_the_environment() -> None:
    assert scrape_client().trust_env is False


class _CountingFinder:
    """A meta-path finder that only counts how often the import system searches for `name`."""

    def __init__(self, name: str) -> None:
        self.name, self.searches = name, 0

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == self.name:
            self.searches += 1
        return None


async def test_httpcore_finds_sniffio_once_not_on_every_pool_lock() -> None:
    # httpcore imports sniffio on every connection-pool lock; without it installed, every one of a
    # zone wake's thousand scrapes searched sys.path for it again (3% of the operator's CPU).
    from httpcore._synchronization import current_async_library

    finder = _CountingFinder("sniffio")
    sys.meta_path.insert(0, finder)
    try:
        for _ in range(50):
            assert current_async_library() == "asyncio"
    finally:
        sys.meta_path.remove(finder)
    assert finder.searches <= 1, f"sniffio was searched for {finder.searches} times: is it installed?"
