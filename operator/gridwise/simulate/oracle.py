"""The true optimum with perfect information: a mixed-integer program solved exactly by HiGHS.

For one job over the slots [submit, deadline) with the actual intensity, choose a replica count per slot
(0 or min..max, constant within a slot) to minimise emissions, where every start from paused (the first
included) adds `switch_work` GPU-hours of work, and the job stops when its work is done (so only its
final slot may be partly used). Variables per slot t and replica count n:
  x[t,n] in {0,1}  slot t runs at n replicas;   f[t,n] in [0,1]  fraction of slot t run at n
  s[t] >= 0        a start at t;                z[t] in {0,1}    t is the final slot
  minimise  sum P n h_t I_t f[t,n]
  s.t.      sum_n x[t,n] <= 1;  f[t,n] <= x[t,n];  f[t,n] >= x[t,n] - z[t]   (only the final slot partial)
            sum_t z[t] = 1;  sum_n x[t',n] <= 1 - sum_{t<t'} z[t]            (nothing after the final slot)
            s[t] >= sum_n x[t,n] - sum_n x[t-1,n]
            sum r_n h_t f[t,n] >= work + switch_work * sum_t s[t]
The jobs do not compete for GPUs in the simulation, so the fleet optimum is the sum of per-job optima.
The cap on pauses per day is not a constraint here: the oracle is a lower bound for capped policies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OracleSolution:
    replicas: tuple[int, ...]  # per slot; the final slot may be used only in part
    emissions_g: float
    status: str  # "optimal" or what HiGHS said
    gap: float  # relative MIP gap HiGHS reports (0 when proven optimal)


def solve(
    hours: tuple[float, ...],
    intensity: tuple[float, ...],
    rates: tuple[float, ...],
    min_replicas: int,
    max_replicas: int,
    power_kw: float,
    work: float,
    switch_work: float,
    time_limit_s: float = 30.0,
) -> OracleSolution:
    """Exact per-job optimum; raises ValueError when even max replicas everywhere cannot do the work."""
    # Imported here: the operator image ships the simulator's CLI without scipy (the `sim` extra).
    try:
        from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped]
        from scipy.sparse import lil_matrix  # type: ignore[import-untyped]
    except ModuleNotFoundError as exc:
        raise RuntimeError("the oracle needs scipy (HiGHS): pip install 'gridwise[sim]'") from exc
    slots = len(hours)
    levels = list(range(min_replicas, max_replicas + 1))
    nl = len(levels)
    if slots == 0:
        raise ValueError("no slots to plan")
    nx = slots * nl
    # Layout: x (nx) | f (nx) | s (slots) | z (slots)
    xo, fo, so, zo = 0, nx, 2 * nx, 2 * nx + slots
    nv = 2 * nx + 2 * slots

    def xi(t: int, k: int) -> int:
        return xo + t * nl + k

    def fi(t: int, k: int) -> int:
        return fo + t * nl + k

    c = np.zeros(nv)
    for t in range(slots):
        for k, n in enumerate(levels):
            c[fi(t, k)] = power_kw * n * hours[t] * intensity[t]
    rows = 3 * slots + 2 * nx + 1 + 1
    a = lil_matrix((rows, nv))
    lo = np.full(rows, -np.inf)
    hi = np.full(rows, np.inf)
    r = 0
    for t in range(slots):
        for k in range(nl):
            a[r, xi(t, k)] = 1.0
        hi[r] = 1.0
        r += 1
    for t in range(slots):
        for k in range(nl):
            a[r, fi(t, k)], a[r, xi(t, k)] = 1.0, -1.0  # f - x <= 0
            hi[r] = 0.0
            r += 1
            a[r, fi(t, k)], a[r, xi(t, k)], a[r, zo + t] = 1.0, -1.0, 1.0  # f - x + z >= 0
            lo[r] = 0.0
            r += 1
    for t in range(slots):
        a[r, zo + t] = 1.0
    lo[r] = hi[r] = 1.0
    r += 1
    for t in range(slots):  # sum_n x[t,n] + sum_{t'<t} z[t'] <= 1
        for k in range(nl):
            a[r, xi(t, k)] = 1.0
        for before in range(t):
            a[r, zo + before] = 1.0
        hi[r] = 1.0
        r += 1
    for t in range(slots):  # s[t] - x[t] + x[t-1] >= 0
        a[r, so + t] = 1.0
        for k in range(nl):
            a[r, xi(t, k)] = -1.0
            if t > 0:
                a[r, xi(t - 1, k)] = 1.0
        lo[r] = 0.0
        r += 1
    for t in range(slots):  # work - switch * starts >= work
        for k, n in enumerate(levels):
            a[r, fi(t, k)] = rates[n] * hours[t]
        a[r, so + t] = -switch_work
    lo[r] = work
    r += 1
    integrality = np.zeros(nv)
    integrality[xo : xo + nx] = 1
    integrality[zo : zo + slots] = 1
    upper = np.ones(nv)
    result = milp(
        c,
        constraints=LinearConstraint(a.tocsr()[:r], lo[:r], hi[:r]),
        integrality=integrality,
        bounds=Bounds(np.zeros(nv), upper),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-6, "disp": False},
    )
    if result.x is None:
        raise ValueError(f"the oracle found no schedule: {result.message}")
    x = result.x
    out = []
    for t in range(slots):
        chosen = [n for k, n in enumerate(levels) if x[xi(t, k)] > 0.5]
        out.append(chosen[0] if chosen else 0)
    gap = float(getattr(result, "mip_gap", 0.0) or 0.0)
    return OracleSolution(
        tuple(out), float(result.fun), "optimal" if result.status == 0 else result.message, gap
    )
