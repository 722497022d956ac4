"""The one owner of run directories: their layout, status values, atomic records, and a run's model.

No other module names a file inside a run directory; it asks :class:`RunPaths` (or a reader/writer here).

- :mod:`~convemerge.runs.rundir` — ``RunPaths``, ``RunStatus`` and ``is_final``, summaries, listing runs,
  ``read_state`` and ``load_run_model(root, "best" | "last" | "init")``
- :mod:`~convemerge.runs.atomic` — atomic file writes; ``json_safe`` (NaN -> null), the one JSON conversion
- :mod:`~convemerge.runs.checkpoint` — checkpoint directories (safetensors + JSON, swapped in atomically)
- :mod:`~convemerge.runs.metrics` — the per-epoch log ``metrics.jsonl``
- :mod:`~convemerge.runs.records` — ``analysis.json`` (schema ``AnalysisRecord``), filters, error, kernel matrices
- :mod:`~convemerge.runs.model` — ``init_model``: a run's initial weights, defined once

It sits between ``optim`` and ``train`` in the dependency order: it may build models, never train them.
"""

from convemerge.runs.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, json_safe, read_json
from convemerge.runs.checkpoint import find_checkpoint, load_checkpoint, read_checkpoint_state, save_checkpoint
from convemerge.runs.metrics import MetricsLog, read_metrics
from convemerge.runs.model import create_run_model, init_model
from convemerge.runs.records import (
    ANALYSIS_REQUIRED,
    AnalysisRecord,
    clear_error,
    has_analysis,
    read_analysis,
    read_filters,
    read_kernel_matrices,
    write_analysis,
    write_error,
    write_filters,
    write_kernel_matrices,
)
from convemerge.runs.rundir import (
    EXPERIMENT_MANIFEST,
    NOT_FINAL,
    RunPaths,
    RunStatus,
    best_record,
    build_summary,
    experiment_manifests,
    has_checkpoints,
    is_final,
    is_finished,
    list_runs,
    load_run_model,
    manifest_path,
    read_run,
    read_state,
    read_summary,
    run_status,
    write_summary,
)

__all__ = [
    "ANALYSIS_REQUIRED", "AnalysisRecord", "EXPERIMENT_MANIFEST", "MetricsLog", "NOT_FINAL", "RunPaths", "RunStatus",
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "best_record", "build_summary", "clear_error",
    "create_run_model", "experiment_manifests", "find_checkpoint", "has_analysis", "has_checkpoints", "init_model",
    "is_final", "is_finished", "json_safe", "list_runs", "load_checkpoint", "load_run_model", "manifest_path",
    "read_analysis", "read_checkpoint_state", "read_filters", "read_json", "read_kernel_matrices", "read_metrics",
    "read_run", "read_state", "read_summary", "run_status", "save_checkpoint", "write_analysis", "write_error",
    "write_filters", "write_kernel_matrices", "write_summary",
]
