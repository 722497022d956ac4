"""Callable jobs of the ``cnfa`` recipe: the (C)NFA report of one finished training run.

:func:`cnfa_job` is listed in a recipe with ``CallableSpec(..., per_run=(arm, ...))``: the runner calls it once
per training run of those arms, after that run has finished, as ``cnfa_job(out=<job dir>, run=<run id>,
dataset=..., seed=..., **kwargs)``. It finds the run directory beside its own (or, for a run shared with another
experiment, under that experiment), writes :func:`~convemerge.experiments.cnfa.run.cnfa_for_run`'s files into
``out`` and a ``summary.json`` holding the table, the convergence records and the run's accuracies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convemerge.errors import ConfigError
from convemerge.runs import RunStatus, read_summary, write_summary

__all__ = ["cnfa_job", "find_run_dir"]


def find_run_dir(out: str | Path, run: str) -> Path:
    """The run directory ``run`` next to the job folder ``out``, else a finished one of that id in a sibling
    experiment folder (identical configurations run once and are linked)."""
    out = Path(out)
    here = out.parent / run
    if read_summary(here) is not None:
        return here
    for cand in sorted(out.parent.parent.glob(f"*/{run}")):
        if read_summary(cand) is not None:
            return cand
    raise ConfigError(f"training run {run} not found beside {out}; run its recipe first")


def cnfa_job(out: str, *, run: str, dataset: str | None = None, seed: int = 0, images: int = 200,
             split: str = "train", power: float = 1.0, layers: Sequence[str] | None = None,
             sizes: Sequence[int] | None = None, n_filters: int = 8, extra_powers: Sequence[float] = (),
             data_dir: str | None = None) -> dict[str, Any]:
    """(C)NFA of training run ``run`` (its best-validation weights) against its initialisation, on ``images``
    images of its ``split`` (train or val; never test) drawn with ``seed``; writes ``summary.json`` in ``out``.
    ``extra_powers`` adds the table against AGOP^p for each p (e.g. 0.5, the square root some versions use)."""
    from convemerge.experiments.cnfa.run import cnfa_for_run

    start = time.perf_counter()
    out_path = Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    run_dir = find_run_dir(out_path, run)
    train_summary = read_summary(run_dir) or {}
    base = {"kind": "cnfa", "run": run, "dataset": dataset, "seed": seed}
    status = train_summary.get("status", RunStatus.COMPLETED.value)
    if status != RunStatus.COMPLETED:  # a diverged run has no weights worth analysing
        record = {**base, "status": RunStatus.SKIPPED.value, "reason": f"training run status is {status!r}"}
        write_summary(out_path, record)
        return record
    options: dict[str, Any] = {"n_filters": n_filters}
    if sizes is not None:
        options["sizes"] = tuple(sizes)
    rec = cnfa_for_run(run_dir, out_path, images=images, split=split, power=power, seed=seed, layers=layers,
                       data_dir=data_dir, extra_powers=tuple(extra_powers), **options)
    final = train_summary.get("final") or {}
    record = {
        **base,
        "status": RunStatus.COMPLETED.value,
        "train": {"best_val_acc": train_summary.get("best_val_acc"), "best_epoch": train_summary.get("best_epoch"),
                  "test_acc_at_best": train_summary.get("test_acc_at_best"),
                  "final_train_acc": final.get("train_acc"), "final_train_loss": final.get("train_loss"),
                  "final_test_acc": final.get("test_acc"), "epochs_done": train_summary.get("epochs_done"),
                  "stopped_early": train_summary.get("stopped_early"), "wall_time": train_summary.get("wall_time")},
        "source": rec["source"],
        "settings": rec["settings"],
        "table": rec["table"],
        "tables_by_power": rec.get("tables_by_power", {}),
        "convergence": rec["convergence"],
        "figures": rec["figures"],
        "seconds": time.perf_counter() - start,
    }
    write_summary(out_path, record)
    return record
