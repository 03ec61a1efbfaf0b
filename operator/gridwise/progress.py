"""Reads real progress and energy from the trainers' /metrics endpoints.

The deadline guard re-plans from what the trainer reports. A pod that does not answer
(starting, paused, or a fake kwok pod) is skipped; when none answers, the caller falls
back to its own estimate and says so in status (progressSource: estimate).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

PROGRESS_METRIC = "gridwise_trainer_progress_ratio"
ENERGY_METRIC = "gridwise_trainer_gpu_energy_joules"  # the parser drops the _total suffix of counters
THROUGHPUT_METRIC = "gridwise_trainer_throughput_samples_per_second"


@dataclass(frozen=True)
class TrainerSample:
    progress: float  # 0..1, the furthest any worker reports (rank 0 owns the truth)
    energy_joules: float  # summed over workers and GPUs: cumulative since each trainer started
    workers: int
    # world size -> global samples/s the trainer measured at that size (rank 0 reports the group's rate)
    throughput: Mapping[int, float] = field(default_factory=dict)


def parse_throughput(text: str) -> dict[int, float]:
    """world_size -> samples/s from one trainer's gridwise_trainer_throughput_samples_per_second."""
    out: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != THROUGHPUT_METRIC:
                continue
            try:
                size = int(sample.labels.get("world_size", ""))
            except ValueError:
                continue
            value = float(sample.value)
            if size >= 1 and math.isfinite(value) and value > 0:
                out[size] = max(out.get(size, 0.0), value)
    return out


def parse_metrics(text: str) -> tuple[float | None, float]:
    """Progress ratio and total GPU joules from one trainer's exposition text."""
    progress: float | None = None
    energy = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == PROGRESS_METRIC:
                progress = max(progress or 0.0, float(sample.value))
            elif sample.name == ENERGY_METRIC + "_total":
                energy += float(sample.value)
    if progress is not None and not 0.0 <= progress <= 1.0:
        raise ValueError(f"{PROGRESS_METRIC}={progress} is outside 0..1")
    return progress, energy


def throughput_table(
    measured: Mapping[int, float], max_replicas: int, scaling_efficiency: float
) -> dict[int, float] | None:
    """The planner's `throughput_table` (1 replica = 1.0) from measured rates, or None until measured.

    Measured sizes are used as measured. Sizes not yet measured come from the manifest's curve
    n * scaling_efficiency ** log2(n), anchored so the smallest measured size keeps its measured
    value; the 1-replica base is the measurement at 1 when there is one, else implied by that anchor.
    """
    known = {int(n): float(r) for n, r in measured.items() if 1 <= int(n) <= max_replicas and r > 0}
    if not known or max_replicas < 1:
        return None

    def curve(n: int) -> float:
        return float(n * scaling_efficiency ** math.log2(n))

    smallest = min(known)
    base = known[1] if 1 in known else known[smallest] / curve(smallest)
    return {n: (known[n] / base if n in known else curve(n)) for n in range(1, max_replicas + 1)}


async def _scrape_one(
    client: httpx.AsyncClient, url: str
) -> tuple[float | None, float, dict[int, float]] | None:
    try:
        resp = await client.get(url)
        resp.raise_for_status()
        progress, energy = parse_metrics(resp.text)
        return progress, energy, parse_throughput(resp.text)
    except (httpx.ConnectTimeout, httpx.ReadTimeout):
        raise  # the pod's own silence (not a full pool): the caller may leave it alone a while
    except (httpx.HTTPError, ValueError):
        return None


SCRAPE_SLOTS = 32  # scrapes in flight at once, across all jobs (see `scrape`)
SCRAPE_RESULTS = ("answered", "no_answer", "timed_out", "skipped")  # per pod, for `scrape`'s `counted`


def scrape_client(timeout_s: float = 1.0) -> httpx.AsyncClient:
    """One client for every scrape: building one per scrape (its TLS context) cost most of the CPU.

    Pod addresses are never reached through an HTTP proxy from the environment (`trust_env=False`).
    """
    return httpx.AsyncClient(
        timeout=timeout_s, limits=httpx.Limits(max_connections=SCRAPE_SLOTS), trust_env=False
    )


