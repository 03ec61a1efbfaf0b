"""The README's `gridwise simulate` examples run as written from a fresh clone (issue 15, item 7)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """Every `gridwise simulate ...` command in README.md's sh blocks, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            if cmd.strip().startswith("gridwise simulate"):
                out.append(" ".join(cmd.split()))
    return out


def test_readme_has_simulate_examples() -> None:
    assert len(readme_commands()) >= 2


@pytest.mark.parametrize("command", readme_commands())
def test_readme_simulate_example_runs_on_shipped_files(command: str) -> None:
    args = shlex.split(command)[1:]
    for flag in ("--trace", "--forecast-file"):
        if flag in args:
            path = REPO / args[args.index(flag) + 1]
            assert path.is_file() and "shared" not in path.parts, (
                f"{command}: {path} is not in the repository"
            )
            assert path.is_relative_to(REPO / "operator" / "gridwise" / "data"), "ship it as package data"
    proc = subprocess.run(
        [sys.executable, "-m", "gridwise.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    if "--json" in args:
        report = json.loads(proc.stdout)
        assert report, proc.stdout
    else:
        assert "deadlines" in proc.stdout
