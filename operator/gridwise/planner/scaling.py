"""How fast a job runs at n replicas: the one place that knows the scaling model."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping


def throughputs(max_replicas: int, efficiency: float, table: Mapping[int, float] | None) -> tuple[float, ...]:
    """rates[n] = work per hour at n replicas, for n in 0..max_replicas (rates[0] = 0).

    With a table, counts between measured ones are interpolated linearly; counts below the smallest
    measured one scale linearly down to 0; counts above the largest are refused (no extrapolation).
    """
    if table is None:
        return tuple(0.0 if n == 0 else n * efficiency ** math.log2(n) for n in range(max_replicas + 1))
    known = sorted((int(n), float(rate)) for n, rate in table.items())
    if not known or any(n < 1 or not math.isfinite(rate) or rate <= 0 for n, rate in known):
        raise ValueError("throughput_table needs replica counts >= 1 mapped to positive finite throughputs")
    if known[-1][0] < max_replicas:
        raise ValueError(
            f"throughput_table stops at {known[-1][0]} replicas but max_replicas is {max_replicas}: "
            "measure up to max_replicas or lower it"
        )
    points = [(0, 0.0), *known]
    rates = [0.0]
    for n in range(1, max_replicas + 1):
        for (n0, r0), (n1, r1) in itertools.pairwise(points):
            if n0 <= n <= n1:
                rates.append(r0 + (r1 - r0) * (n - n0) / (n1 - n0))
                break
    return tuple(rates)
