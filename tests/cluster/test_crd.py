"""The CRD's schema and CEL rules, proven on a real API server."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert obj["spec"]["carbon"]["signalType"] in ("average", "marginal")


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
