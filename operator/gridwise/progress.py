"""Reads real progress and energy from the trainers' /metrics endpoints.

The deadline guard re-plans from what the trainer reports. A pod that does not answer
(starting, paused, or a fake kwok pod) is skipped; when none answers, the caller falls
back to its own estimate and says so in status (progressSource: estimate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

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


async def _scrape_one(client: httpx.AsyncClient, url: str) -> tuple[float | None, float] | None:
    try:
        resp = await client.get(url)
        resp.raise_for_status()
        return parse_metrics(resp.text)
    except (httpx.HTTPError, ValueError):
        return None


async def scrape(pod_ips: Sequence[str], port: int, *, timeout_s: float = 1.0) -> TrainerSample | None:
    """Scrapes every worker at once; None when no worker gave a usable answer."""
    if not pod_ips:
        return None
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        results = await asyncio.gather(
            *(_scrape_one(client, f"http://{ip}:{port}/metrics") for ip in pod_ips)
        )
    good = [r for r in results if r is not None and r[0] is not None]
    if not good:
        return None
    return TrainerSample(
        progress=max(float(r[0]) for r in good if r[0] is not None),
        energy_joules=sum(r[1] for r in good),
        workers=len(good),
    )
