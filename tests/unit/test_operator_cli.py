"""`gridwise operator run --signal-url` (env GRIDWISE_SIGNAL_URL): the base URL trainers are told."""

from __future__ import annotations

from typing import Any

import pytest


def test_signal_url_flag_and_env_reach_the_operator_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import gridwise.k8s.runtime as runtime
    from gridwise.cli import build_parser, main

    seen: list[runtime.OperatorConfig] = []

    async def fake_run(config: runtime.OperatorConfig, stop: Any = None) -> None:
        seen.append(config)

    monkeypatch.setattr(runtime, "run_operator", fake_run)
    monkeypatch.delenv("GRIDWISE_SIGNAL_URL", raising=False)
    assert main(["operator", "run", "--no-leader-election"]) == 0
    assert seen[-1].signal_base is None, "off unless asked: trainers are not told a URL nobody serves"
    assert main(["operator", "run", "--signal-url", "http://gw.gridwise.svc:8080/"]) == 0
    assert seen[-1].signal_base == "http://gw.gridwise.svc:8080"
    monkeypatch.setenv("GRIDWISE_SIGNAL_URL", "http://from-env:8080")
    assert main(["operator", "run"]) == 0 and seen[-1].signal_base == "http://from-env:8080"
    for bad in ("gw:8080", "ftp://gw", "http://gw:8080/?x=1", "http://"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["operator", "run", "--signal-url", bad])


def test_demo_refuses_a_bad_start_before_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    from gridwise.cli import main

    with pytest.raises(SystemExit, match=r"--start 'noon' is not an ISO 8601 time"):
        main(["demo", "--start", "noon"])


def test_pause_write_hold_flag_reaches_the_operator_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gridwise.k8s.runtime as runtime
    from gridwise.cli import build_parser, main
    from gridwise.k8s.drains import HOLD_S

    seen: list[runtime.OperatorConfig] = []

    async def fake_run(config: runtime.OperatorConfig, stop: Any = None) -> None:
        seen.append(config)

    monkeypatch.setattr(runtime, "run_operator", fake_run)
    assert main(["operator", "run"]) == 0 and seen[-1].pause_write_hold_s == HOLD_S
    assert main(["operator", "run", "--pause-write-hold-seconds", "0"]) == 0
    assert seen[-1].pause_write_hold_s == 0.0, "0 turns the hold off"
    for flag, bad in [("--pause-write-hold-seconds", v) for v in ("-1", "nan", "soon")] + [
        ("--tick-seconds", v) for v in ("0", "nan")
    ]:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["operator", "run", flag, bad])
        assert flag in capsys.readouterr().err
