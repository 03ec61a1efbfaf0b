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
    """Per policy, against agnostic (run now at max): saving %, its width and timing parts, share of oracle.

    C = E x I (energy x its mean intensity). The saving C_a - C_p splits exactly into
    width = (E_a - E_p) x I_a (energy saved, priced at run-now's intensity) and
    timing = E_p x (I_a - I_p) (the same energy moved to cleaner hours).
    """
    by_policy = {r.policy: r for r in results}
    base = by_policy.get("agnostic")
    best = by_policy.get("oracle")
    out: dict[str, dict[str, float | None]] = {}
    for result in results:
        figures: dict[str, float | None] = dict.fromkeys(
            ("saving_pct", "width_pct", "timing_pct", "oracle_share_pct")
        )
        if base is not None and base.emissions_g > 0 and base.energy_kwh > 0:
            saved = base.emissions_g - result.emissions_g
            base_intensity = base.emissions_g / base.energy_kwh
            width = (base.energy_kwh - result.energy_kwh) * base_intensity
            figures["saving_pct"] = 100 * saved / base.emissions_g
            figures["width_pct"] = 100 * width / base.emissions_g
            figures["timing_pct"] = 100 * (saved - width) / base.emissions_g
            if best is not None and base.emissions_g - best.emissions_g > 1e-9:
                figures["oracle_share_pct"] = 100 * saved / (base.emissions_g - best.emissions_g)
        out[result.policy] = figures
    return out


def compare_table(results: Sequence[SimResult]) -> str:
    trace = results[0].trace
    header = (
        f"trace {trace.source} ({trace.zone}, {trace.signal_type} signal, {trace.emission_factor}), "
        f"{len(results[0].jobs)} jobs"
    )
    rows = [
        (
            "policy",
            "forecast",
            "kgCO2",
            "kWh",
            "vs agnostic",
            "width",
            "timing",
            "of oracle",
            "deadlines",
            "pauses",
        )
    ]
    figures = savings(results)

    def pct(value: float | None, sign: bool = True) -> str:
        return "-" if value is None else (f"{value:+.1f}%" if sign else f"{value:.0f}%")

    for result in results:
        f = figures[result.policy]
        rows.append(
            (
                result.policy,
                result.forecast,
                f"{result.emissions_g / 1000:.2f}",
                f"{result.energy_kwh:.1f}",
                pct(f["saving_pct"]),
                pct(f["width_pct"]),
                pct(f["timing_pct"]),
                pct(f["oracle_share_pct"], sign=False),
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
    lines.append(
        "vs agnostic: emissions saved against running at once at max replicas, split into width (energy "
        "saved) and timing (cleaner hours); of oracle: share of the exact optimum's saving."
    )
    return "\n".join(lines)
