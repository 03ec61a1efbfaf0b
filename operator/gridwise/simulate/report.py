"""Turns simulation results into the JSON object and the comparison table the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gridwise.simulate.engine import SimResult


def to_json(result: SimResult) -> dict[str, Any]:
    trace = result.trace
    return {
        "policy": result.policy,
        "forecast": result.forecast,
        "signal_type": trace.signal_type,
        "emission_factor": trace.emission_factor,
        "zone": trace.zone,
        "trace": trace.source,
        "emissions_g": round(result.emissions_g, 3),
        "energy_kwh": round(result.energy_kwh, 4),
        "jobs": len(result.jobs),
        "feasible_jobs": result.feasible_jobs,
        "deadlines_met": result.deadlines_met,
        "feasible_deadlines_met": result.feasible_deadlines_met,
        "pauses": result.pauses,
        "per_job": [
            {
                "name": job.name,
                "submit": job.submit.isoformat(),
                "deadline": job.deadline.isoformat(),
                "finish": None if job.finish is None else job.finish.isoformat(),
                "work_gpu_hours": job.work_gpu_hours,
                "feasible": job.feasible,
                "deadline_met": job.deadline_met,
                "emissions_g": round(job.emissions_g, 3),
                "energy_kwh": round(job.energy_kwh, 4),
                "pauses": job.pauses,
            }
            for job in result.jobs
        ],
    }


def savings(results: Sequence[SimResult]) -> dict[str, dict[str, float | None]]:
    """Per policy: saving vs agnostic (%) and share of the oracle's saving (%), None where undefined."""
    by_policy = {r.policy: r for r in results}
    base = by_policy.get("agnostic")
    oracle = by_policy.get("oracle")
    out: dict[str, dict[str, float | None]] = {}
    for result in results:
        saving = share = None
        if base is not None and base.emissions_g > 0:
            saving = 100 * (base.emissions_g - result.emissions_g) / base.emissions_g
            if oracle is not None and base.emissions_g - oracle.emissions_g > 1e-9:
                share = (
                    100 * (base.emissions_g - result.emissions_g) / (base.emissions_g - oracle.emissions_g)
                )
        out[result.policy] = {"saving_pct": saving, "oracle_share_pct": share}
    return out


def compare_table(results: Sequence[SimResult]) -> str:
    trace = results[0].trace
    header = (
        f"trace {trace.source} ({trace.zone}, {trace.signal_type} signal, {trace.emission_factor}), "
        f"{len(results[0].jobs)} jobs"
    )
    rows = [("policy", "forecast", "kgCO2", "kWh", "vs agnostic", "of oracle", "deadlines", "pauses")]
    figures = savings(results)
    for result in results:
        saving, share = figures[result.policy]["saving_pct"], figures[result.policy]["oracle_share_pct"]
        rows.append(
            (
                result.policy,
                result.forecast,
                f"{result.emissions_g / 1000:.2f}",
                f"{result.energy_kwh:.1f}",
                "-" if saving is None else f"{saving:+.1f}%",
                "-" if share is None else f"{share:.0f}%",
                f"{result.deadlines_met}/{len(result.jobs)}",
                str(result.pauses),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [header]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines.append("vs agnostic: emissions saved; of oracle: share of the oracle's saving (perfect knowledge).")
    return "\n".join(lines)
