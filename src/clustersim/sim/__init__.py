"""The engine that builds and runs one experiment: build → check → simulate → collect.

Owns `build` / `run_experiment` and the run's tables (engine.py: RunOutput) and the named
random streams every run draws from (streams.py). Everything it runs lives below it: network/,
serving/, moe/, deployment/, disagg/.
"""

from clustersim.sim.engine import RunOutput, build, run_experiment
from clustersim.sim.streams import Streams

__all__ = ["RunOutput", "Streams", "build", "run_experiment"]
