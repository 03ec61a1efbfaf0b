"""Carries out a step's Job change against the API server: create, delete, adopt, scale, annotate.

A pause suspends the Job: Kubernetes deletes its pods with SIGTERM and the pod's grace period, in
which the trainer finishes its step and checkpoints; suspended pods count as neither failures nor
completions. A resume unsuspends it, and a scale sets parallelism (and completions only on an
Indexed Job, where the two must change together; a NonIndexed Job refuses a new completions).
Every Job gridwise creates carries the generation and pod-template fingerprint it was built from,
so a later step can tell a pod-template edit from a replica change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from gridwise.api import GROUP, JobSpec
from gridwise.k8s.builders import (
    build_headless_service,
    build_job,
    build_owner_reference,
    build_pod_template,
    build_scale_patch,
    is_elastic,
    job_name,
)
from gridwise.k8s.kube import Kube
from gridwise.step import ADOPT, ANNOTATE, CREATE, DELETE, SCALE, Action

ANNOTATION_GENERATION = f"{GROUP}/generation"
ANNOTATION_SHAPE = f"{GROUP}/pod-template-hash"


def job_replicas(job: Mapping[str, Any]) -> int:
    """Replicas a Job is set to run now: 0 while suspended."""
    spec = job.get("spec") or {}
    if spec.get("suspend"):
        return 0
    return int(spec.get("parallelism") or 0)


def shape_of(spec: JobSpec) -> str:
    """Fingerprint of what a Job's immutable part would be for this spec (pod template, mode).

    Built without the signal URL: moving the operator (or turning --signal-url on) is not a
    template edit, and must not rebuild Jobs; Jobs created before keep the env they were built with.
    """
    doc = {"template": build_pod_template(spec), "indexed": is_elastic(spec)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stamp(generation: int, spec: JobSpec) -> dict[str, str]:
    return {ANNOTATION_GENERATION: str(generation), ANNOTATION_SHAPE: shape_of(spec)}


class Actuator:
    def __init__(self, kube: Kube, signal_base: str | None = None) -> None:
        self._kube = kube
        self._signal_base = signal_base

    async def apply(
        self, body: Mapping[str, Any], spec: JobSpec, generation: int, actions: Sequence[Action]
    ) -> dict[str, Any]:
        """Runs the actions in order; the first that fails re-raises, noted with its kind.

        Returns the Job spec fields the scale patches set (`suspend`, `parallelism`, ...), which a
        watch may show only later: empty when no action scaled.
        """
        ns, name = spec.namespace, job_name(spec.name)
        scaled: dict[str, Any] = {}
        for action in actions:
            try:
                scaled.update(await self._one(body, spec, generation, action, ns, name))
            except Exception as exc:
                exc.add_note(f"gridwise action: {action.kind}")
                raise
        return scaled

    async def _one(
        self, body: Mapping[str, Any], spec: JobSpec, generation: int, action: Action, ns: str, name: str
    ) -> dict[str, Any]:
        if action.kind == CREATE:
            if is_elastic(spec):
                await self._kube.create(build_headless_service(body, spec))
            job = build_job(body, spec, replicas=action.replicas, suspend=True, signal_base=self._signal_base)
            job["metadata"].setdefault("annotations", {}).update(_stamp(generation, spec))
            await self._kube.create(job)
        elif action.kind == DELETE:
            await self._kube.delete_job(ns, name)
        elif action.kind == ADOPT:
            await self._kube.patch_job(
                ns, name, {"metadata": {"ownerReferences": [build_owner_reference(body)]}}
            )
        elif action.kind == ANNOTATE:
            await self._kube.patch_job(ns, name, {"metadata": {"annotations": _stamp(generation, spec)}})
        elif action.kind == SCALE:
            patch = build_scale_patch(spec, action.replicas, suspend=action.suspend)
            if not action.indexed:
                patch["spec"].pop("completions", None)
            await self._kube.patch_job(ns, name, patch)
            return dict(patch["spec"])
        else:
            raise ValueError(f"unknown Job action {action.kind!r}")
        return {}
