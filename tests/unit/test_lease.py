"""Leader election against a fake clock and an in-memory Lease API with injected faults.

The fake API keeps one record with a resourceVersion and answers 409 on stale writes, as the API
server does; faults (refused connections, 5xx, 403, hangs) are scheduled on the fake clock. The
real API server is exercised by tests/faults/test_leader_election.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from gridwise.k8s.lease import (
    CannotLead,
    LeaderElector,
    LeaseConflict,
    LeaseDenied,
    LeaseRecord,
    LeaseTiming,
)

T = LeaseTiming()  # 15 s lease, 10 s renew deadline, 2 s retry period


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, stop: asyncio.Event, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Outage:
    start: float
    end: float
    error: Callable[[], BaseException] | None  # None: the request hangs


@dataclass
class FakeLeaseAPI:
    clock: FakeClock
    record: LeaseRecord | None = None
    version: int = 0
    outages: list[Outage] = field(default_factory=list)
    writes: list[LeaseRecord] = field(default_factory=list)
    before_write: Callable[[], None] | None = None  # to interleave a competing writer

    async def _fault(self) -> None:
        for o in self.outages:
            if o.start <= self.clock.now < o.end:
                if o.error is None:
                    await asyncio.Event().wait()  # never set: hangs until cancelled
                else:
                    raise o.error()

    async def get(self) -> tuple[LeaseRecord, str] | None:
        await self._fault()
        return None if self.record is None else (self.record, str(self.version))

    async def create(self, record: LeaseRecord) -> str:
        await self._fault()
        if self.record is not None:
            raise LeaseConflict("exists")
        return self._write(record)

    async def update(self, record: LeaseRecord, resource_version: str) -> str:
        await self._fault()
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        if resource_version != str(self.version):
            raise LeaseConflict("the object has been modified")
        return self._write(record)

    def _write(self, record: LeaseRecord) -> str:
        self.record, self.version = record, self.version + 1
        self.writes.append(record)
        return str(self.version)


def refused() -> BaseException:
    return ConnectionRefusedError(111, "Connection refused")


def disconnected() -> BaseException:
    """What aiohttp raises when the API server closes the connection mid-request (not an OSError)."""
    return aiohttp.ServerDisconnectedError()


def unavailable() -> BaseException:
    return ApiException(status=503, reason="Service Unavailable")


def forbidden() -> BaseException:
    return LeaseDenied(403, 'leases.coordination.k8s.io "gridwise-operator" is forbidden')


def elector(api: FakeLeaseAPI, identity: str, wall_offset: timedelta = timedelta(0)) -> LeaderElector:
    return LeaderElector(
        api,
        identity,
        timing=T,
        clock=api.clock,
        wall=lambda: datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=api.clock.now) + wall_offset,
        sleep=api.clock.sleep,
    )


async def test_first_replica_creates_the_lease_and_leads() -> None:
    api = FakeLeaseAPI(FakeClock())
    a = elector(api, "a")
    assert await a.try_acquire_or_renew()
    assert api.record is not None and api.record.holder == "a" and api.record.lease_duration_s == 15
    assert a.is_leader


async def test_a_standby_with_a_fast_clock_does_not_steal_a_live_lease() -> None:
    """The old code compared renewTime with the local clock: a clock 1 h ahead saw every Lease expired."""
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a = elector(api, "a", wall_offset=timedelta(hours=-1))  # the leader's clock is behind
    b = elector(api, "b", wall_offset=timedelta(hours=1))  # the standby's is ahead
    assert await a.try_acquire_or_renew()
    for _ in range(20):
        clock.now += T.retry_period_s
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    assert api.record is not None and api.record.holder == "a" and api.record.transitions == 0


async def test_a_standby_takes_over_only_after_a_lease_duration_of_its_own_time() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a, b = elector(api, "a"), elector(api, "b")
    assert await a.try_acquire_or_renew()
    clock.now += 1
    assert not await b.try_acquire_or_renew()  # b first sees the record now
    seen = clock.now
    # a dies. b's deadline is 15 s after *it* saw the record, whatever the record's timestamps say.
    clock.now = seen + T.lease_duration_s - 0.1
    assert not await b.try_acquire_or_renew()
    clock.now = seen + T.lease_duration_s + 0.1
    assert await b.try_acquire_or_renew()
    assert api.record is not None and api.record.holder == "b" and api.record.transitions == 1


async def test_each_renewal_resets_the_standbys_observed_time() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a, b = elector(api, "a"), elector(api, "b")
    assert await a.try_acquire_or_renew()
    for _ in range(10):  # 10 x 10 s = 100 s, far past one lease duration, with a renewal in between
        clock.now += 10
        assert await a.try_acquire_or_renew()
        clock.now += 0.5
        assert not await b.try_acquire_or_renew()


async def test_only_one_of_two_racing_candidates_wins() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock, record=LeaseRecord(None, 15))
    a = elector(api, "a")

    def b_writes_first() -> None:
        api._write(LeaseRecord("b", 15, "x", "x", 1))

    api.before_write = b_writes_first
    with pytest.raises(LeaseConflict):
        await a.try_acquire_or_renew()
    assert api.record is not None and api.record.holder == "b"
    assert not await a._attempt(1.0)  # a conflict is a lost race, not an error


async def test_a_released_lease_is_taken_at_once() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a, b = elector(api, "a"), elector(api, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.release()
    assert api.record is not None and api.record.holder is None
    clock.now += 0.1
    assert await b.try_acquire_or_renew()
    assert not await a.release(), "only the holder releases"


async def test_the_leader_rides_out_transient_errors_within_its_renew_deadline() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a = elector(api, "a")
    assert await a.try_acquire_or_renew()
    t0 = clock.now
    # 8 s of refused connections and 503s, then the API server answers again.
    api.outages = [Outage(t0, t0 + 4, refused), Outage(t0 + 4, t0 + 8, unavailable)]
    stop = asyncio.Event()
    task = asyncio.create_task(a.renew(stop))
    while clock.now < t0 + 60:
        await asyncio.sleep(0)
        assert not task.done(), task.result()
    stop.set()
    assert await task == "stopped"
    assert api.record is not None and api.record.holder == "a"


async def test_a_server_disconnect_is_ridden_out_by_the_leader_and_the_standby() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a = elector(api, "a")
    assert await a.try_acquire_or_renew()
    t0 = clock.now
    api.outages = [Outage(t0, t0 + 6, disconnected)]
    stop = asyncio.Event()
    task = asyncio.create_task(a.renew(stop))
    while clock.now < t0 + 30:
        await asyncio.sleep(0)
        assert not task.done(), task.result()
    stop.set()
    assert await task == "stopped" and a.is_leader
    # The hand-over fails on a disconnect without raising; the standby campaigns through it and
    # takes the Lease once it has seen it unrenewed for a lease duration.
    api.outages = [Outage(clock.now, clock.now + 6, disconnected)]
    assert not await a.release()
    b = elector(api, "b")
    assert await asyncio.wait_for(b.acquire(asyncio.Event()), timeout=5)
    assert api.record is not None and api.record.holder == "b"


async def test_the_leader_steps_down_at_its_renew_deadline_before_anyone_may_take_over() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a = elector(api, "a")
    assert await a.try_acquire_or_renew()
    last_write = clock.now
    api.outages = [Outage(clock.now, clock.now + 30, refused)]  # the API server down for 30 s
    reason = await asyncio.wait_for(a.renew(asyncio.Event()), timeout=5)
    assert reason == "renew deadline"
    # Stepped down at the renew deadline, a full retry period before a standby (who saw the last
    # write no earlier than it happened) could count the Lease as expired.
    assert T.renew_deadline_s <= clock.now - last_write <= T.lease_duration_s - T.retry_period_s


async def test_a_hanging_request_is_bounded_by_the_attempt_timeout() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a = LeaderElector(
        api,
        "a",
        timing=LeaseTiming(attempt_timeout_s=0.05),
        clock=clock,
        sleep=clock.sleep,
    )
    assert await a.try_acquire_or_renew()
    api.outages = [Outage(clock.now, clock.now + 1000, None)]  # every request hangs
    reason = await asyncio.wait_for(a.renew(asyncio.Event()), timeout=5)  # real seconds
    assert reason == "renew deadline"


async def test_the_leader_notices_at_once_when_another_replica_holds_the_lease() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a = elector(api, "a")
    assert await a.try_acquire_or_renew()
    api._write(LeaseRecord("b", 15, "x", "x", 1))  # e.g. a partition healed after b took over
    assert await asyncio.wait_for(a.renew(asyncio.Event()), timeout=5) == "taken"
    assert not a.is_leader


async def test_a_standby_rides_out_a_long_outage_then_campaigns() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock, record=LeaseRecord("gone", 15, "x", "x", 3))
    b = elector(api, "b")
    api.outages = [
        Outage(clock.now, clock.now + 100, refused),
        Outage(clock.now + 100, clock.now + 200, unavailable),
    ]
    leads = await asyncio.wait_for(b.acquire(asyncio.Event()), timeout=5)
    assert leads and api.record is not None and api.record.holder == "b"
    assert api.record.transitions == 4
    assert clock.now >= 200 + T.lease_duration_s  # it waited a full lease after first seeing the record


async def test_the_old_leader_takes_its_own_lease_back_at_once_after_an_outage() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a = elector(api, "a")
    assert await a.try_acquire_or_renew()
    api.outages = [Outage(clock.now, clock.now + 30, refused)]
    assert await a.renew(asyncio.Event()) == "renew deadline"
    start = clock.now
    assert await a.acquire(asyncio.Event())
    assert clock.now - start <= 30  # no extra lease duration of waiting: the record names it
    assert api.record is not None and api.record.holder == "a" and api.record.transitions == 0


async def test_a_brief_denial_is_retried_but_a_persistent_one_is_fatal() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock)
    a = elector(api, "a")
    api.outages = [Outage(clock.now, clock.now + 6, forbidden)]  # RBAC still propagating
    assert await asyncio.wait_for(a.acquire(asyncio.Event()), timeout=5)
    b = elector(api, "b")
    api.outages = [Outage(clock.now, clock.now + 1e9, forbidden)]
    start = clock.now
    with pytest.raises(CannotLead, match="check the operator's RBAC"):
        await asyncio.wait_for(b.acquire(asyncio.Event()), timeout=5)
    assert T.lease_duration_s < clock.now - start <= T.lease_duration_s + 2 * T.retry_period_s


async def test_stop_ends_the_campaign() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock, record=LeaseRecord("a", 15, "x", "x"))
    b = elector(api, "b")
    stop = asyncio.Event()
    task = asyncio.create_task(b.acquire(stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) is False


def test_errors_are_logged_once_not_every_retry(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock, record=LeaseRecord("a", 15, "x", "x"))
    api.outages = [Outage(clock.now, clock.now + 60, refused)]
    b = elector(api, "b")

    async def campaign() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(b.acquire(stop))
        while clock.now < 1000 + 59:  # noqa: ASYNC110 - the fake clock advances as the task sleeps
            await asyncio.sleep(0)
        stop.set()
        await task

    asyncio.run(campaign())
    refusals = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert len(refusals) == 1


@pytest.mark.parametrize(("lease", "renew", "retry"), [(10, 10, 2), (15, 16, 2), (15, 10, 10), (15, 10, 0)])
def test_timing_is_validated(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline > retry period"):
        LeaseTiming(lease_duration_s=lease, renew_deadline_s=renew, retry_period_s=retry)


def test_record_round_trips_through_the_lease_spec() -> None:
    rec = LeaseRecord("a", 15, "2030-01-01T00:00:00.000000Z", "2030-01-01T00:00:02.000000Z", 2)
    assert LeaseRecord.from_spec(rec.to_spec(), 99) == rec
    assert LeaseRecord.from_spec({}, 15) == LeaseRecord(None, 15)


async def test_a_replica_reports_standby_only_after_an_attempt_it_did_not_win() -> None:
    clock = FakeClock()
    api = FakeLeaseAPI(clock, record=LeaseRecord("a", 15, "x", "x"))
    b = elector(api, "b")
    calls: list[float] = []
    b.on_standby = lambda: calls.append(clock.now)
    stop = asyncio.Event()
    task = asyncio.create_task(b.acquire(stop))
    while not calls:  # noqa: ASYNC110 - the fake clock advances as the task sleeps
        await asyncio.sleep(0)
    assert calls == [1000.0]  # right after the first attempt, before any waiting
    stop.set()
    await task
    winner = elector(FakeLeaseAPI(clock), "c")
    winner.on_standby = lambda: calls.append(-1)
    assert await winner.acquire(asyncio.Event())
    assert -1 not in calls
