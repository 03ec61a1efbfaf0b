"""The write-light status rule: write what readers use when it changes, else rarely, never for the clock."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gridwise.carbon import IntensityPoint, SignalReading
from gridwise.clock import ManualClock
from gridwise.k8s.handlers import slim_job
from gridwise.k8s.wakeups import Wakeups, fingerprint, wall_seconds_until, zone_key
from gridwise.status_writes import WritePolicy, material_change, status_patch, write_reason

NOW = datetime(2030, 1, 6, 12, tzinfo=UTC)
POLICY = WritePolicy()


def status(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "phase": "Running",
        "replicas": 2,
        "desiredReplicas": 2,
        "observedGeneration": 1,
        "progress": 0.40,
        "energyJoules": 1000.0,
        "emissionsGrams": 50.0,
        "avoidedEmissionsGrams": 10.0,
        "carbonIntensity": {"gramsPerKWh": 200.0, "stale": False, "provider": "p", "zone": "z"},
        "conditions": [{"type": "CarbonSignalStale", "status": "False", "reason": "Fresh", "message": "ok"}],
        "nextChange": {"time": "2030-01-06T14:00:00Z", "replicas": 0},
        "accounting": {"lastTime": "2030-01-06T12:00:00Z", "workDoneGPUHours": 4.0},
    }
    base.update(over)
    return base


def test_first_status_is_always_written() -> None:
    assert material_change(None, status(), POLICY) == "first status"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"phase": "Paused"}, "phase"),
        ({"replicas": 0}, "replicas"),
        ({"observedGeneration": 2}, "observedGeneration"),
        ({"pauseTimes": ["2030-01-06T12:00:00Z"]}, "pauseTimes"),
        ({"conditions": [{"type": "CarbonSignalStale", "status": "True", "reason": "Stale"}]}, "conditions"),
        ({"nextChange": None}, "nextChange"),
        ({"nextChange": {"time": "2030-01-06T15:00:00Z", "replicas": 0}}, "nextChange"),
        ({"progress": 0.41}, "progress"),
        ({"energyJoules": 1000.0 + 400_000}, "energyJoules"),
        ({"avoidedEmissionsGrams": 70.0}, "avoidedEmissionsGrams"),
        ({"carbonIntensity": {"gramsPerKWh": 220.0, "stale": False, "provider": "p", "zone": "z"}}, None),
        ({"carbonIntensity": {"gramsPerKWh": 200.0, "stale": True, "provider": "p", "zone": "z"}}, None),
    ],
)
def test_what_readers_use_is_written_at_once(change: dict[str, Any], reason: str | None) -> None:
    assert material_change(status(), status(**change), POLICY) == (reason or "carbonIntensity")


def test_small_moves_and_the_clock_wait() -> None:
    moved = status(
        progress=0.405,
        energyJoules=1010.0,
        emissionsGrams=50.5,
        carbonIntensity={"gramsPerKWh": 203.0, "stale": False, "provider": "p", "zone": "z"},
        conditions=[
            {"type": "CarbonSignalStale", "status": "False", "reason": "Fresh", "message": "new text"}
        ],
        accounting={"lastTime": "2030-01-06T12:01:00Z", "workDoneGPUHours": 4.05},
    )
    assert material_change(status(), moved, POLICY) is None
    assert write_reason(status(), NOW, moved, NOW + timedelta(minutes=1), POLICY) is None
    # ...but they are written once the interval runs out, so a restart loses at most that much.
    assert write_reason(status(), NOW, moved, NOW + timedelta(minutes=5), POLICY) == "interval"


@pytest.mark.parametrize(
    ("key", "small", "large"),
    [
        ("energyJoules", 350_000.0, 370_000.0),  # the floor is 0.1 kWh (360 kJ)
        ("emissionsGrams", 45.0, 55.0),  # and 50 g
        ("avoidedEmissionsGrams", 45.0, 55.0),
    ],
)
def test_a_total_near_zero_waits_for_an_absolute_floor(key: str, small: float, large: float) -> None:
    # A young job's totals (or a paused job's avoided grams) move by far more than 5% of themselves
    # every tick; only a move a reader would notice is worth a write on its own.
    written = status()
    assert material_change(written, status(**{key: float(written[key]) + small}), POLICY) is None
    assert material_change(written, status(**{key: float(written[key]) + large}), POLICY) == key
    big = status(**{key: 1e9})  # a large total still needs 5% of itself, not just the floor
    assert material_change(big, status(**{key: 1e9 * 1.04}), POLICY) is None
    assert material_change(big, status(**{key: 1e9 * 1.06}), POLICY) == key


async def test_a_burst_of_watch_events_wakes_a_job_once() -> None:
    wakeups = Wakeups(ManualClock(NOW), FakeHub({}), coalesce_s=0.05, quiet_s=0.05)  # type: ignore[arg-type]
    event = wakeups.register(("ns", "j"), {"provider": "p", "zone": "z"})
    for _ in range(5):  # the Job, then each pod twice
        wakeups.wake_later(("ns", "j"))
    assert not event.is_set(), "not before the burst is over (kopf stores the index entry first)"
    await asyncio.sleep(0.1)
    assert event.is_set()
    event.clear()
    await asyncio.sleep(0.1)
    assert not event.is_set(), "one wake for the whole burst"
    wakeups.wake_later(("ns", "j"))
    await asyncio.sleep(0.1)
    assert event.is_set(), "a later event wakes it again"


def test_nothing_but_the_clock_is_never_rewritten() -> None:
    later = status(accounting={"lastTime": "2030-01-06T13:00:00Z", "workDoneGPUHours": 4.0})
    assert write_reason(status(), NOW, later, NOW + timedelta(hours=1), POLICY) is None


def test_the_patch_removes_fields_the_new_status_no_longer_has() -> None:
    new = {k: v for k, v in status(phase="Paused").items() if k != "nextChange"}
    patch = status_patch(status(), new)
    assert patch["nextChange"] is None and patch["phase"] == "Paused"


def test_the_patch_sends_only_what_changed() -> None:
    written = status(acceptedSpec='{"big": "spec"}')
    patch = status_patch(written, {**written, "phase": "Paused"})
    assert patch == {"phase": "Paused"}, "unchanged fields (the accepted spec) are not sent again"
    assert status_patch(None, written) == written  # nothing written yet: all of it


def test_index_keeps_only_what_a_decision_reads() -> None:
    job = {
        "metadata": {
            "name": "j",
            "namespace": "n",
            "uid": "u",
            "labels": {"kueue.x-k8s.io/queue-name": "q", "noise": "x"},
            "annotations": {"big": "x" * 10_000},
            "managedFields": [{"manager": "m"}],
            "ownerReferences": [{"uid": "o", "controller": True, "kind": "CarbonAwareJob", "name": "j"}],
        },
        "spec": {"suspend": True, "parallelism": 2, "template": {"spec": {"containers": [{}] * 5}}},
        "status": {
            "active": 2,
            "conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "m"}],
        },
    }
    slim = slim_job(job)
    assert slim["metadata"]["labels"] == {"kueue.x-k8s.io/queue-name": "q", "noise": "x"}
    assert slim["spec"] == {"suspend": True, "parallelism": 2}
    assert slim["status"]["active"] == 2
    assert slim["status"]["conditions"] == [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]
    assert slim["metadata"]["annotations"] == {} and "managedFields" not in slim["metadata"]
    assert len(repr(slim)) < len(repr(job)) / 10


def reading(value: float, *, stale: bool = False, start: datetime = NOW) -> SignalReading:
    point = IntensityPoint(start=start, end=start + timedelta(hours=1), grams_per_kwh=value)
    return SignalReading(
        zone="z", provider="p", signal_type="average", current=point, forecast=(), stale=stale,
        reason="ok", fetched_at=start,
    )  # fmt: skip


def test_fingerprint_changes_with_what_a_decision_reads() -> None:
    assert fingerprint(reading(100)) == fingerprint(reading(100))
    assert fingerprint(reading(100)) != fingerprint(reading(600))
    assert fingerprint(reading(100)) != fingerprint(reading(100, stale=True))
    assert fingerprint(reading(100)) != fingerprint(reading(100, start=NOW + timedelta(hours=1)))


def test_fingerprint_changes_with_the_error_band() -> None:
    """The forecast policy plans on the band too: a wider band may change a decision."""
    later = IntensityPoint(NOW + timedelta(hours=1), NOW + timedelta(hours=2), 100.0)
    base = dataclasses.replace(reading(100), forecast=(later,))
    assert fingerprint(dataclasses.replace(base, forecast_upper=(5.0,))) == fingerprint(
        dataclasses.replace(base, forecast_upper=(5.0,))
    )
    assert fingerprint(dataclasses.replace(base, forecast_upper=(5.0,))) != fingerprint(
        dataclasses.replace(base, forecast_upper=(40.0,))
    )


class FakeSignal:
    """A shared signal whose value the test sets; the hub interface the watcher reads."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.ttl_s = 5.0
        self.reads = 0

    async def read(self) -> SignalReading:
        self.reads += 1
        return reading(self.value)


