"""The per-model carbon label (seed 002) with the Green Score = accuracy / CO2 kg (seed 003)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CarbonLabel:
    job: str
    energy_joules: float
    energy_source: str  # nvml | rapl | estimate: an estimate is never presented as a measurement
    emissions_grams: float | None
    intensity_grams_per_kwh: float | None  # energy-weighted mean of the readings used
    signal_type: str
    hardware: str
    accuracy: float | None
    parameters: int
    model_bytes: int
    flops_per_sample: int
    compression: dict[str, Any]
    steps: int
    samples: int
    quantized: dict[str, Any] | None = None
    adaptations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def energy_kwh(self) -> float:
        return self.energy_joules / 3.6e6

    @property
    def green_score(self) -> float | None:
        """accuracy per kg CO2; undefined without an intensity or with zero emissions."""
        if self.accuracy is None or not self.emissions_grams:
            return None
        return self.accuracy / (self.emissions_grams / 1000.0)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["energy_kwh"] = self.energy_kwh
        out["green_score_accuracy_per_kg_co2"] = self.green_score
        return out

    def to_markdown(self) -> str:
        def fmt(v: float | None, spec: str) -> str:
            return "n/a" if v is None else format(v, spec)

        est = (
            " (estimate: TDP x (0.1 + 0.9 x load^3), not a measurement)"
            if self.energy_source == "estimate"
            else ""
        )
        rows = [
            (
                "Energy",
                f"{self.energy_joules:.1f} J = {self.energy_kwh:.6f} kWh, source `{self.energy_source}`{est}",
            ),
            ("Emissions", f"{fmt(self.emissions_grams, '.4f')} g CO2e"),
            (
                "Carbon intensity used",
                f"{fmt(self.intensity_grams_per_kwh, '.1f')} g/kWh ({self.signal_type})",
            ),
            ("Hardware", self.hardware),
            ("Accuracy (held-out)", fmt(self.accuracy, ".4f")),
            ("Parameters", f"{self.parameters:,}"),
            ("Model size (state_dict)", f"{self.model_bytes:,} bytes"),
            ("FLOPs per sample (forward)", f"{self.flops_per_sample:,}"),
            ("Green Score (accuracy / kg CO2)", fmt(self.green_score, ".1f")),
            ("Steps / samples", f"{self.steps:,} / {self.samples:,}"),
            ("Compression", f"`{json.dumps(self.compression)}`"),
        ]
        if self.quantized:
            rows.append(("int8 export", ", ".join(f"{k}={v}" for k, v in self.quantized.items())))
        lines = [f"# Carbon label: {self.job}", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        if self.adaptations:
            lines += [
                "",
                "## Carbon-loop adaptations",
                "",
                "| step | knob | J/sample before | after | kept |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {a['step']} | {a['knob']} | {a['baseline_j_per_sample']:.4g} "
                f"| {a['trial_j_per_sample']:.4g} | {a['kept']} |"
                for a in self.adaptations
            ]
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = (directory / "carbon-label.json", directory / "carbon-label.md")
        for path, text in zip(
            paths, (json.dumps(self.to_json(), indent=2) + "\n", self.to_markdown()), strict=True
        ):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return paths
