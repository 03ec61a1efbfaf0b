"""The pure planner: how many replicas to run in each slot so a job meets its deadline on clean power."""

from gridwise.planner.model import POLICIES, Plan, PlanRequest, PlanSlot
from gridwise.planner.plan import plan

__all__ = ["POLICIES", "Plan", "PlanRequest", "PlanSlot", "plan"]
