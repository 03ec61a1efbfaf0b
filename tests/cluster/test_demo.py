"""`gridwise demo` end to end: its own local control plane, the real operator, the shipped trace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster


def test_demo_runs_a_job_to_completion_and_reports_its_savings(cluster: object) -> None:
    # `cluster` only makes sure the control-plane binaries exist (or fails with the build command).
    gridwise = str(Path(sys.executable).with_name("gridwise"))
    proc = subprocess.run(
        [gridwise, "demo", "--json", "--work", "6", "--complete-within", "30h", "--speed", "7200",
         "--timeout", "150"],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = proc.stdout
    table, summary = out[: out.index("{\n")], json.loads(out[out.index("{\n") :])
    assert "gCO2/kWh" in table and "Running" in table, table
    assert summary["phase"] == "Succeeded" and summary["progress"] == 1
    assert summary["signal_type"] == "average"
    assert summary["emissions_g"] > 0 and summary["baseline_emissions_g"] > 0
    # avoided = baseline (per unit of work) - actual: the two reported numbers must agree.
    assert summary["avoided_g"] == pytest.approx(
        summary["baseline_emissions_g"] - summary["emissions_g"], abs=1.0
    )
    assert summary["decisions"], "every pause, resume or scale is an Event with its reason"


def test_demo_rejects_a_missing_trace() -> None:
    gridwise = str(Path(sys.executable).with_name("gridwise"))
    proc = subprocess.run([gridwise, "demo", "--trace", "/nonexistent.csv"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "trace /nonexistent.csv does not exist" in proc.stderr
