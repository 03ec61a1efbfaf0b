"""The simulate CLI end to end on a real trace slice: JSON shape, compare table, plot, bad input -> exit 2."""

from __future__ import annotations

import argparse
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gridwise.carbon.traces import Trace
from gridwise.simulate import SIM_POLICIES, SimJob, SimSettings, simulate
from gridwise.simulate.cli import add_parser, run
from gridwise.simulate.forecasts import ForecastSource

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
    assert cli(["--trace", TRACE, "--jobs", jobs, "--start", "last tuesday"]) == 2
    err = capsys.readouterr().err
    assert "--start 'last tuesday' is not an ISO 8601 time" in err and "Traceback" not in err


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--compare" in text and "jobs-mix.yaml" in text


WT_ACTUAL = str(FIXTURES / "wt_caiso-north_2023-06-08_actual.csv")
WT_FORECAST = FIXTURES / "wt_caiso-north_2023-06-08_forecast.csv"
ONE_JOB = (
    "- {name: a, submit_after_hours: 0, work_gpu_hours: 6, deadline_hours: 20, min_replicas: 1, "
    "max_replicas: 2, power_per_replica_watts: 400}\n"
)


def test_unknown_job_field_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "- {name: a, work_gpu_hours: 1, deadline_hours: 5, min_replicas: 1, max_replicas: 1, "
        "power_per_replica_watts: 300, scaling_eficiency: 0.9}"
    )
    assert cli(["--trace", TRACE, "--jobs", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'scaling_eficiency'" in err and "did you mean 'scaling_efficiency'" in err
    path.write_text("jobs: []\nextra: 1\n")
    assert cli(["--trace", TRACE, "--jobs", str(path)]) == 2
    assert "unknown top-level key 'extra'" in capsys.readouterr().err


def test_forecast_file_needs_forecast_provided(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(ONE_JOB)
    argv = ["--trace", WT_ACTUAL, "--jobs", str(jobs), "--forecast-file", str(WT_FORECAST)]
    assert cli(argv) == 2
    assert "--forecast-file is used only with --forecast provided" in capsys.readouterr().err


def test_forecast_file_for_another_region_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(ONE_JOB)
    other = tmp_path / "other.csv"
    lines = WT_FORECAST.read_text().splitlines()
    other.write_text("\n".join(["request_time,forecast_time,PJM_Chicago", *lines[1:200]]) + "\n")
    argv = [
        "--trace",
        WT_ACTUAL,
        "--jobs",
        str(jobs),
        "--forecast",
        "provided",
        "--forecast-file",
        str(other),
    ]
    assert cli(argv) == 2
    assert "region 'PJM_Chicago' but the trace is 'Caiso_North'" in capsys.readouterr().err


def test_forecast_file_that_runs_out_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(ONE_JOB)
    lines = WT_FORECAST.read_text().splitlines()
    # Forecasts issued up to 2023-06-10 12:00 only; the job runs 2023-06-10 00:00 .. 20:00.
    short = tmp_path / "short.csv"
    short.write_text("\n".join(line for line in lines if line < "2023-06-10 12" or line[0] == "r") + "\n")
    base = ["--trace", WT_ACTUAL, "--jobs", str(jobs), "--forecast", "provided", "--json"]
    assert cli([*base, "--forecast-file", str(short)]) == 0
    captured = capsys.readouterr()
    assert "warning: the forecast file covers" in captured.err and "only part of the run" in captured.err
    assert json.loads(captured.out)["warnings"][0].startswith("the forecast file covers")
    # A file that covers none of the run is an error, not a silent fallback.
    early = tmp_path / "early.csv"
    early.write_text("\n".join(line for line in lines if line < "2023-06-09" or line[0] == "r") + "\n")
    assert cli([*base, "--forecast-file", str(early)]) == 2
    assert "none of the run" in capsys.readouterr().err


@pytest.mark.parametrize("policy", ["agnostic", "forecast", "oracle", "stretch"])
def test_mid_slot_submit_is_decided_at_submit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str
) -> None:
    """Submitted at 05:30 with 4 h and exactly enough work for 4 h at max: must start at 05:30."""
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "- {name: tight, submit: '2022-04-10T05:30:00Z', deadline: '2022-04-10T09:30:00Z', "
        "work_gpu_hours: 7.85, min_replicas: 1, max_replicas: 2, power_per_replica_watts: 500}\n"
    )
    assert cli(["--trace", TRACE, "--jobs", str(path), "--policy", policy, "--json"]) == 0
    job = json.loads(capsys.readouterr().out)["per_job"][0]
    assert job["feasible"] and job["deadline_met"], job
    assert job["finish"] <= "2022-04-10T09:30:00+00:00"


def test_agnostic_needs_no_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(ONE_JOB)
    argv = ["--trace", TRACE, "--jobs", str(path), "--start", "2022-04-01T00:00Z"]
    assert cli([*argv, "--policy", "agnostic"]) == 0
    assert cli([*argv, "--policy", "stretch"]) == 0
    capsys.readouterr()
    assert cli([*argv, "--policy", "forecast"]) == 2
    assert "no trace history" in capsys.readouterr().err


def test_thirty_minute_trace_works_with_the_default_slot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = (FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv").read_text(encoding="utf-8").splitlines()
    out = [rows[0]]
    for row in rows[1:]:
        out += [row, row.replace(":00:00,", ":30:00,", 1)]
    half = tmp_path / "half.csv"
    half.write_text("\n".join(out) + "\n", encoding="utf-8")
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(ONE_JOB)
    assert cli(["--trace", str(half), "--jobs", str(jobs), "--start", "2022-04-09T00:00Z", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["deadlines_met"] == 1
    assert cli(["--trace", str(half), "--jobs", str(jobs), "--slot-minutes", "45"]) == 2
    assert "multiple of the trace step" in capsys.readouterr().err


def _synthetic(values: list[float]) -> Trace:
    return Trace(
        "XX", "average", "direct", datetime(2022, 1, 1, tzinfo=UTC), timedelta(hours=1), tuple(values), "x"
    )


SYNTH_JOBS = [
    SimJob(
        "long", datetime(2022, 1, 22, 3, tzinfo=UTC), datetime(2022, 1, 24, 3, tzinfo=UTC), 40, 1, 4, 500, 0.9
    ),
    SimJob(
        "mid", datetime(2022, 1, 22, 9, tzinfo=UTC), datetime(2022, 1, 23, 9, tzinfo=UTC), 12, 1, 2, 400, 0.95
    ),
    SimJob(
        "short", datetime(2022, 1, 22, 14, tzinfo=UTC), datetime(2022, 1, 22, 22, tzinfo=UTC), 3, 1, 1, 300
    ),
]


def _emissions(trace: Trace, policy: str) -> float:
    source = ForecastSource(trace, "ensemble")
    return simulate(
        trace, SYNTH_JOBS, SimSettings(policy=policy, slot=timedelta(hours=1)), source
    ).emissions_g


def test_unforecastable_grid_degrades_to_run_now() -> None:
    """White noise around a flat level: nothing to wait for. Never more than 2% worse than run-now."""
    rng = random.Random(11)
    trace = _synthetic([max(5.0, rng.gauss(300, 80)) for _ in range(24 * 26)])
    assert _emissions(trace, "forecast") <= 1.02 * _emissions(trace, "agnostic")


def test_forecastable_grid_gets_most_of_the_optimum() -> None:
    rng = random.Random(12)
    values = [300 + 200 * math.sin(2 * math.pi * h / 24) + rng.gauss(0, 10) for h in range(24 * 26)]
    trace = _synthetic(values)
    base, best = _emissions(trace, "agnostic"), _emissions(trace, "oracle")
    assert (base - _emissions(trace, "forecast")) >= 0.85 * (base - best)


def test_simulator_runs_the_operators_decide_and_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    from gridwise import accounting
    from gridwise.decide import decide
    from gridwise.simulate import operator_path

    decided: list[int] = []
    booked: list[float] = []
    real_decide, real_advance = decide, accounting.advance  # what operator_path imported and calls

    def spy_decide(*args: Any, **kwargs: Any) -> Any:
        decision = real_decide(*args, **kwargs)
        decided.append(decision.replicas)
        return decision

    def spy_advance(*args: Any, **kwargs: Any) -> Any:
        out = real_advance(*args, **kwargs)
        booked.append(out.emissions_grams)
        return out

    monkeypatch.setattr(operator_path, "decide", spy_decide)
    monkeypatch.setattr(accounting, "advance", spy_advance)  # the module operator_path calls
    trace = _synthetic([200 + 100 * math.sin(2 * math.pi * h / 24) for h in range(24 * 26)])
    for policy in ("agnostic", "threshold", "forecast"):
        decided.clear()
        booked.clear()
        source = ForecastSource(trace, "ensemble")
        result = simulate(trace, SYNTH_JOBS, SimSettings(policy=policy, slot=timedelta(hours=1)), source)
        # Every decision the simulator took is one decide() made, and every gram came from advance().
        assert [r for job in result.jobs for _, r in job.timeline] == decided
        assert booked and result.emissions_g > 0


def test_a_repaired_trace_runs_and_says_what_was_repaired(
    jobs: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The data portal's 2024 header, saved with a byte-order mark, with two hours lost mid-file.
    lines = Path(TRACE).read_text(encoding="utf-8").splitlines()
    header = (
        lines[0]
        .replace("Zone Id", "Zone id")
        .replace("Intensity", "intensity")
        .replace("(LCA)", "(Life cycle)")
    )
    path = tmp_path / "portal.csv"
    path.write_text("\ufeff" + "\n".join([header, *lines[1:200], *lines[202:]]) + "\n", encoding="utf-8")
    argv = ["--trace", str(path), "--jobs", jobs, "--policy", "forecast", "--start", "2022-04-09T00:00Z"]
    assert cli([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    warning = f"{path}: filled 2 missing step(s) in 1 hole(s) (longest 2:00:00) by linear interpolation"
    assert json.loads(captured.out)["warnings"][0].startswith(warning)
    assert f"gridwise simulate: warning: {warning}" in captured.err
