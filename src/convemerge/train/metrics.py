"""Moved to :mod:`convemerge.runs.metrics` (the owner of run directories); kept so old imports work."""

from convemerge.runs.metrics import MetricsLog, read_metrics

__all__ = ["MetricsLog", "read_metrics"]
