"""The seeds' carbon-aware loop (L = a*L_acc + b*E + c*C), made measurable: try, measure, keep or revert.

Each adaptation is run for one window and compared on energy per sample against a baseline window
measured just before it, under the same conditions. It is kept only if it saves at least
`min_gain`; otherwise it is reverted. The objective weights decide which knobs may be tried at all:

* pressure = (b + c*I/I_ref) / (a + b + c*I/I_ref), from the live intensity I;
* accuracy-neutral knobs (GPU power limit, dropping reduced precision that turned out to be no
  cheaper) are tried whenever b or c is positive;
* batch-size growth changes the optimisation, so it is tried only while pressure >= 0.5.

Trials compare energy per sample, which the carbon term scales by the same intensity, so a knob that
saves energy also saves carbon at that moment; what the weights buy is permission to try it. The
accuracy term is guarded directly: a trial whose mean training loss is non-finite or worse than the
baseline window's by more than `loss_tolerance` (relative, plus 0.01 absolute) is reverted however
cheap it was.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .config import Objective, Precision

log = logging.getLogger(__name__)

I_REF = 400.0  # g/kWh; scales the carbon weight so b and c are comparable at a typical grid


@dataclass(frozen=True)
class Knobs:
    batch_size: int
    precision: Precision | None = None  # None: the configured schedule; "none": forced fp32
    power_fraction: float = 1.0  # of the GPU's default limit; 1.0 leaves it alone


@dataclass
class Decision:
    step: int
    knob: str
    trial: str
    baseline_j_per_sample: float
    trial_j_per_sample: float
    baseline_loss: float
    trial_loss: float
    kept: bool


@dataclass
class ControllerState:
    committed: Knobs
    phase: str = "warmup"  # warmup -> baseline -> trial -> baseline ... -> settled
    candidate: Knobs | None = None
    candidate_knob: str = ""
    baseline_eps: float | None = None
    baseline_loss: float = math.inf
    exhausted: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


class CarbonController:
    """Pure decision logic (no torch, no clocks) so it is testable and its state fits in a checkpoint."""

    def __init__(
        self,
        objective: Objective,
        base: Knobs,
        max_batch_size: int,
        configured_precision: Precision,
        power_limit_settable: bool,
        min_gain: float = 0.03,
        enabled: bool = True,
        loss_tolerance: float = 0.10,
    ) -> None:
        self.objective = objective
        self.max_batch_size = max_batch_size
        self.configured_precision = configured_precision
        self.power_limit_settable = power_limit_settable
        self.min_gain = min_gain
        self.loss_tolerance = loss_tolerance
        self.enabled = enabled and (objective.energy > 0 or objective.carbon > 0)
        self.state = ControllerState(committed=base, phase="warmup" if self.enabled else "settled")

    @property
    def knobs(self) -> Knobs:
        """What the loop should run with right now (the candidate during a trial)."""
        if self.state.phase == "trial" and self.state.candidate is not None:
            return self.state.candidate
        return self.state.committed

    def pressure(self, intensity: float | None) -> float:
        a, b, c = self.objective.accuracy, self.objective.energy, self.objective.carbon
        env = b + c * ((intensity if intensity is not None else I_REF) / I_REF)
        return env / (a + env) if a + env > 0 else 0.0

    def _next_candidate(self, intensity: float | None) -> tuple[str, Knobs] | None:
        cur = self.state.committed
        done = self.state.exhausted
        if self.power_limit_settable and "power" not in done and cur.power_fraction > 0.7 + 1e-9:
            return "power", replace(cur, power_fraction=round(cur.power_fraction - 0.15, 2))
        if self.configured_precision != "none" and "precision" not in done and cur.precision is None:
            return "precision", replace(cur, precision="none")
        if (
            "batch" not in done
            and self.pressure(intensity) >= 0.5
            and cur.batch_size * 2 <= self.max_batch_size
        ):
            return "batch", replace(cur, batch_size=cur.batch_size * 2)
        return None

    def end_window(
        self, step: int, joules: float, samples: int, intensity: float | None, mean_loss: float = 0.0
    ) -> Knobs:
        """Feed one finished window; returns the knobs for the next one."""
        st = self.state
        if not self.enabled or st.phase == "settled" or samples <= 0:
            return self.knobs
        eps = joules / samples
        if st.phase == "warmup":  # first window pays one-off costs (allocation, caches); ignore it
            st.phase = "baseline"
        elif st.phase == "baseline":
            st.baseline_eps = eps
            st.baseline_loss = mean_loss
            nxt = self._next_candidate(intensity)
            if nxt is None:
                st.phase = "settled"
                log.info("carbon loop: no further adaptation to try; settled on %s", st.committed)
            else:
                st.candidate_knob, st.candidate = nxt
                st.phase = "trial"
                log.info("carbon loop: trying %s=%s against %.4g J/sample", nxt[0], nxt[1], eps)
        elif st.phase == "trial" and st.candidate is not None and st.baseline_eps is not None:
            cheaper = eps < st.baseline_eps * (1.0 - self.min_gain)
            loss_ok = math.isfinite(mean_loss) and (
                mean_loss <= st.baseline_loss * (1.0 + self.loss_tolerance) + 0.01
            )
            kept = cheaper and loss_ok
            st.decisions.append(
                Decision(
                    step,
                    st.candidate_knob,
                    str(st.candidate),
                    st.baseline_eps,
                    eps,
                    st.baseline_loss,
                    mean_loss,
                    kept,
                )
            )
            log.info(
                "carbon loop: %s %s: %.4g -> %.4g J/sample (%+.1f%%), loss %.4g -> %.4g%s",
                "kept" if kept else "reverted",
                st.candidate_knob,
                st.baseline_eps,
                eps,
                100.0 * (eps / st.baseline_eps - 1.0) if st.baseline_eps > 0 else 0.0,
                st.baseline_loss,
                mean_loss,
                "" if loss_ok else " (loss got worse)",
            )
            if kept:
                st.committed = st.candidate
                if st.candidate_knob == "precision":
                    st.exhausted.append("precision")
            else:
                st.exhausted.append(st.candidate_knob)
            st.candidate, st.candidate_knob = None, ""
            st.phase = "baseline"
        return self.knobs

    def state_dict(self) -> dict[str, Any]:
        st = self.state
        return {
            "committed": asdict(st.committed),
            "phase": st.phase,
            "exhausted": list(st.exhausted),
            "decisions": [asdict(d) for d in st.decisions],
        }

    def load_state_dict(self, raw: dict[str, Any]) -> None:
        """A trial cut off by a checkpoint is dropped: its window's energy died with the old process."""
        st = self.state
        st.committed = Knobs(**raw["committed"])
        phase = str(raw["phase"])
        st.phase = "baseline" if phase == "trial" else phase
        if not self.enabled:
            st.phase = "settled"
        st.exhausted = [str(x) for x in raw["exhausted"]]
        st.decisions = [Decision(**d) for d in raw["decisions"]]
        st.candidate, st.candidate_knob, st.baseline_eps = None, "", None
