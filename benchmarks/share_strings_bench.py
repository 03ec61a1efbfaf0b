"""What sharing a CarbonAwareJob body's strings saves and costs, per body, without a cluster.

The watch transform interns the keys and short strings of every CarbonAwareJob body kopf keeps
(operator/gridwise/k8s/watch_transform.py). This builds N bodies shaped like the operator's (a
running job's full status, kopf's annotation; no managedFields, which the transform drops), each
decoded from its own JSON document as a watch event is, and measures in one run:

- memory per body kept (tracemalloc), decoded as is (the baseline) and decoded then shared;
- time per event, to decode alone (the baseline) and to decode and share.

    python benchmarks/share_strings_bench.py --bodies 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
import tracemalloc
from collections.abc import Callable
from typing import Any

from gridwise.k8s.watch_transform import share_strings

T0 = "2026-12-04T10:00:00Z"


def body(i: int) -> dict[str, Any]:
    """One running job as the API server sends it; numbers and names differ from job to job."""
    x = (i * 7919 % 1000) / 1000.0
    conditions = [
        {
            "type": t,
            "status": s,
            "reason": r,
            "message": m,
            "lastTransitionTime": T0,
            "observedGeneration": 1,
        }
        for t, s, r, m in (
            ("Ready", "True", "Running", "running 2 of 2 replicas at 120 g/kWh"),
            ("Scheduled", "True", "Planned", "next change 3@12-04 14:00Z"),
            ("DeadlineAtRisk", "False", "OnTrack", "finishes 18 h before its deadline"),
            ("SignalStale", "False", "Fresh", "reading from trace ES at 10:00Z"),
        )
    ]
    return {
        "apiVersion": "gridwise.dev/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {
            "name": f"job-{i}",
            "namespace": "bench",
            "uid": f"6f1c{i:04d}-9a2e-4c1b-8d3f-0123456789ab",
            "resourceVersion": str(100000 + i),
            "generation": 1,
            "creationTimestamp": T0,
            "annotations": {
                "kopf.zalando.org/last-handled-configuration": json.dumps({"i": i, "p": "x" * 1200})
            },
            "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "gridwise-trainer:1",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                    "restartPolicy": "Never",
                }
            },
            "work": {"gpuHours": 24, "minReplicas": 1, "maxReplicas": 4},
            "deadline": "2026-12-06T10:00:00Z",
            "carbon": {"zone": "ES", "provider": "trace"},
            "policy": "forecast",
        },
        "status": {
            "phase": "Running",
            "observedGeneration": 1,
            "acceptedTime": T0,
            "jobName": f"job-{i}",
            "jobUID": f"8a2d{i:04d}-1b3c-4d5e-9f60-abcdef012345",
            "replicas": 2,
            "desiredReplicas": 2,
            "runningPods": 2,
            "deadline": "2026-12-06T10:00:00Z",
            "progress": round(x, 6),
            "progressDisplay": f"{x * 100:.0f}%",
            "progressSource": "estimate",
            "energyJoules": 1e6 * x,
            "emissionsGrams": 1e3 * x,
            "baselineEmissionsGrams": 1.2e3 * x,
            "avoidedEmissionsGrams": round(200 * x, 3),
            "avoidedEmissions": {"timingGrams": round(120 * x, 3), "widthGrams": round(80 * x, 3)},
            "avoidedEmissionsDisplay": f"{200 * x:.0f}g",
            "pauseTimes": [],
            "pausesToday": 0,
            "measuredThroughput": {},
            "accounting": {
                "lastTime": "2026-12-04T10:00:10Z",
                "workDoneGPUHours": 10 * x,
                "baselineWorkGPUHours": 10 * x,
                "baselineEnergyJoules": 1e6 * x,
                "modelEnergyJoules": 1e6 * x,
                "unpricedEnergyJoules": 0.0,
                "unpricedBaselineEnergyJoules": 0.0,
                "trainerEnergyJoules": None,
                "workingPods": 2,
                "drawingPods": 2,
                "gramsPerKWh": 120.0,
            },
            "conditions": conditions,
            "acceptedSpec": {
                "work": {"gpuHours": 24},
                "deadline": "2026-12-06T10:00:00Z",
                "carbon": {"zone": "ES"},
            },
            "carbonIntensity": {
                "gramsPerKWh": 120.0,
                "signalType": "average",
                "provider": "trace",
                "zone": "ES",
                "stale": False,
                "display": "120g/kWh average",
            },
            "nextChange": {
                "time": "2026-12-04T14:00:00Z",
                "replicas": 3,
                "reason": "Plan",
                "display": "3@12-04 14:00Z",
            },
        },
    }


def kib_per_body(texts: list[str], decode: Callable[[str], Any]) -> float:
    tracemalloc.start()
    kept = [decode(t) for t in texts]
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return size / 1024 / len(texts)


def us_per_event(text: str, decode: Callable[[str], Any], repeat: int) -> float:
    return min(timeit.repeat(lambda: decode(text), number=repeat, repeat=5)) / repeat * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bodies", type=int, default=1000, help="bodies kept at once (one per job)")
    ap.add_argument("--repeat", type=int, default=2000, help="events per timing (best of 5)")
    args = ap.parse_args()
    if args.bodies < 1 or args.repeat < 1:
        ap.error("--bodies and --repeat must be positive")
    texts = [json.dumps(body(i)) for i in range(args.bodies)]
    plain = json.loads

    def shared(text: str) -> Any:
        return share_strings(json.loads(text))

    mem_plain, mem_shared = kib_per_body(texts, plain), kib_per_body(texts, shared)
    t_plain, t_shared = (
        us_per_event(texts[0], plain, args.repeat),
        us_per_event(texts[0], shared, args.repeat),
    )
    result = {
        "bodies": args.bodies,
        "json_bytes_per_body": len(texts[0]),
        "kib_per_body": {
            "decoded (baseline)": round(mem_plain, 2),
            "decoded and shared": round(mem_shared, 2),
        },
        "memory_ratio": round(mem_shared / mem_plain, 3),
        "us_per_event": {"decode (baseline)": round(t_plain, 1), "decode and share": round(t_shared, 1)},
        "time_ratio": round(t_shared / t_plain, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