class SilentPods:
    """Which pods not to ask now: a timed-out one for `hold_s`, a refusing one while a wake is busy.

    A timeout costs the whole scrape timeout; a refused connection (a trainer still starting) is
    cheap and is tried again next tick, so its first progress is seen at once. When a zone wakes a
    thousand jobs whose pods never answer, those timeouts would otherwise hold every decision. In
    such a wake (`busy`) even a cheap refusal is not cheap a thousand times over on two cores, and
    the decision does not need a trainer that did not answer last time: it is asked the next tick.
    """

    def __init__(self, hold_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._hold_s, self._clock = hold_s, clock
        self._until: dict[str, float] = {}
        self._unanswered: dict[str, float] = {}  # ip -> when its last scrape got no usable answer

    def silent(self, ip: str, busy: bool = False) -> bool:
        if busy and ip in self._unanswered:
            return True
        until = self._until.get(ip)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[ip]
            return False
        return True

    def timed_out(self, ip: str) -> None:
        self._until[ip] = self._clock() + self._hold_s
        self.unanswered(ip)
        if len(self._until) > MAX_REMEMBERED:  # pods come and go: drop the expired ones now and then
            now = self._clock()
            self._until = {k: v for k, v in self._until.items() if v > now}

    def unanswered(self, ip: str) -> None:
        now = self._clock()
        self._unanswered[ip] = now
        if len(self._unanswered) > MAX_REMEMBERED:  # keep the most recent half: old pods are gone
            recent = sorted(self._unanswered.items(), key=lambda kv: kv[1])[-MAX_REMEMBERED // 2 :]
            self._unanswered = dict(recent)

    def answered(self, ip: str) -> None:
        self._unanswered.pop(ip, None)


MAX_REMEMBERED = 65_536  # pod addresses each memory of SilentPods keeps at most


async def scrape(
    client: httpx.AsyncClient,
    pod_ips: Sequence[str],
    port: int,
    silent: SilentPods | None = None,
    slots: asyncio.Semaphore | None = None,
    busy: bool = False,
    counted: Callable[[str, int], None] | None = None,
) -> TrainerSample | None:
    """Scrapes every worker at once; None when no worker gave a usable answer.

    `busy` (a zone wake's burst of ticks) skips the pods that gave no usable answer last time.
    `counted(result, n)` hears how many pods were answered, no_answer, timed_out or skipped.

    `slots` bounds the scrapes in flight across all jobs: httpx's pool matches every queued request
    against every connection, so a zone wake's thousand scrapes queued at once cost 40% of the
    operator's CPU in that matching alone (py-spy, 1,000 jobs) and held back every Job patch.
    """
    count = counted or (lambda result, n: None)
    if silent is not None:
        asked = [ip for ip in pod_ips if not silent.silent(ip, busy)]
        if len(asked) < len(pod_ips):
            count("skipped", len(pod_ips) - len(asked))
        pod_ips = asked
    if not pod_ips:
        return None

    async def one(ip: str) -> tuple[float | None, float, dict[int, float]] | None:
        try:
            if slots is None:
                result = await _scrape_one(client, f"http://{ip}:{port}/metrics")
            else:
                async with slots:
                    result = await _scrape_one(client, f"http://{ip}:{port}/metrics")
        except (httpx.ConnectTimeout, httpx.ReadTimeout):
            count("timed_out", 1)
            if silent is not None:
                silent.timed_out(ip)
            return None
        count("no_answer" if result is None else "answered", 1)
        if silent is not None:
            (silent.unanswered if result is None else silent.answered)(ip)
        return result

    results = await asyncio.gather(*(one(ip) for ip in pod_ips))
    good = [r for r in results if r is not None and r[0] is not None]
    if not good:
        return None
    rates: dict[int, float] = {}
    for r in good:
        for n, v in r[2].items():
            rates[n] = max(rates.get(n, 0.0), v)
    return TrainerSample(
        progress=max(float(r[0]) for r in good if r[0] is not None),
        energy_joules=sum(r[1] for r in good),
        workers=len(good),
        throughput=rates,
    )
