"""The run directory: where a run's files live, its summary, and listing the runs under a folder.

::

    <run>/
      config.yaml            the TrainConfig of the run
      metrics.jsonl          one JSON object per completed epoch
      summary.json           best validation accuracy, its epoch, the test accuracy there, final numbers, ...
      checkpoints/last/      the end of the last completed epoch (what --resume continues from)
      checkpoints/best/      the epoch with the best validation accuracy so far
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from convemerge.train.checkpoint import atomic_write_json
from convemerge.train.metrics import read_metrics


@dataclass(frozen=True)
class RunPaths:
    """Paths of the files of one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"


def best_record(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch record with the highest validation accuracy (earliest on ties), or None without validation."""
    best = None
    for rec in history:
        acc = rec.get("val_acc")
        if acc is None:
            continue
        if best is None or acc > best["val_acc"]:
            best = rec
    return best


def build_summary(
    history: list[dict[str, Any]],
    *,
    config: dict[str, Any],
    status: str,
    wall_time: float,
    command: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` record of a run from its epoch history."""
    best = best_record(history)
    last = history[-1] if history else {}
    final_keys = ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                  "nonzero_total", "first_layer_pr_median")
    summary = {
        "status": status,
        "model": config.get("model"),
        "alpha": config.get("alpha"),
        "dataset": config.get("dataset"),
        "optimizer": config.get("optimizer"),
        "epochs": config.get("epochs"),
        "epochs_done": last.get("epoch", 0),
        "best_val_acc": best["val_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "test_acc_at_best": best.get("test_acc") if best else None,
        "final": {k: last.get(k) for k in final_keys},
        "wall_time": wall_time,
        "command": command,
    }
    summary.update(extra or {})
    return summary


def write_summary(paths: RunPaths, summary: dict[str, Any]) -> None:
    atomic_write_json(paths.summary, summary)


def read_run(root: str | Path) -> dict[str, Any]:
    """What is known about one run directory: its summary, else one rebuilt from ``metrics.jsonl``."""
    paths = RunPaths(Path(root))
    try:
        config = yaml.safe_load(paths.config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    summary: dict[str, Any] | None = None
    try:
        summary = json.loads(paths.summary.read_text())
    except (OSError, ValueError):
        summary = None
    if summary is None:
        history = read_metrics(paths.metrics)
        wall = history[-1].get("wall_time", 0.0) if history else 0.0
        summary = build_summary(history, config=config, status="incomplete", wall_time=wall, command=None)
    summary["path"] = str(paths.root)
    return summary


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """Every run directory (a folder holding ``config.yaml``) at or below ``root``, sorted by path."""
    root = Path(root)
    if not root.exists():
        return []
    dirs = sorted({p.parent for p in root.rglob("config.yaml") if "checkpoints" not in p.relative_to(root).parts})
    return [read_run(d) for d in dirs]


def load_run_model(root: str | Path, which: str = "best"):
    """Rebuild a run's model from its ``which`` checkpoint ("best" or "last"), in eval mode, on the CPU.

    The architecture comes from the config and image geometry stored in the checkpoint, so the dataset is
    not needed. A run without validation has no "best": ask for "last".
    """
    from convemerge.errors import ConfigError
    from convemerge.models import create_model
    from convemerge.train.checkpoint import find_checkpoint, load_checkpoint

    if which not in ("best", "last"):
        raise ConfigError(f"which={which!r} is invalid: choose best or last")
    paths = RunPaths(Path(root))
    found = find_checkpoint(getattr(paths, which))
    if found is None:
        raise ConfigError(f"run {paths.root} has no complete '{which}' checkpoint; check the path or use which='last'")
    state = json.loads((found / "state.json").read_text())
    cfg, geo = state["config"], state["geometry"]
    model = create_model(cfg["model"], alpha=cfg.get("alpha"), image_size=_size(geo["image_size"]),
                         in_chans=geo["in_chans"], num_classes=geo["num_classes"], **(cfg.get("model_options") or {}))
    load_checkpoint(found, model)
    return model.eval()


def _size(value):
    return tuple(value) if isinstance(value, list) else value
