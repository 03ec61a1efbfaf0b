"""The CRD's schema and CEL rules, proven on a real API server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.api import GROUP, KIND, PLURAL, SHORT_NAME, VERSION
from gridwise.devcluster import Cluster

REPO = Path(__file__).resolve().parents[2]
GOOD = sorted((REPO / "examples").glob("*.yaml"))
BAD = sorted((REPO / "examples" / "invalid").glob("*.yaml"))


def _expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_crd_names_match_the_python_api() -> None:
    crd = yaml.safe_load((REPO / "crds" / "gridwise.dev_carbonawarejobs.yaml").read_text())
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["names"]["kind"] == KIND
    assert crd["spec"]["names"]["plural"] == PLURAL
    assert SHORT_NAME in crd["spec"]["names"]["shortNames"]
    assert [v["name"] for v in crd["spec"]["versions"]] == [VERSION]


@pytest.mark.cluster
@pytest.mark.parametrize("manifest", GOOD, ids=lambda p: p.name)
def test_good_examples_are_accepted(cluster: Cluster, namespace: str, manifest: Path) -> None:
    out = cluster.kubectl("-n", namespace, "apply", "--dry-run=server", "-o", "json", "-f", str(manifest))
    obj = json.loads(out.stdout)
    assert obj["kind"] == KIND
    # Server-side defaults from the schema were applied.
    assert obj["spec"]["policy"]["type"] in ("agnostic", "threshold", "forecast")
    assert obj["spec"]["carbon"].get("signalType", "unset") in ("average", "marginal", "unset")


@pytest.mark.cluster
@pytest.mark.parametrize("manifest", BAD, ids=lambda p: p.name)
def test_bad_examples_are_rejected_with_a_readable_message(
    cluster: Cluster, namespace: str, manifest: Path
) -> None:
    result = cluster.kubectl("-n", namespace, "apply", "-f", str(manifest), check=False)
    assert result.returncode != 0, f"{manifest.name} was accepted but should be rejected"
    assert _expectation(manifest) in result.stderr
    got = cluster.kubectl("-n", namespace, "get", SHORT_NAME, "-o", "name").stdout
    assert got.strip() == "", "a rejected object must not be stored"


@pytest.mark.cluster
def test_short_name_and_printer_columns(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", str(REPO / "examples" / "threshold-uk.yaml"))
    out = cluster.kubectl("-n", namespace, "get", SHORT_NAME).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "REPLICAS", "INTENSITY", "PROGRESS", "AVOIDED-CO2", "AGE"]
    wide = cluster.kubectl("-n", namespace, "get", SHORT_NAME, "-o", "wide").stdout.splitlines()[0].split()
    assert "NEXT" in wide


@pytest.mark.cluster
def test_status_is_a_subresource(cluster: Cluster, namespace: str) -> None:
    """Users cannot set status through the main resource; only the operator writes it."""
    doc = yaml.safe_load((REPO / "examples" / "threshold-uk.yaml").read_text())
    doc["status"] = {"phase": "Succeeded"}
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(doc))
    phase = cluster.kubectl(
        "-n", namespace, "get", SHORT_NAME, "finetune-threshold", "-o", "jsonpath={.status.phase}"
    )
    assert phase.stdout == ""


@pytest.mark.cluster
def test_bad_status_values_are_rejected(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", str(REPO / "examples" / "threshold-uk.yaml"))
    patch = json.dumps({"status": {"phase": "Exploded", "progress": 3}})
    result = cluster.kubectl(
        "-n",
        namespace,
        "patch",
        SHORT_NAME,
        "finetune-threshold",
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
        check=False,
    )
    assert result.returncode != 0
    assert 'Unsupported value: "Exploded"' in result.stderr
    assert "should be less than or equal to 1" in result.stderr


def _minimal(name: str, **spec: Any) -> str:
    doc: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "replicas": {"max": 1},
            "work": {"gpuHours": 1, "totalSteps": 10},
            "carbon": {"provider": "static", "staticGramsPerKWh": 100},
            "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
            **spec,
        },
    }
    return yaml.safe_dump(doc)


def _dry_run(cluster: Cluster, namespace: str, manifest: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "-n", namespace, "apply", "--dry-run=server", "-o", "json", "-f", "-", input=manifest, check=False
    )


@pytest.mark.cluster
@pytest.mark.parametrize("within", ["90d", "2160h", "89d23h59m60s", "2d12h", "1.5h", "45m"])
def test_durations_up_to_the_horizon_are_accepted(cluster: Cluster, namespace: str, within: str) -> None:
    result = _dry_run(cluster, namespace, _minimal("ok", completeWithin=within))
    assert result.returncode == 0, result.stderr


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("within", "expect"),
    [
        ("2160h1s", "at most 90 days"),
        ("1000d", "at most 90 days"),
        ("123456h", "should match"),
        ("1h1h1h1h1h", "should match"),
    ],
)
def test_durations_past_the_horizon_are_rejected(
    cluster: Cluster, namespace: str, within: str, expect: str
) -> None:
    result = _dry_run(cluster, namespace, _minimal("bad", completeWithin=within))
    assert result.returncode != 0 and expect in result.stderr, result.stderr


@pytest.mark.cluster
@pytest.mark.parametrize("name", ["a.b", "9lives", "x" * 53])
def test_names_the_service_rejects_are_rejected(cluster: Cluster, namespace: str, name: str) -> None:
    result = _dry_run(cluster, namespace, _minimal(name, completeWithin="1h"))
    assert result.returncode != 0, f"{name} was accepted"


@pytest.mark.cluster
def test_watttime_without_signal_type_is_accepted_and_not_defaulted(cluster: Cluster, namespace: str) -> None:
    """The CRD used to default signalType to average, which WattTime can never serve."""
    carbon = {"provider": "watttime", "zone": "CAISO_NORTH"}
    result = _dry_run(cluster, namespace, _minimal("wt", completeWithin="1h", carbon=carbon))
    assert result.returncode == 0, result.stderr
    assert "signalType" not in json.loads(result.stdout)["spec"]["carbon"]
