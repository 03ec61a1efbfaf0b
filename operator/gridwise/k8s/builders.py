"""Pure `build_*` functions: CarbonAwareJob in, Kubernetes manifests out.

No API calls and no clock reads here, so every manifest the operator sends can be
checked in a unit test and diffed in review.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from gridwise.api import API_VERSION, KIND, KUEUE_QUEUE_LABEL, LABEL_JOB, LABEL_MANAGED_BY, MANAGER, JobSpec
from gridwise.carbon.registry import signal_type_for
from gridwise.trainer_contract import ENV_CARBON_URL, EXIT_EARLY_STOP, signal_url

METRICS_PORT = 9400
RENDEZVOUS_PORT = 29400
TRAINER_CONTAINER_ENV_PREFIX = "GRIDWISE_"


def job_name(caj_name: str) -> str:
    """The Job (and headless Service) a CarbonAwareJob owns: fixed, so restarts adopt, never duplicate."""
    return caj_name


def selector_labels(caj_name: str) -> dict[str, str]:
    return {LABEL_JOB: caj_name}


def common_labels(caj_name: str) -> dict[str, str]:
    return {
        **selector_labels(caj_name),
        LABEL_MANAGED_BY: MANAGER,
        "app.kubernetes.io/name": "gridwise-trainer",
        "app.kubernetes.io/instance": caj_name,
    }


def build_owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_elastic(spec: JobSpec) -> bool:
    """Multi-replica jobs run as an Indexed Job under torchrun elastic, with a headless Service."""
    return spec.max_replicas > 1


def build_trainer_env(spec: JobSpec, signal_base: str | None = None) -> list[dict[str, Any]]:
    """Env the trainer reads. Fixed for the Job's life: a Job's pod template is immutable.

    `signal_base` is the URL pods reach the operator at (`--signal-url`): the trainer then polls the
    operator's own reading for this job (GRIDWISE_CARBON_URL), so it needs no provider credentials.

    For elastic jobs the container command is left alone: the image's `gridwise-trainer` entrypoint
    sees GRIDWISE_NNODES and execs torchrun (c10d rendezvous hosted by index 0) with one DDP worker;
    rank and world size come from the rendezvous, so a scale never needs a new pod template.
    """
    env: list[dict[str, Any]] = [
        {"name": "GRIDWISE_JOB_NAME", "value": spec.name},
        {"name": "GRIDWISE_CHECKPOINT_DIR", "value": spec.checkpoint_path},
        {"name": "GRIDWISE_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "GRIDWISE_SIGNAL_TYPE", "value": signal_type_for(spec.carbon)},
        {"name": "GRIDWISE_COMPRESSION", "value": json.dumps(dict(spec.compression), sort_keys=True)},
        {"name": "GRIDWISE_TOTAL_STEPS", "value": str(spec.total_steps)},
        # The trainer's GPU metrics carry Hostname=<node> like dcgm-exporter's, so the two join.
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    if spec.objective:
        # Unset means the trainer's default ({"accuracy": 1}); an empty "{}" is an error there (no
        # positive weight), so a CarbonAwareJob without `objective` must not send one.
        env.append({"name": "GRIDWISE_OBJECTIVE", "value": json.dumps(dict(spec.objective), sort_keys=True)})
    if signal_base:
        env.append({"name": ENV_CARBON_URL, "value": signal_url(signal_base, spec.namespace, spec.name)})
    if is_elastic(spec):
        svc = job_name(spec.name)
        env += [
            {"name": "GRIDWISE_NNODES", "value": f"{spec.min_replicas}:{spec.max_replicas}"},
            {
                "name": "GRIDWISE_RDZV_ENDPOINT",
                "value": f"{job_name(spec.name)}-0.{svc}.{spec.namespace}.svc:{RENDEZVOUS_PORT}",
            },
            {"name": "GRIDWISE_RDZV_ID", "value": spec.name},
            {
                "name": "GRIDWISE_NODE_RANK",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            },
            # The address this pod's torchrun agent advertises: the pod IP works before DNS does.
            {"name": "GRIDWISE_LOCAL_ADDR", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]
    return env


def _merge_env(existing: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The user's explicit env wins over ours, so a manifest can override any default."""
    names = {e.get("name") for e in existing}
    return [*existing, *(e for e in ours if e["name"] not in names)]


