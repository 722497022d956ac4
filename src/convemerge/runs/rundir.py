"""The run directory: the one place that names the files inside it, its status values, its summary.

::

    <runs>/<experiment>/manifest.json   the recipe and jobs of one experiment (written by ``reproduce``)
    <run>/
      config.yaml            the TrainConfig of the run
      metrics.jsonl          one JSON object per completed epoch
      summary.json           status, best validation accuracy, its epoch, the test accuracy there, final numbers, ...
      checkpoints/last/      the end of the last completed epoch (what --resume continues from)
      checkpoints/best/      the epoch with the best validation accuracy so far
      analysis.json          the per-run analysis record (schema: :class:`convemerge.runs.records.AnalysisRecord`)
      filters.safetensors    the first-layer filters drawn for Fig. 4
      error.txt              the error of a job that raised (removed when it is run again)

A callable job (a kernel machine, a (C)NFA analysis) writes ``summary.json`` too, and its own files:
``kernel_matrices.safetensors`` (the learned Mahalanobis matrices M) or ``cnfa.json`` with its pictures.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from convemerge.runs.atomic import atomic_write_json, read_json
from convemerge.runs.metrics import read_metrics

#: file name of an experiment's manifest, ``<runs>/<experiment>/manifest.json``
EXPERIMENT_MANIFEST = "manifest.json"


class RunStatus(str, enum.Enum):
    """The ``status`` of a ``summary.json``.

    *Final* statuses end a run: a rerun skips it. ``diverged`` is final (rerunning would diverge again), and so
    is ``skipped`` (an analysis with nothing to analyse). ``failed`` is *not* final: the job raised (a bug, a
    missing file) and a rerun tries again; the runner, model selection and the report all read it that way.
    """

    COMPLETED = "completed"
    DIVERGED = "diverged"
    SKIPPED = "skipped"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    INCOMPLETE = "incomplete"  # rebuilt from metrics.jsonl: no summary was written
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: statuses of a run that may go on (everything else, unknown values included, is final)
NOT_FINAL = frozenset({RunStatus.RUNNING.value, RunStatus.INTERRUPTED.value, RunStatus.INCOMPLETE.value,
                       RunStatus.FAILED.value})


def is_final(status: str | None) -> bool:
    """Whether a summary ``status`` ends its run (None: no summary)."""
    return status is not None and str(status) not in NOT_FINAL


@dataclass(frozen=True)
class RunPaths:
    """Paths of the files of one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

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

    def checkpoint(self, which: str) -> Path:
        """The ``best`` or ``last`` checkpoint directory."""
        if which not in ("best", "last"):
            from convemerge.errors import ConfigError

            raise ConfigError(f"which={which!r} is invalid: choose best or last")
        return self.checkpoints / which

    @property
    def analysis(self) -> Path:
        return self.root / "analysis.json"

    @property
    def filters(self) -> Path:
        return self.root / "filters.safetensors"

    @property
    def error(self) -> Path:
        return self.root / "error.txt"

    @property
    def kernel_matrices(self) -> Path:
        """The learned Mahalanobis matrices of a kernel-machine run (keys ``M`` or ``M_0``, ``M_1``, ...)."""
        return self.root / "kernel_matrices.safetensors"

    @property
    def cnfa(self) -> Path:
        """The record of a (C)NFA report written into this folder (its pictures sit beside it)."""
        return self.root / "cnfa.json"

    @property
    def export(self) -> Path:
        """Where ``convemerge export`` writes by default."""
        return self.root / "export"


def manifest_path(runs_root: str | Path, experiment: str) -> Path:
    """``<runs_root>/<experiment>/manifest.json``."""
    return Path(runs_root) / experiment / EXPERIMENT_MANIFEST


def experiment_manifests(runs_root: str | Path) -> list[Path]:
    """Every experiment manifest directly under a runs folder, sorted."""
    return sorted(Path(runs_root).glob(f"*/{EXPERIMENT_MANIFEST}"))


def read_summary(root: str | Path) -> dict[str, Any] | None:
    """A run's ``summary.json`` (None when absent, torn or not an object)."""
    summary = read_json(RunPaths(root).summary)
    return summary if isinstance(summary, dict) else None


