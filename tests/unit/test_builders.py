"""Pure builders and the throughput table (issue 7): no cluster needed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gridwise.api import parse_job_spec
from gridwise.k8s.builders import build_job, build_scale_patch, build_trainer_env
from gridwise.progress import parse_throughput, throughput_table

BODY = {"metadata": {"name": "j", "uid": "u", "labels": {}}}


def _spec(lo: int, hi: int):  # type: ignore[no-untyped-def]
    raw = {
        "replicas": {"min": lo, "max": hi},
        "work": {"gpuHours": 1, "totalSteps": 10},
        "completeWithin": "1h",
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
    }
    return parse_job_spec("j", "ns", raw, datetime(2030, 1, 1, tzinfo=UTC))


def test_single_replica_job_is_unchanged_and_elastic_is_indexed() -> None:
    one = build_job(BODY, _spec(1, 1), replicas=1)
    assert "completionMode" not in one["spec"] and one["spec"]["backoffLimit"] == 6
    names = {e["name"] for e in build_trainer_env(_spec(1, 1))}
    assert not any(n.startswith(("GRIDWISE_NNODES", "GRIDWISE_RDZV")) for n in names)
    el = build_job(BODY, _spec(1, 4), replicas=3)["spec"]
    assert el["completionMode"] == "Indexed" and el["completions"] == el["parallelism"] == 3
    c = el["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in c["ports"]} == {9400, 29400}
    env = {e["name"]: e for e in c["env"]}
    assert env["GRIDWISE_NNODES"]["value"] == "1:4"
    assert env["GRIDWISE_RDZV_ENDPOINT"]["value"] == "j-0.j.ns.svc:29400"
    assert build_scale_patch(_spec(1, 4), 2, suspend=False) == {
        "spec": {"suspend": False, "parallelism": 2, "completions": 2}
    }
    assert build_scale_patch(_spec(1, 1), 1, suspend=False) == {"spec": {"suspend": False, "parallelism": 1}}


def test_throughput_metric_parses_and_normalises() -> None:
    text = (
        "# TYPE gridwise_trainer_throughput_samples_per_second gauge\n"
        'gridwise_trainer_throughput_samples_per_second{world_size="2"} 180.0\n'
        'gridwise_trainer_throughput_samples_per_second{world_size="1"} 100.0\n'
    )
    rates = parse_throughput(text)
    assert rates == {1: 100.0, 2: 180.0}
    table = throughput_table(rates, 4, 0.9)
    assert table is not None and table[1] == 1.0 and table[2] == 1.8
    assert abs(table[4] - 4 * 0.9**2) < 1e-12  # not measured yet: the manifest's curve
    assert throughput_table({}, 4, 0.9) is None  # nothing measured: the caller keeps scaling_efficiency
    only2 = throughput_table({2: 190.0}, 2, 0.9)
    assert only2 is not None and abs(only2[2] - 1.8) < 1e-12 and only2[1] == 1.0


def test_the_trainer_accepts_the_env_the_operator_sends() -> None:
    """Contract: a CarbonAwareJob without objective/compression must start the trainer (found by
    the real-node tests: "{}" as GRIDWISE_OBJECTIVE made every such trainer pod exit 2)."""
    from gridwise_trainer.config import parse_compression, parse_objective

    env = {e["name"]: e.get("value") for e in build_trainer_env(_spec(1, 1))}
    assert parse_objective(env.get("GRIDWISE_OBJECTIVE")).accuracy > 0
    parse_compression(env.get("GRIDWISE_COMPRESSION"))


def test_early_stop_exit_code_is_ignored_and_disruptions_still_are() -> None:
    """An evicted/drained trainer exits EXIT_EARLY_STOP: neither a failure nor a completion (issue 10)."""
    from gridwise.trainer_contract import EXIT_COMPLETE, EXIT_EARLY_STOP, EXIT_REFORM

    assert EXIT_EARLY_STOP not in {0, 1, 2, EXIT_REFORM} and not 64 <= EXIT_EARLY_STOP <= 78
    assert EXIT_EARLY_STOP < 126 and EXIT_COMPLETE == 0
    for lo, hi in ((1, 1), (1, 4)):
        rules = build_job(BODY, _spec(lo, hi), replicas=hi)["spec"]["podFailurePolicy"]["rules"]
        assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
        by_code = [r for r in rules if "onExitCodes" in r]
        assert by_code == [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [EXIT_EARLY_STOP]}}
        ]
        # The API server rejects exit code 0 in an In rule; never ignore a real failure (1).
        assert 0 not in by_code[0]["onExitCodes"]["values"] and 1 not in by_code[0]["onExitCodes"]["values"]


def test_the_trainer_is_told_the_providers_signal_type() -> None:
    """WattTime serves marginal intensity only: a job that does not say so still gets "marginal"."""
    raw = {
        "replicas": {"min": 1, "max": 1},
        "work": {"gpuHours": 1, "totalSteps": 10},
        "completeWithin": "1h",
        "carbon": {"provider": "watttime", "zone": "CAISO_NORTH"},
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
    }
    spec = parse_job_spec("j", "ns", raw, datetime(2030, 1, 1, tzinfo=UTC))
    env = {e["name"]: e.get("value") for e in build_trainer_env(spec)}
    assert env["GRIDWISE_SIGNAL_TYPE"] == "marginal"
    assert {e["name"]: e.get("value") for e in build_trainer_env(_spec(1, 1))}[
        "GRIDWISE_SIGNAL_TYPE"
    ] == "average"


def test_with_a_signal_url_the_trainer_is_told_where_the_operators_reading_is() -> None:
    """--signal-url: GRIDWISE_CARBON_URL points at this job's /v1/signal; without it, nothing is set."""
    spec = _spec(1, 1)
    assert "GRIDWISE_CARBON_URL" not in {e["name"] for e in build_trainer_env(spec)}
    env = {e["name"]: e.get("value") for e in build_trainer_env(spec, "http://gw.gridwise.svc:8080/")}
    assert env["GRIDWISE_CARBON_URL"] == "http://gw.gridwise.svc:8080/v1/signal/ns/j"
    job = build_job(BODY, spec, replicas=1, signal_base="http://gw.gridwise.svc:8080")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert {"name": "GRIDWISE_CARBON_URL", "value": "http://gw.gridwise.svc:8080/v1/signal/ns/j"} in c["env"]
    # No credentials travel: the URL is the only carbon setting the pod gets.
    assert [e["name"] for e in c["env"] if "CARBON" in e["name"]] == ["GRIDWISE_CARBON_URL"]


