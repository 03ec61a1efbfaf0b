"""Energy meters: NVML on GPUs, RAPL or a labelled estimate on CPUs, behind one small interface.

Every meter reports cumulative joules since it was opened; the loop reads it at window edges
after synchronising CUDA, because kernels are asynchronous and the counters are not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynvml

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class MeterUnavailable(RuntimeError):
    """This meter cannot measure here; the caller falls back to the next one."""


class EnergyMeter:
    """Base meter; `source` is the metric label (nvml | rapl | estimate) and must stay honest."""

    source = "estimate"
    device_label = "cpu"
    # dcgm-exporter's UUID label (NVML's GPU-... id); empty where no GPU is measured.
    uuid = ""

    def read_joules(self) -> float:
        raise NotImplementedError

    def power_watts(self) -> float | None:
        return None

    def utilization(self) -> float | None:
        return None

    def hardware(self) -> str:
        return cpu_model()

    def power_limit_watts(self) -> tuple[float, float, float] | None:
        """(current, min, max) where the device has a settable limit."""
        return None

    def set_power_limit_watts(self, watts: float) -> bool:
        return False

    def close(self) -> None:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlMeter(EnergyMeter):
    """GPU energy via NVML: the mJ total-energy counter on Volta+, else mW power polling integrated.

    MIG-enabled GPUs are refused: NVML (and DCGM) only see the whole GPU, so a slice would be billed
    for its neighbours' work.
    """

    source = "nvml"

    def __init__(
        self,
        index: int = 0,
        uuid: str | None = None,
        poll_interval_s: float = 0.1,
        start_thread: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML init failed: {exc}") from None
        try:
            self.handle = (
                pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid else pynvml.nvmlDeviceGetHandleByIndex(index)
            )
            self.name = _text(pynvml.nvmlDeviceGetName(self.handle))
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            raise MeterUnavailable(f"NVML cannot open GPU {uuid or index}: {exc}") from None
        self.device_label, self.uuid = str(index), uuid or ""
        # The same GPU as dcgm-exporter names it (UUID) and numbers it (NVML index, whatever CUDA calls it).
        with contextlib.suppress(pynvml.NVMLError):
            self.uuid = _text(pynvml.nvmlDeviceGetUUID(self.handle))
        with contextlib.suppress(pynvml.NVMLError):
            self.device_label = str(pynvml.nvmlDeviceGetIndex(self.handle))
        self._clock = clock
        self._lock = threading.Lock()
        try:
            current, _pending = pynvml.nvmlDeviceGetMigMode(self.handle)
            if current == pynvml.NVML_DEVICE_MIG_ENABLE:
                pynvml.nvmlShutdown()
                raise MeterUnavailable("MIG is enabled: NVML cannot attribute energy to a slice")
        except pynvml.NVMLError:
            pass  # NotSupported on GPUs without MIG
        self.mode = "poll"
        try:
            arch = pynvml.nvmlDeviceGetArchitecture(self.handle)
        except pynvml.NVMLError:
            arch = -1
        if arch >= pynvml.NVML_DEVICE_ARCH_VOLTA:
            try:
                self._start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
                self.mode = "counter"
            except pynvml.NVMLError as exc:
                log.warning("NVML energy counter unreadable (%s); integrating power samples instead", exc)
        self._joules = 0.0
        self._last_w: float | None = None
        self._last_t = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.mode == "poll":
            self.sample()
            if start_thread:
                self._thread = threading.Thread(target=self._poll, args=(poll_interval_s,), daemon=True)
                self._thread.start()
        log.info("energy: NVML %s on %s (arch %s)", self.mode, self.name, arch)

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sample()

    def sample(self) -> None:
        """One power reading (mW), integrated with the trapezoid rule; errors skip the sample."""
        try:
            watts = pynvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        except pynvml.NVMLError as exc:
            log.debug("power sample failed: %s", exc)
            return
        now = self._clock()
        with self._lock:
            if self._last_w is not None:
                self._joules += 0.5 * (watts + self._last_w) * (now - self._last_t)
            self._last_w, self._last_t = watts, now

    def read_joules(self) -> float:
        if self.mode == "counter":
            mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            return max(0.0, float(mj - self._start_mj) / 1000.0)
        self.sample()
        with self._lock:
            return self._joules

    def power_watts(self) -> float | None:
        try:
            return float(pynvml.nvmlDeviceGetPowerUsage(self.handle)) / 1000.0
        except pynvml.NVMLError:
            return None

    def utilization(self) -> float | None:
        try:
            return float(pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu) / 100.0
        except pynvml.NVMLError:
            return None

    def hardware(self) -> str:
        return self.name

    def power_limit_watts(self) -> tuple[float, float, float] | None:
        try:
            cur = pynvml.nvmlDeviceGetPowerManagementLimit(self.handle)
            lo, hi = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(self.handle)
        except pynvml.NVMLError:
            return None
        return cur / 1000.0, lo / 1000.0, hi / 1000.0

    def set_power_limit_watts(self, watts: float) -> bool:
        """Needs root/CAP_SYS_ADMIN; a permission error means 'not permitted', not a crash."""
        try:
            pynvml.nvmlDeviceSetPowerManagementLimit(self.handle, round(watts * 1000))
        except pynvml.NVMLError as exc:
            log.info("cannot set GPU power limit to %.0f W: %s", watts, exc)
            return False
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


_RAPL_PACKAGE = re.compile(r"^intel-rapl:\d+$")  # package domains only: sub-domains would double-count


class RaplMeter(EnergyMeter):
    """CPU package energy from powercap RAPL (µJ counters that wrap at max_energy_range_uj)."""

    source = "rapl"

    def __init__(self, root: Path = Path("/sys/class/powercap")) -> None:
        self.domains: list[tuple[Path, int]] = []
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if _RAPL_PACKAGE.match(d.name):
                    try:
                        int((d / "energy_uj").read_text())
                        rng = int((d / "max_energy_range_uj").read_text())
                    except (OSError, ValueError):
                        continue
                    self.domains.append((d, rng))
        if not self.domains:
            raise MeterUnavailable(f"no readable RAPL package domain under {root}")
        self._last = [self._raw(d) for d, _ in self.domains]
        self._joules = 0.0
        self._t = time.monotonic()
        self._power: float | None = None

    @staticmethod
    def _raw(d: Path) -> int:
        return int((d / "energy_uj").read_text())

    def read_joules(self) -> float:
        total_uj = 0
        for i, (d, rng) in enumerate(self.domains):
            now = self._raw(d)
            delta = now - self._last[i]
            if delta < 0:  # the counter wrapped
                delta += rng
            total_uj += delta
            self._last[i] = now
        t = time.monotonic()
        if t > self._t:
            self._power = total_uj / 1e6 / (t - self._t)
        self._t = t
        self._joules += total_uj / 1e6
        return self._joules

    def power_watts(self) -> float | None:
        return self._power


class EstimateMeter(EnergyMeter):
    """No counter readable: TDP x (0.1 + 0.9 x load^3) as CodeCarbon does, labelled `estimate`.

    load is this process's CPU time over wall time and cores, so it estimates what this job drew.
    """

    source = "estimate"

    def __init__(
        self,
        tdp_watts: float = 85.0,
        clock: Clock = time.monotonic,
        cpu_time: Callable[[], float] | None = None,
    ) -> None:
        self.tdp = tdp_watts
        self._clock = clock
        self._cpu_time = cpu_time or (lambda: sum(os.times()[:2]))
        self._ncpu = os.cpu_count() or 1
        self._t = clock()
        self._c = self._cpu_time()
        self._joules = 0.0
        self._power: float | None = None
        self._load: float | None = None

    def read_joules(self) -> float:
        t, c = self._clock(), self._cpu_time()
        dt = t - self._t
        if dt > 0:
            load = min(1.0, max(0.0, (c - self._c) / (dt * self._ncpu)))
            self._power = self.tdp * (0.1 + 0.9 * load**3)
            self._load = load
            self._joules += self._power * dt
            self._t, self._c = t, c
        return self._joules

    def power_watts(self) -> float | None:
        return self._power

    def utilization(self) -> float | None:
        return self._load


def node_name() -> str:
    """dcgm-exporter's Hostname label: the node (NODE_NAME, from the downward API), else this host."""
    return os.environ.get("NODE_NAME") or platform.node()


def cuda_uuid() -> str | None:
    """NVML handle for the GPU torch uses, so CUDA_VISIBLE_DEVICES remapping cannot mislead us."""
    import torch

    if not torch.cuda.is_available():
        return None
    uuid = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def open_meter(device_type: str, cpu_tdp_watts: float = 85.0, rapl_root: Path | None = None) -> EnergyMeter:
    """Best available meter: NVML for CUDA, then RAPL, then the estimate; each fallback is logged."""
    if device_type == "cuda":
        try:
            return NvmlMeter(uuid=cuda_uuid())
        except MeterUnavailable as exc:
            log.warning("GPU energy unmeasurable (%s); falling back to a CPU-side meter", exc)
    try:
        meter: EnergyMeter = RaplMeter(rapl_root or Path("/sys/class/powercap"))
        log.info("energy: RAPL package counters")
        return meter
    except MeterUnavailable as exc:
        log.info("energy: %s; using the estimate TDP %.0f W x (0.1 + 0.9 x load^3)", exc, cpu_tdp_watts)
    return EstimateMeter(cpu_tdp_watts)
