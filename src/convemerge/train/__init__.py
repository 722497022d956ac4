"""Training engine: ``TrainConfig`` (YAML round-trip), ``train(config) -> RunResult``, checkpoints, run dirs.

>>> from convemerge.train import TrainConfig, train
>>> result = train(TrainConfig(model="s-fc", alpha=2, dataset="digits", epochs=2, out="runs/x"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the names below are; at run time each is imported on first use (see __getattr__)
    from convemerge.runs import (
        MetricsLog,
        RunPaths,
        find_checkpoint,
        list_runs,
        load_checkpoint,
        load_run_model,
        read_metrics,
        read_run,
        save_checkpoint,
    )
    from convemerge.train.config import TrainConfig, merge_overrides
    from convemerge.train.loop import RunResult, train
    from convemerge.train.setup import derived_seed, pad_batch, prepare_data

# name -> the module that defines it. Imported on first use, so reading ``convemerge.train.config`` (the CLI
# builds ``convemerge train``'s options from it at start-up) does not load torch.
_EXPORTS = {
    **dict.fromkeys(("MetricsLog", "RunPaths", "find_checkpoint", "list_runs", "load_checkpoint", "load_run_model",
                     "read_metrics", "read_run", "save_checkpoint"), "convemerge.runs"),
    "TrainConfig": "convemerge.train.config", "merge_overrides": "convemerge.train.config",
    "RunResult": "convemerge.train.loop", "train": "convemerge.train.loop",
    "derived_seed": "convemerge.train.setup", "pad_batch": "convemerge.train.setup",
    "prepare_data": "convemerge.train.setup",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

__all__ = [
    "MetricsLog",
    "RunPaths",
    "RunResult",
    "TrainConfig",
    "find_checkpoint",
    "list_runs",
    "load_checkpoint",
    "load_run_model",
    "merge_overrides",
    "derived_seed",
    "pad_batch",
    "prepare_data",
    "read_metrics",
    "read_run",
    "save_checkpoint",
    "train",
]
