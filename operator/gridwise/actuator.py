"""Turns a replica decision into a change of the Job: pause, resume or scale.

A pause suspends the Job: Kubernetes deletes its pods with SIGTERM and the pod's grace
period, in which the trainer finishes its step and checkpoints; suspended pods count as
neither failures nor completions. A resume unsuspends it, and a scale sets parallelism
(and completions for Indexed Jobs, which must change together).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gridwise.api import JobSpec
from gridwise.k8s.builders import build_scale_patch, job_name
from gridwise.k8s.kube import Kube


def job_replicas(job: Mapping[str, Any]) -> int:
    """Replicas a Job is set to run now: 0 while suspended."""
    spec = job.get("spec") or {}
    if spec.get("suspend"):
        return 0
    return int(spec.get("parallelism") or 0)


class Actuator:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def apply(self, spec: JobSpec, job: Mapping[str, Any], replicas: int) -> dict[str, Any] | None:
        """Patches the Job to run `replicas` (0 = suspend); returns the patched Job, or None if unchanged."""
        current = job_replicas(job)
        if replicas == current:
            return None
        if replicas == 0:
            patch = build_scale_patch(spec, 0, suspend=True)
        else:
            patch = build_scale_patch(spec, replicas, suspend=False)
        return await self._kube.patch_job(spec.namespace, job_name(spec.name), patch)
