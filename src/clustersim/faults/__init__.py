"""Faults and degraded hardware: what fails, when, and which GPUs and links it touches.

Owns the fault events of one run (scheduled in the experiment's `faults:` block or drawn
from per-component MTBF and repair-time distributions), their targets resolved against the
cluster's graph, and the time-ordered schedule the simulation applies. Pure: no simpy.
"""

from clustersim.faults.events import FaultEvent, FaultKind, FaultTargetError
from clustersim.faults.from_spec import fault_schedule
from clustersim.faults.random_failures import ComponentFailures, draw_failures
from clustersim.faults.schedule import FaultSchedule, ResolvedFault
from clustersim.faults.targets import resolve_target

__all__ = [
    "ComponentFailures",
    "FaultEvent",
    "FaultKind",
    "FaultSchedule",
    "FaultTargetError",
    "ResolvedFault",
    "draw_failures",
    "fault_schedule",
    "resolve_target",
]