def test_a_users_own_carbon_url_wins() -> None:
    raw = {
        "replicas": {"min": 1, "max": 1},
        "work": {"gpuHours": 1, "totalSteps": 10},
        "completeWithin": "1h",
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "t",
                        "image": "i",
                        "env": [{"name": "GRIDWISE_CARBON_URL", "value": "http://mine"}],
                    }
                ]
            }
        },
    }
    spec = parse_job_spec("j", "ns", raw, datetime(2030, 1, 1, tzinfo=UTC))
    job = build_job(BODY, spec, replicas=1, signal_base="http://gw:8080")
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "GRIDWISE_CARBON_URL"] == ["http://mine"]


async def test_the_actuator_sets_the_url_without_changing_the_template_fingerprint() -> None:
    """Turning --signal-url on (or moving the operator) is no pod-template edit: no Job is rebuilt."""
    from gridwise.k8s.actuator import ANNOTATION_SHAPE, Actuator, shape_of
    from gridwise.step import CREATE, Action

    created: list[dict[str, Any]] = []

    class Kube:
        async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
            created.append(manifest)
            return manifest

    spec = _spec(1, 1)
    await Actuator(Kube(), "http://gw:8080").apply(BODY, spec, 1, [Action(CREATE, replicas=1)])  # type: ignore[arg-type]
    await Actuator(Kube()).apply(BODY, spec, 1, [Action(CREATE, replicas=1)])  # type: ignore[arg-type]
    told, untold = created
    env = {e["name"]: e.get("value") for e in told["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GRIDWISE_CARBON_URL"] == "http://gw:8080/v1/signal/ns/j"
    assert told["metadata"]["annotations"][ANNOTATION_SHAPE] == shape_of(spec)
    assert told["metadata"]["annotations"] == untold["metadata"]["annotations"]
