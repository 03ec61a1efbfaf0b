"""The operator <-> trainer contract in one stdlib-only module that both images ship.

The operator image has no torch and no `gridwise_trainer`; the trainer image installs the whole
`gridwise` distribution. So the numbers both sides must agree on live here, and docs/trainer-contract.md
describes them for trainers written by other people. CONTRACT_VERSION is "major.minor": the major
on any incompatible change, the minor when something is added that older trainers may ignore.
"""

from __future__ import annotations

from typing import Final

CONTRACT_VERSION: Final = "1.1"  # 1.1: the operator serves the grid signal (GRIDWISE_CARBON_URL)

# -- exit codes --------------------------------------------------------------------------------------
EXIT_COMPLETE: Final = 0
EXIT_CONFIG_ERROR: Final = 2
# A worker stopped only because a peer rank left; torchrun restarts it and the group re-forms.
EXIT_REFORM: Final = 75  # EX_TEMPFAIL (sysexits.h)
# Stopped early (SIGTERM/SIGINT: pause, scale-down, drain, eviction, preemption) after writing a
# checkpoint: the work is not done. Not 0 (that would complete the Job at partial progress), not 1
# (Python's uncaught exception), not 2 (usage), not 64-78 (sysexits.h), not 126/127 (shell) and not
# 128+N (killed by signal N, e.g. 137 SIGKILL, 143 SIGTERM without a handler). 85 is Linux's errno
# ERESTART ("should be restarted"), unused by Python, torchrun and the shells. The Job's
# podFailurePolicy ignores it, so the Job controller replaces the pod without counting a failure.
EXIT_EARLY_STOP: Final = 85

# -- environment the operator sets for the trainer -------------------------------------------------------
ENV_JOB_NAME: Final = "GRIDWISE_JOB_NAME"
ENV_CHECKPOINT_DIR: Final = "GRIDWISE_CHECKPOINT_DIR"
ENV_METRICS_PORT: Final = "GRIDWISE_METRICS_PORT"
ENV_TOTAL_STEPS: Final = "GRIDWISE_TOTAL_STEPS"
ENV_SIGNAL_TYPE: Final = "GRIDWISE_SIGNAL_TYPE"
# Set when the operator runs with --signal-url: its own reading for this job, SIGNAL_PATH below.
ENV_CARBON_URL: Final = "GRIDWISE_CARBON_URL"

# -- environment the user (pod template, image) may set; the operator never does ------------------------
ENV_CARBON_FILE: Final = "GRIDWISE_CARBON_FILE"
ENV_CARBON_INTENSITY: Final = "GRIDWISE_CARBON_INTENSITY"
ENV_CARBON_POLL_SECONDS: Final = "GRIDWISE_CARBON_POLL_SECONDS"

# -- the grid signal the operator serves (gridwise/job_signal.py) ----------------------------------------
# GET <signal base URL> + SIGNAL_PATH -> {"gramsPerKWh": x | null, "signalType", "stale", ...}
SIGNAL_PATH: Final = "/v1/signal/{namespace}/{name}"


def signal_url(base: str, namespace: str, name: str) -> str:
    """Where a job's trainer reads the operator's reading, from the operator's base URL."""
    return base.rstrip("/") + SIGNAL_PATH.format(namespace=namespace, name=name)


# -- metrics the operator scrapes (progress.py) and the dashboards read ------------------------------------
METRIC_PROGRESS: Final = "gridwise_trainer_progress_ratio"
METRIC_ENERGY: Final = "gridwise_trainer_gpu_energy_joules"  # a counter: exposed as *_total
METRIC_THROUGHPUT: Final = "gridwise_trainer_throughput_samples_per_second"
METRIC_EMISSIONS: Final = "gridwise_trainer_emissions_grams"  # a counter: exposed as *_total
METRIC_INTENSITY: Final = "gridwise_trainer_carbon_intensity_grams_per_kwh"
