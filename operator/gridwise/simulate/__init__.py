"""Trace-replay simulation of the planner: the evidence for what carbon-aware scheduling saves."""

from gridwise.simulate.engine import SIM_POLICIES, JobResult, SimResult, SimSettings, simulate
from gridwise.simulate.forecasts import FORECASTS, ForecastSource
from gridwise.simulate.jobs import JobsError, SimJob, load_jobs, parse_jobs

__all__ = [
    "FORECASTS",
    "SIM_POLICIES",
    "ForecastSource",
    "JobResult",
    "JobsError",
    "SimJob",
    "SimResult",
    "SimSettings",
    "load_jobs",
    "parse_jobs",
    "simulate",
]
