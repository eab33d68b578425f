"""Results: run directories, atomic file writes, sweep tables."""

from clustersim.results.writer import new_run_dir, write_run, write_sweep_table

__all__ = ["new_run_dir", "write_run", "write_sweep_table"]
