"""The simulate CLI end to end on a real trace slice: JSON shape, compare table, plot, bad input -> exit 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gridwise.simulate import SIM_POLICIES
from gridwise.simulate.cli import add_parser, run

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "carbon"
TRACE = str(FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv")
JOBS = """
- {name: short, submit_after_hours: 1, work_gpu_hours: 3, deadline_hours: 10,
   min_replicas: 1, max_replicas: 2, power_per_replica_watts: 300}
- {name: long, submit_after_hours: 0, work_gpu_hours: 60, deadline_hours: 48,
   min_replicas: 2, max_replicas: 8, power_per_replica_watts: 600, scaling_efficiency: 0.9}
- {name: tight, submit: "2022-04-10T05:00:00Z", deadline: "2022-04-10T09:00:00Z", work_gpu_hours: 12,
   min_replicas: 2, max_replicas: 4, power_per_replica_watts: 500}
"""


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gridwise")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["simulate", *argv]))


@pytest.fixture
def jobs(tmp_path: Path) -> str:
    path = tmp_path / "jobs.yaml"
    path.write_text(JOBS)
    return str(path)


def test_json_shape(jobs: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli(
            [
                "--trace",
                TRACE,
                "--jobs",
                jobs,
                "--policy",
                "forecast",
                "--start",
                "2022-04-09T00:00Z",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    for key in (
        "policy",
        "emissions_g",
        "energy_kwh",
        "jobs",
        "deadlines_met",
        "pauses",
        "signal_type",
        "per_job",
    ):
        assert key in out
    assert out["policy"] == "forecast" and out["signal_type"] == "average" and out["jobs"] == 3
    assert out["deadlines_met"] == 3 and out["emissions_g"] > 0
    assert {j["name"] for j in out["per_job"]} == {"short", "long", "tight"}
    assert sum(j["emissions_g"] for j in out["per_job"]) == pytest.approx(out["emissions_g"], rel=1e-6)


def test_compare_table_and_savings(jobs: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--trace", TRACE, "--jobs", jobs, "--compare", "--start", "2022-04-09T00:00Z", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    by_policy = {r["policy"]: r for r in payload["results"]}
    assert set(by_policy) == set(SIM_POLICIES)
    assert by_policy["oracle"]["emissions_g"] < by_policy["agnostic"]["emissions_g"]
    # The oracle is the exact optimum: no policy beats it on any job (each is a feasible schedule).
    for result in payload["results"]:
        for job, best in zip(result["per_job"], by_policy["oracle"]["per_job"], strict=True):
            assert best["emissions_g"] <= job["emissions_g"] * (1 + 1e-6) + 1e-3, (result["policy"], job)
    for figures in payload["savings"].values():
        assert figures["width_pct"] + figures["timing_pct"] == pytest.approx(figures["saving_pct"])
    assert all(r["deadlines_met"] == 3 for r in payload["results"])
    assert cli(["--trace", TRACE, "--jobs", jobs, "--compare", "--start", "2022-04-09T00:00Z"]) == 0
    table = capsys.readouterr().out
    assert "vs agnostic" in table and "of oracle" in table and "average signal" in table
    assert all(policy in table for policy in by_policy)


def test_plot_written(jobs: str, tmp_path: Path) -> None:
    out = tmp_path / "run.png"
    assert cli(["--trace", TRACE, "--jobs", jobs, "--start", "2022-04-09T00:00Z", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_provided_forecast_on_watttime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "- {name: a, submit_after_hours: 0, work_gpu_hours: 6, deadline_hours: 20, min_replicas: 1, "
        "max_replicas: 2, power_per_replica_watts: 400}\n"
    )
    argv = [
        "--trace",
        str(FIXTURES / "wt_caiso-north_2023-06-08_actual.csv"),
        "--jobs",
        str(path),
        "--json",
        "--forecast",
        "provided",
        "--forecast-file",
        str(FIXTURES / "wt_caiso-north_2023-06-08_forecast.csv"),
    ]
    assert cli(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["signal_type"] == "marginal" and out["forecast"] == "provided" and out["deadlines_met"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- {name: a}", "missing"),
        ("not: [valid", "not valid YAML"),
        (
            "- {name: a, work_gpu_hours: 1, deadline_hours: 5, min_replicas: 3, max_replicas: 1, "
            "power_per_replica_watts: 300}",
            "min_replicas",
        ),
        ("[]", "non-empty list"),
        (
            "- {name: a, submit: '2030-01-01T00:00Z', work_gpu_hours: 1, deadline_hours: 5, min_replicas: 1, "
            "max_replicas: 1, power_per_replica_watts: 300}",
            "outside the trace",
        ),
    ],
)
def test_bad_jobs_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert cli(["--trace", TRACE, "--jobs", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_bad_trace_and_missing_forecast_file_exit_2(
    jobs: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("what,is,this\n1,2,3\n4,5,6\n")
    assert cli(["--trace", str(bad), "--jobs", jobs]) == 2
    assert "unknown trace format" in capsys.readouterr().err
    assert cli(["--trace", str(tmp_path / "missing.csv"), "--jobs", jobs]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli(["--trace", TRACE, "--jobs", jobs, "--forecast", "provided"]) == 2
    assert "--forecast-file" in capsys.readouterr().err


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--compare" in text and "jobs-mix.yaml" in text
