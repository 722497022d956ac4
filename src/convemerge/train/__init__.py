"""Training engine: ``TrainConfig`` (YAML round-trip), ``train(config) -> RunResult``, checkpoints, run dirs.

>>> from convemerge.train import TrainConfig, train
>>> result = train(TrainConfig(model="s-fc", alpha=2, dataset="digits", epochs=2, out="runs/x"))  # doctest: +SKIP
"""

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
