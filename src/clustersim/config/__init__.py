"""Configuration: the typed schema, loading experiments (with overrides and sweeps), errors.

Import the schema from `clustersim.config.schema`; the loader API is re-exported here.
"""

from clustersim.config.errors import ConfigError
from clustersim.config.load import load_experiment, load_sweep, resolved_config
from clustersim.config.overrides import parse_override
from clustersim.config.schema import Experiment
from clustersim.config.sweep import SweepPoint, expand_sweep
from clustersim.config.yaml_files import load_raw_experiment

__all__ = [
    "ConfigError",
    "Experiment",
    "SweepPoint",
    "expand_sweep",
    "load_experiment",
    "load_raw_experiment",
    "load_sweep",
    "parse_override",
    "resolved_config",
]
