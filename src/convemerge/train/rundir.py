"""Moved to :mod:`convemerge.runs.rundir` (the owner of run directories); kept so old imports work."""

from convemerge.runs.rundir import RunPaths, best_record, build_summary, list_runs, load_run_model, read_run, write_summary

__all__ = ["RunPaths", "best_record", "build_summary", "list_runs", "load_run_model", "read_run", "write_summary"]
