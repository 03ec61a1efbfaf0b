"""Energy meters. NVML is faked only at the pynvml boundary: autospec'd functions, real constants,
the real call sequence and real units (mJ for energy, mW for power)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import pynvml
import pytest

from gridwise_trainer.energy import EstimateMeter, MeterUnavailable, NvmlMeter, RaplMeter, open_meter

HANDLE = object()


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # NVMLError.__new__ returns the matching subclass


@pytest.fixture
def nvml() -> Iterator[dict[str, Any]]:
    """Patch every pynvml function the meter may call, with autospec so signatures are enforced."""
    names = [
        "nvmlInit",
        "nvmlShutdown",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetName",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetArchitecture",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetPowerManagementLimit",
        "nvmlDeviceGetPowerManagementLimitConstraints",
        "nvmlDeviceSetPowerManagementLimit",
    ]
    with ExitStack() as stack:
        fakes = {n: stack.enter_context(mock.patch.object(pynvml, n, autospec=True)) for n in names}
        fakes["nvmlInit"].return_value = None
        fakes["nvmlDeviceGetHandleByIndex"].return_value = HANDLE
        fakes["nvmlDeviceGetHandleByUUID"].return_value = HANDLE
        fakes["nvmlDeviceGetName"].return_value = "NVIDIA H100 80GB HBM3"
        fakes["nvmlDeviceGetMigMode"].side_effect = nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        fakes["nvmlDeviceGetArchitecture"].return_value = pynvml.NVML_DEVICE_ARCH_HOPPER
        fakes["nvmlDeviceGetUtilizationRates"].return_value = pynvml.c_nvmlUtilization_t(gpu=87, memory=40)
        fakes["nvmlDeviceGetPowerManagementLimit"].return_value = 700_000
        fakes["nvmlDeviceGetPowerManagementLimitConstraints"].return_value = (200_000, 700_000)
        yield fakes


def test_volta_plus_uses_energy_counter_in_millijoules(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetTotalEnergyConsumption"].side_effect = [5_000_000, 5_750_000, 6_000_000]
    nvml["nvmlDeviceGetPowerUsage"].return_value = 312_500
    meter = NvmlMeter(index=0, start_thread=False)
    assert meter.mode == "counter" and meter.source == "nvml" and meter.hardware() == "NVIDIA H100 80GB HBM3"
    assert meter.read_joules() == pytest.approx(750.0)  # (5_750_000 - 5_000_000) mJ
    assert meter.read_joules() == pytest.approx(1000.0)
    assert meter.power_watts() == pytest.approx(312.5)  # mW -> W
    assert meter.utilization() == pytest.approx(0.87)
    assert meter.power_limit_watts() == (700.0, 200.0, 700.0)
    nvml["nvmlInit"].assert_called_once_with()
    nvml["nvmlDeviceGetHandleByIndex"].assert_called_once_with(0)
    nvml["nvmlDeviceGetArchitecture"].assert_called_once_with(HANDLE)
    nvml["nvmlDeviceGetTotalEnergyConsumption"].assert_called_with(HANDLE)
    meter.close()
    nvml["nvmlShutdown"].assert_called_once_with()


def test_pre_volta_integrates_power_samples(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetArchitecture"].return_value = pynvml.NVML_DEVICE_ARCH_PASCAL
    nvml["nvmlDeviceGetPowerUsage"].side_effect = [100_000, 200_000, 200_000, 50_000]
    ticks = iter([0.0, 0.0, 1.0, 3.0, 4.0])
    meter = NvmlMeter(start_thread=False, clock=lambda: next(ticks))
    assert meter.mode == "poll"
    meter.sample()  # t=1: 100 W -> 200 W
    meter.sample()  # t=3: 200 W
    # trapezoid: 0.5*(100+200)*1 + 200*2 = 550 J; read_joules takes one more sample (t=4: 50 W)
    assert meter.read_joules() == pytest.approx(550.0 + 0.5 * (200 + 50) * 1)
    nvml["nvmlDeviceGetTotalEnergyConsumption"].assert_not_called()


def test_counter_permission_error_falls_back_to_polling(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetTotalEnergyConsumption"].side_effect = nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
    nvml["nvmlDeviceGetPowerUsage"].return_value = 100_000
    meter = NvmlMeter(start_thread=False)
    assert meter.mode == "poll"


def test_mig_enabled_is_refused_and_open_meter_falls_back(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetMigMode"].side_effect = None
    nvml["nvmlDeviceGetMigMode"].return_value = (pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE)
    with pytest.raises(MeterUnavailable, match="MIG"):
        NvmlMeter(start_thread=False)
    meter = open_meter("cuda", rapl_root=Path("/nonexistent"))
    assert meter.source == "estimate"


def test_no_driver_falls_back_to_labelled_estimate(nvml: dict[str, Any]) -> None:
    nvml["nvmlInit"].side_effect = nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    meter = open_meter("cuda", rapl_root=Path("/nonexistent"))
    assert isinstance(meter, EstimateMeter) and meter.source == "estimate"


def test_handle_permission_error_is_unavailable(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetHandleByIndex"].side_effect = nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(MeterUnavailable, match="cannot open GPU"):
        NvmlMeter(start_thread=False)


def test_power_limit_without_permission_is_not_a_crash(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetTotalEnergyConsumption"].return_value = 0
    nvml["nvmlDeviceSetPowerManagementLimit"].side_effect = nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
    meter = NvmlMeter(start_thread=False)
    assert meter.set_power_limit_watts(595.0) is False
    nvml["nvmlDeviceSetPowerManagementLimit"].assert_called_once_with(HANDLE, 595_000)  # W -> mW


def _rapl(root: Path, name: str, energy: int, max_range: int) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


def test_rapl_handles_wraparound_and_ignores_subdomains(tmp_path: Path) -> None:
    pkg = _rapl(tmp_path, "intel-rapl:0", 999_000_000, 1_000_000_000)
    _rapl(tmp_path, "intel-rapl:0:0", 5, 1_000_000_000)  # core sub-domain: would double-count
    meter = RaplMeter(tmp_path)
    (pkg / "energy_uj").write_text("1_000_000".replace("_", ""))  # wrapped past max
    assert meter.read_joules() == pytest.approx(2.0)  # 1e6 uJ to the wrap + 1e6 uJ after it
    assert meter.source == "rapl" and len(meter.domains) == 1


def test_unreadable_rapl_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable):
        RaplMeter(tmp_path)


def test_estimate_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    clock = iter([0.0, 10.0, 20.0])
    cpu = iter([0.0, 20.0, 30.0])  # 20 s CPU in 10 s on 2 cores = load 1; then load 0.5
    meter = EstimateMeter(tdp_watts=100.0, clock=lambda: next(clock), cpu_time=lambda: next(cpu))
    assert meter.read_joules() == pytest.approx(100.0 * 10)
    assert meter.read_joules() == pytest.approx(1000.0 + 100.0 * (0.1 + 0.9 * 0.5**3) * 10)
    assert meter.source == "estimate"