def build_pod_template(spec: JobSpec, signal_base: str | None = None) -> dict[str, Any]:
    """The Job's pod template: the user's, plus our labels, env, ports and checkpoint volume.

    `signal_base` only adds GRIDWISE_CARBON_URL; the pod-template fingerprint (actuator.shape_of) is
    taken without it, so where the operator is reached never counts as an edit of the template.
    """
    template = copy.deepcopy(dict(spec.template))
    meta = template.setdefault("metadata", {})
    meta.setdefault("labels", {}).update(common_labels(spec.name))
    meta.setdefault("annotations", {}).update(
        {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(METRICS_PORT),
            "prometheus.io/path": "/metrics",
        }
    )
    pod = template.setdefault("spec", {})
    pod["restartPolicy"] = "Never"  # podFailurePolicy requires it; pauses are not failures
    pod.setdefault("terminationGracePeriodSeconds", spec.grace_period_seconds)
    env = build_trainer_env(spec, signal_base)
    for container in pod.get("containers", []):
        container["env"] = _merge_env(list(container.get("env") or []), env)
        ports = list(container.get("ports") or [])
        if not any(p.get("containerPort") == METRICS_PORT for p in ports):
            ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
        if is_elastic(spec) and not any(p.get("containerPort") == RENDEZVOUS_PORT for p in ports):
            ports.append({"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"})
        container["ports"] = ports
        if spec.checkpoint_claim:
            mounts = list(container.get("volumeMounts") or [])
            if not any(m.get("name") == "checkpoints" for m in mounts):
                mounts.append({"name": "checkpoints", "mountPath": spec.checkpoint_path})
            container["volumeMounts"] = mounts
    if spec.checkpoint_claim:
        volumes = list(pod.get("volumes") or [])
        if not any(v.get("name") == "checkpoints" for v in volumes):
            volumes.append(
                {"name": "checkpoints", "persistentVolumeClaim": {"claimName": spec.checkpoint_claim}}
            )
        pod["volumes"] = volumes
    if is_elastic(spec):
        pod["subdomain"] = job_name(spec.name)
    return template


def build_job(
    body: Mapping[str, Any],
    spec: JobSpec,
    *,
    replicas: int,
    suspend: bool = True,
    signal_base: str | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job for a CarbonAwareJob. It starts suspended: the first plan decides when it runs."""
    replicas = max(spec.min_replicas, min(spec.max_replicas, replicas))
    job_spec: dict[str, Any] = {
        "suspend": suspend,
        "parallelism": replicas,
        "backoffLimit": 6,
        "podFailurePolicy": {
            "rules": [
                # A pod removed by a pause, a scale-down or a node drain is not the trainer failing.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                # The trainer stopped early on SIGTERM after a checkpoint (docs/trainer-contract.md).
                # Without this a drained pod that exited 0 would complete the Job at partial progress;
                # ignored, the pod is replaced without using up backoffLimit and resumes from the
                # checkpoint. No containerName: every container gets the trainer env, so all are trainers.
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [EXIT_EARLY_STOP]}},
            ]
        },
        "template": build_pod_template(spec, signal_base),
    }
    if is_elastic(spec):
        job_spec["completionMode"] = "Indexed"
        job_spec["completions"] = replicas
        job_spec["backoffLimitPerIndex"] = 3
        job_spec.pop("backoffLimit")
    labels = common_labels(spec.name)
    queue = (body["metadata"].get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    if queue:
        # Kueue admits the Job by flipping spec.suspend; gridwise then only observes it.
        labels[KUEUE_QUEUE_LABEL] = queue
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec.name),
            "namespace": spec.namespace,
            "labels": labels,
            "ownerReferences": [build_owner_reference(body)],
        },
        "spec": job_spec,
    }


def build_headless_service(body: Mapping[str, Any], spec: JobSpec) -> dict[str, Any]:
    """Stable DNS names (<job>-<index>.<service>) for the rendezvous of elastic workers."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job_name(spec.name),
            "namespace": spec.namespace,
            "labels": common_labels(spec.name),
            "ownerReferences": [build_owner_reference(body)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(spec.name),
            "ports": [
                {"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
            ],
        },
    }


def build_scale_patch(spec: JobSpec, replicas: int, *, suspend: bool) -> dict[str, Any]:
    """The Job patch for a pause (suspend), resume, or new replica count.

    Indexed Jobs may change completions only together with parallelism, kept equal.
    Suspended Jobs keep their last replica count so a resume restarts at the planned size.
    """
    patch: dict[str, Any] = {"suspend": suspend}
    if replicas > 0:
        patch["parallelism"] = replicas
        if is_elastic(spec):
            patch["completions"] = replicas
    return {"spec": patch}
