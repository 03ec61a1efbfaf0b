"""Draws intensity with each job's run windows and replica counts; matplotlib is imported only here."""

from __future__ import annotations

from pathlib import Path

from gridwise.simulate.engine import SimResult


def plot(result: SimResult, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace = result.trace
    starts = [t for job in result.jobs for t, _ in job.timeline]
    if not starts:
        raise ValueError("nothing ran: no plot to draw")
    first, last = min(starts), max(starts)
    begin, end = trace.index_of(first), trace.index_of(last) + 1
    times = [trace.time_at(i) for i in range(begin, end)]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(12, 6), height_ratios=[2, 1])
    top.step(times, trace.values[begin:end], where="post", color="black", linewidth=0.8)
    top.set_ylabel(f"gCO2/kWh ({trace.signal_type})")
    top.set_title(f"{trace.zone}: policy {result.policy}, forecast {result.forecast}")
    for index, job in enumerate(result.jobs):
        color = f"C{index % 10}"
        for t, replicas in job.timeline:
            if replicas:
                top.axvspan(
                    t,
                    t + (trace.step if len(job.timeline) < 2 else job.timeline[1][0] - job.timeline[0][0]),
                    color=color,
                    alpha=0.08,
                    linewidth=0,
                )
        bottom.step(
            [t for t, _ in job.timeline],
            [r for _, r in job.timeline],
            where="post",
            color=color,
            label=job.name,
        )
    bottom.set_ylabel("replicas")
    if len(result.jobs) <= 12:
        bottom.legend(fontsize="x-small", ncol=4)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
