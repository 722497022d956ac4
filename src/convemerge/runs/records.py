"""Per-run records besides the training log: the analysis record (with its declared schema), Fig. 4 filters,
a job's error, a kernel machine's learned matrices.

``analysis.json`` is written once per finished training run (by the experiments' post-processing) and only
read by the report. Its keys are declared by :class:`AnalysisRecord`; :func:`write_analysis` refuses a record
that misses a required key, so the writer and the readers cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import torch

from convemerge.runs.atomic import atomic_write_json, atomic_write_text, read_json
from convemerge.runs.rundir import RunPaths

__all__ = ["AnalysisRecord", "ANALYSIS_REQUIRED", "write_analysis", "read_analysis", "has_analysis",
           "write_filters", "read_filters", "write_error", "clear_error", "write_kernel_matrices",
           "read_kernel_matrices"]


class MdlRecord(TypedDict, total=False):
    n: int  # weights of the dense model
    bits: int
    dense_bits: float
    sparse_bits: float
    delta: float
    dense_bound: float
    sparse_bound: float


class FiltersRecord(TypedDict):
    file: str  # file name of the filters, beside analysis.json
    count: int  # units drawn
    threshold: int  # minimum non-zero weights actually used
    requested_threshold: int  # the one asked for (lowered when too few units had it)
    shape: list[int]  # (C, H, W) of one filter


class AnalysisRecord(TypedDict, total=False):
    """The schema of ``analysis.json``. Required: checkpoint, epoch, train_error, m, weights, nonzero, mdl,
    seconds; ``locality`` and ``filters`` only for models with first-layer filters."""

    checkpoint: str  # "best" or "last": the weights analysed
    epoch: int | None  # that checkpoint's epoch
    train_error: float  # exact 0-1 error on the run's training split (the L_S of the Occam bounds)
    m: int  # training samples
    weights: dict[str, int]  # weights per weight layer
    nonzero: dict[str, int]  # non-zero weights per weight layer
    mdl: MdlRecord  # description lengths (bits) and both bounds, see convemerge.analysis.mdl
    locality: dict[str, Any]  # convemerge.analysis.spatial.locality_summary of the first layer
    filters: FiltersRecord
    seconds: float


_LEGACY_KERNEL_MATRICES = "metrics.safetensors"  # the name kernel runs used before: "metrics" is the epoch log

ANALYSIS_REQUIRED = ("checkpoint", "epoch", "train_error", "m", "weights", "nonzero", "mdl", "seconds")


def write_analysis(root: str | Path, record: AnalysisRecord) -> Path:
    missing = [k for k in ANALYSIS_REQUIRED if k not in record]
    if missing:
        raise ValueError(f"analysis record lacks {', '.join(missing)} (see AnalysisRecord)")
    path = RunPaths(root).analysis
    atomic_write_json(path, record)
    return path


def read_analysis(root: str | Path) -> AnalysisRecord | None:
    record = read_json(RunPaths(root).analysis)
    return record if isinstance(record, dict) else None


def has_analysis(root: str | Path) -> bool:
    return RunPaths(root).analysis.exists()


def write_filters(root: str | Path, filters: torch.Tensor, indices: torch.Tensor) -> str:
    """Save the drawn first-layer filters and their unit indices; returns the file name for the record."""
    from safetensors.torch import save_file

    path = RunPaths(root).filters
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"filters": filters.contiguous(), "indices": indices.contiguous()}, str(tmp))
    tmp.replace(path)
    return path.name


def read_filters(root: str | Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(filters, indices)`` saved by :func:`write_filters`, or None."""
    path = RunPaths(root).filters
    if not path.exists():
        return None
    from safetensors.torch import load_file

    t = load_file(str(path))
    return t["filters"], t["indices"]


def write_error(root: str | Path, text: str) -> None:
    atomic_write_text(RunPaths(root).error, text)


def clear_error(root: str | Path) -> None:
    RunPaths(root).error.unlink(missing_ok=True)


def write_kernel_matrices(root: str | Path, tensors: dict[str, torch.Tensor]) -> Path:
    """The learned Mahalanobis matrices of a kernel machine (``M`` or ``M_0``, ``M_1``, ...), atomically."""
    from safetensors.torch import save_file

    path = RunPaths(root).kernel_matrices
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)
    return path


def read_kernel_matrices(root: str | Path) -> dict[str, torch.Tensor] | None:
    """The matrices saved by :func:`write_kernel_matrices` (or under their former name, ``metrics.safetensors``,
    by runs made before the rename), or None."""
    paths = RunPaths(root)
    path = next((p for p in (paths.kernel_matrices, paths.root / _LEGACY_KERNEL_MATRICES) if p.is_file()), None)
    if path is None:
        return None
    from safetensors.torch import load_file

    return load_file(str(path))
