"""The operator refuses what the CRD refuses (defence in depth), and parsing never overflows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.api import MAX_HORIZON, SpecError, parse_duration, parse_job_spec

REPO = Path(__file__).resolve().parents[2]
ACCEPTED = datetime(2030, 1, 1, tzinfo=UTC)


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "completeWithin": "12h",
        "replicas": {"max": 1},
        "work": {"gpuHours": 1, "totalSteps": 10},
        "carbon": {"provider": "static", "staticGramsPerKWh": 100},
        "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
    }
    base.update(over)
    return base


@pytest.mark.parametrize("text", ["36h", "90m", "2d12h", "1.5h", "90d", "2160h"])
def test_durations_within_the_horizon_parse(text: str) -> None:
    assert timedelta(0) < parse_duration(text) <= MAX_HORIZON


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999h", "is not a duration"),  # more digits than the CRD's pattern allows
        ("2161h", "longer than the 90 days"),
        ("91d", "longer than the 90 days"),
        ("99999d", "longer than the 90 days"),
        ("1h" * 40, "is not a duration"),
        ("tomorrow", "is not a duration"),
        ("", "is not a duration"),
    ],
)
def test_bad_durations_are_refused_without_overflow(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("deadline", "message"),
    [
        ("9999-12-31T23:59:59Z", "beyond the horizon"),
        ("2030-04-02T00:00:00Z", "beyond the horizon"),
        ("0001-01-01T00:00:00+01:00", "outside the times"),
        ("x" * 5000, "is not an RFC 3339 time"),
    ],
)
def test_deadlines_beyond_the_horizon_are_refused(deadline: str, message: str) -> None:
    raw = spec(deadline=deadline)
    del raw["completeWithin"]
    with pytest.raises(SpecError, match=message):
        parse_job_spec("j", "ns", raw, ACCEPTED)


def test_deadline_at_the_horizon_is_accepted() -> None:
    raw = spec(deadline="2030-04-01T00:00:00Z")
    del raw["completeWithin"]
    assert parse_job_spec("j", "ns", raw, ACCEPTED).deadline == ACCEPTED + MAX_HORIZON


@pytest.mark.parametrize("name", ["a.b", "1job", "Job", "-job", "job-", "j_b", "a" * 53, ""])
def test_names_the_headless_service_would_reject_are_refused(name: str) -> None:
    with pytest.raises(SpecError, match="DNS-1035"):
        parse_job_spec(name, "ns", spec(), ACCEPTED)


@pytest.mark.parametrize("name", ["j", "job-2", "a" * 52])
def test_dns_1035_names_are_accepted(name: str) -> None:
    assert parse_job_spec(name, "ns", spec(), ACCEPTED).name == name


@pytest.mark.parametrize(
    ("carbon", "ok"),
    [
        ({"provider": "watttime", "zone": "CAISO_NORTH"}, True),
        ({"provider": "watttime", "zone": "CAISO_NORTH", "signalType": "marginal"}, True),
        ({"provider": "watttime", "zone": "CAISO_NORTH", "signalType": "average"}, False),
        ({"provider": "electricitymaps", "zone": "DE", "signalType": "marginal"}, False),
        ({"provider": "uk-neso", "signalType": "marginal"}, False),
        ({"provider": "static", "staticGramsPerKWh": 1, "signalType": "marginal"}, True),
    ],
)
def test_signal_type_must_match_the_provider(carbon: dict[str, Any], ok: bool) -> None:
    if ok:
        parse_job_spec("j", "ns", spec(carbon=carbon), ACCEPTED)
    else:
        with pytest.raises(SpecError, match="signalType"):
            parse_job_spec("j", "ns", spec(carbon=carbon), ACCEPTED)


def test_crd_states_the_same_horizon_and_name_rule() -> None:
    """The CEL rules and the operator's checks are one policy: a test keeps their numbers together."""
    crd = yaml.safe_load((REPO / "crds" / "gridwise.dev_carbonawarejobs.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props = schema["properties"]["spec"]["properties"]
    within = props["completeWithin"]
    assert within["pattern"] == r"^([0-9]{1,5}(\.[0-9]{1,3})?(s|m|h|d)){1,4}$"
    assert f"<= {MAX_HORIZON.total_seconds():.1f}" in within["x-kubernetes-validations"][0]["rule"]
    assert (
        "signalType" in props["carbon"]["properties"]
        and "default" not in props["carbon"]["properties"]["signalType"]
    )
    rules = [v["rule"] for v in schema["x-kubernetes-validations"]]
    assert "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')" in rules
    assert (REPO / "charts/gridwise/crds/gridwise.dev_carbonawarejobs.yaml").read_bytes() == (
        REPO / "crds/gridwise.dev_carbonawarejobs.yaml"
    ).read_bytes()