class FakeHub:
    def __init__(self, signals: dict[str, tuple[dict[str, Any], FakeSignal]]) -> None:
        self.signals = signals

    def items(self) -> list[tuple[str, dict[str, Any], Any]]:
        return [(k, c, s) for k, (c, s) in self.signals.items()]


async def test_a_zone_change_wakes_every_job_in_that_zone_and_no_other() -> None:
    es, de = {"provider": "p", "zone": "ES"}, {"provider": "p", "zone": "DE"}
    sig_es, sig_de = FakeSignal(100), FakeSignal(300)
    clock = ManualClock(NOW)
    hub: Any = FakeHub({"es": (es, sig_es), "de": (de, sig_de)})
    wakeups = Wakeups(clock, hub, max_poll_s=0.01)
    events = {name: wakeups.register(("ns", name), es if name.startswith("es") else de) for name in
              ("es-1", "es-2", "de-1")}  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(wakeups.watch(stop))
    try:
        await asyncio.sleep(0.05)
        assert not any(e.is_set() for e in events.values()), "the first reading is not a change"
        sig_es.value = 600
        for _ in range(100):
            if events["es-1"].is_set():
                break
            await asyncio.sleep(0.01)
        assert events["es-1"].is_set() and events["es-2"].is_set()
        assert not events["de-1"].is_set()
        assert wakeups.zone_wakes == 1
    finally:
        stop.set()
        await task


def test_zone_key_and_wall_time() -> None:
    assert zone_key({"provider": "watttime", "zone": "CAISO_NORTH", "signalType": "marginal"}) == (
        "watttime", "CAISO_NORTH", "marginal",
    )  # fmt: skip
    clock = ManualClock(NOW)
    assert wall_seconds_until(clock, NOW + timedelta(seconds=30)) == 30
    assert wall_seconds_until(clock, NOW - timedelta(seconds=30)) == 0