def run_status(root: str | Path) -> str | None:
    """The ``status`` of a run's ``summary.json`` (None when absent or torn; ``completed`` when unstated)."""
    summary = read_summary(root)
    return None if summary is None else summary.get("status", RunStatus.COMPLETED.value)


def is_finished(root: str | Path) -> bool:
    """Whether ``root`` holds a final ``summary.json`` (see :class:`RunStatus`)."""
    return is_final(run_status(root))


def has_checkpoints(root: str | Path) -> bool:
    """Whether a run directory holds a config and a checkpoints folder: an interrupted run to resume."""
    paths = RunPaths(root)
    return paths.config.exists() and paths.checkpoints.exists()


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
        "test_acc_last": last.get("test_acc"),  # the last epoch's (what reproductions that stop there report)
        "final": {k: last.get(k) for k in final_keys},
        "wall_time": wall_time,
        "command": command,
    }
    summary.update(extra or {})
    return summary


def write_summary(paths: RunPaths | str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` (atomically; NaN stored as null)."""
    paths = paths if isinstance(paths, RunPaths) else RunPaths(Path(paths))
    atomic_write_json(paths.summary, summary)


def read_run(root: str | Path) -> dict[str, Any]:
    """What is known about one run directory: its summary, else one rebuilt from ``metrics.jsonl``."""
    paths = RunPaths(Path(root))
    try:
        config = yaml.safe_load(paths.config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    summary = read_summary(paths.root)
    if summary is None:
        history = read_metrics(paths.metrics)
        wall = history[-1].get("wall_time", 0.0) if history else 0.0
        summary = build_summary(history, config=config, status=RunStatus.INCOMPLETE.value, wall_time=wall, command=None)
    summary["path"] = str(paths.root)
    return summary


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """Every run directory (a folder holding ``config.yaml``) at or below ``root``, sorted by path."""
    root = Path(root)
    if not root.exists():
        return []
    dirs = sorted({p.parent for p in root.rglob("config.yaml") if "checkpoints" not in p.relative_to(root).parts})
    return [read_run(d) for d in dirs]


def read_state(root: str | Path, which: str = "best", *, fallback: bool = False) -> dict[str, Any]:
    """The ``state.json`` of a run's ``which`` checkpoint ("best" or "last"): config, geometry, epoch, history.

    ``fallback``: a run without validation has no "best"; take "last" then. The record gets ``checkpoint``:
    the one read. ConfigError (one line) when the run or the checkpoint is missing.
    """
    from convemerge.errors import ConfigError
    from convemerge.runs.checkpoint import find_checkpoint, read_checkpoint_state

    paths = RunPaths(Path(root))
    if not paths.root.is_dir():
        raise ConfigError(f"run directory {paths.root} not found; pass the --out folder of a training run")
    found = find_checkpoint(paths.checkpoint(which))
    if found is None and fallback and which == "best":
        found, which = find_checkpoint(paths.last), "last"
    if found is None:
        raise ConfigError(f"run {paths.root} has no complete '{which}' checkpoint; train it first, resume it with "
                          f"--resume, or use which='last'")
    state = read_checkpoint_state(found)
    state["checkpoint"] = which
    return state


def load_run_model(root: str | Path, which: str = "best", *, fallback: bool = False):
    """A run's model in eval mode on the CPU: the ``best`` or ``last`` checkpoint's weights, or ``init``, the
    weights it had before its first step (rebuilt by :func:`convemerge.runs.model.init_model`).

    The architecture comes from the config and image geometry stored in the checkpoint, so the dataset is
    not needed. A run without validation has no "best": ask for "last" (or pass ``fallback=True``).
    """
    from convemerge.errors import ConfigError
    from convemerge.runs.checkpoint import load_checkpoint
    from convemerge.runs.model import create_run_model, init_model

    if which not in ("best", "last", "init"):
        raise ConfigError(f"which={which!r} is invalid: choose best, last or init")
    if which == "init":
        state = read_state(root, "best", fallback=True)  # any checkpoint: they share the config
        return init_model(state["config"], state["geometry"], keep_rng=True).eval()
    state = read_state(root, which, fallback=fallback)
    model = create_run_model(state["config"], state["geometry"])
    load_checkpoint(RunPaths(Path(root)).checkpoint(state["checkpoint"]), model)
    return model.eval()
