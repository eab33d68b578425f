"""Metrics: the recorder's tables → summary numbers (pure, no file I/O)."""

from clustersim.metrics.summary import summarize

__all__ = ["summarize"]
