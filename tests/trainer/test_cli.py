"""The CLI teaches with --help, maps env vars, and rejects bad config in one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridwise_trainer.cli import OPTIONS, config_from, main
from gridwise_trainer.config import ConfigError
from gridwise_trainer.label import CarbonLabel


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for needle in (
        "GRIDWISE_CHECKPOINT_DIR",
        "GRIDWISE_TOTAL_STEPS",
        "GRIDWISE_COMPRESSION",
        "GRIDWISE_OBJECTIVE",
        "GRIDWISE_METRICS_PORT",
        "GRIDWISE_CARBON_INTENSITY",
        "GRIDWISE_CARBON_URL",
        "GRIDWISE_SIGNAL_TYPE",
        "GRIDWISE_JOB_NAME",
        "SIGTERM",
        "exit codes",
        "int8-dynamic",
    ):
        assert needle in out


def test_env_and_flags(tmp_path: Path) -> None:
    env = {
        "GRIDWISE_CHECKPOINT_DIR": str(tmp_path),
        "GRIDWISE_TOTAL_STEPS": "500",
        "GRIDWISE_COMPRESSION": '{"mixedPrecision": "bf16", "pruning": {"enabled": true, "amount": 0.3}}',
        "GRIDWISE_OBJECTIVE": '{"accuracy": 1, "energy": 0.5, "carbon": 2}',
        "GRIDWISE_METRICS_PORT": "9500",
        "GRIDWISE_CARBON_INTENSITY": "180",
        "GRIDWISE_SIGNAL_TYPE": "marginal",
        "GRIDWISE_JOB_NAME": "resnet-night",
    }
    cfg = config_from([], env)
    assert (cfg.total_steps, cfg.metrics_port, cfg.carbon_intensity, cfg.signal_type, cfg.job_name) == (
        500,
        9500,
        180.0,
        "marginal",
        "resnet-night",
    )
    assert cfg.compression.mixed_precision == "bf16" and cfg.compression.pruning.amount == 0.3
    assert cfg.objective.carbon == 2
    assert config_from(["--total-steps", "7", "--metrics-port", "off"], env).total_steps == 7
    assert config_from(["--metrics-port", "off"], env).metrics_port is None
    assert all(o.env and o.env.startswith("GRIDWISE_") for o in OPTIONS)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "--checkpoint-dir (or GRIDWISE_CHECKPOINT_DIR) is required"),
        ({"GRIDWISE_TOTAL_STEPS": "ten"}, "GRIDWISE_TOTAL_STEPS='ten' is invalid"),
        ({"GRIDWISE_TOTAL_STEPS": "0"}, "total steps must be >= 1"),
        ({"GRIDWISE_COMPRESSION": "{bad"}, "GRIDWISE_COMPRESSION is not valid JSON"),
        ({"GRIDWISE_COMPRESSION": '{"pruning": {"enabled": true, "amount": 0.95}}'}, "within [0.0, 0.9]"),
        ({"GRIDWISE_COMPRESSION": '{"mixedPrecision": "fp8"}'}, "mixedPrecision must be one of"),
        ({"GRIDWISE_COMPRESSION": '{"prunning": {}}'}, "unknown key(s) ['prunning']"),
        ({"GRIDWISE_OBJECTIVE": '{"accuracy": 0}'}, "at least one positive weight"),
        ({"GRIDWISE_SIGNAL_TYPE": "median"}, "signal type must be one of"),
        ({"GRIDWISE_METRICS_PORT": "99999"}, "metrics port must be 0..65535"),
        ({"WORLD_SIZE": "2", "RANK": "1"}, "needs torchrun"),
    ],
)
def test_bad_config_is_one_line_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    message: str,
) -> None:
    for o in OPTIONS:
        if o.env:
            monkeypatch.delenv(o.env, raising=False)
    if "GRIDWISE_CHECKPOINT_DIR" not in str(message):
        monkeypatch.setenv("GRIDWISE_CHECKPOINT_DIR", str(tmp_path))
        monkeypatch.setenv("GRIDWISE_TOTAL_STEPS", "10")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("gridwise-trainer: error: ")
    assert message in err


def test_unknown_flag_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_config_error_type() -> None:
    with pytest.raises(ConfigError):
        config_from(["--checkpoint-dir", "/tmp/x", "--total-steps", "5", "--model", "vit"], {})


def test_label_files_and_green_score(tmp_path: Path) -> None:
    label = CarbonLabel(
        job="j",
        energy_joules=7.2e6,
        energy_source="nvml",
        emissions_grams=400.0,
        intensity_grams_per_kwh=200.0,
        signal_type="marginal",
        hardware="NVIDIA H100",
        accuracy=0.9,
        parameters=10,
        model_bytes=100,
        flops_per_sample=20,
        compression={},
        steps=1,
        samples=2,
    )
    js, md = label.write(tmp_path)
    data = js.read_text()
    assert '"energy_kwh": 2.0' in data
    assert label.green_score == pytest.approx(0.9 / 0.4)  # accuracy per kg CO2
    assert "Green Score" in md.read_text() and "marginal" in md.read_text()
