"""Console output of a run: a rich progress bar over all steps (with ETA) and one summary line per epoch.

The bar is drawn on stderr only when it is a terminal (or when forced); summary lines are printed to stdout
(rich draws them above the bar while it is shown), so logs of non-interactive runs stay plain text.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _pct(x: Any) -> str:
    return "  -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.2f}%"


def _num(x: Any, fmt: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _count(n: Any) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """One line summing up an epoch record."""
    width = len(str(epochs))
    parts = [
        f"epoch {rec['epoch']:>{width}}/{epochs}",
        f"loss {_num(rec.get('train_loss'))} acc {_pct(rec.get('train_acc'))}",
        f"val {_num(rec.get('val_loss'))} {_pct(rec.get('val_acc'))}",
        f"test {_pct(rec.get('test_acc'))}",
        f"nnz {_count(rec.get('nonzero_total'))}",
    ]
    if "first_layer_pr_median" in rec:
        parts.append(f"PR1 {_num(rec.get('first_layer_pr_median'), '.1f')}")
    parts.append(f"lr {_num(rec.get('lr'), '.3g')}")
    parts.append(f"{rec.get('epoch_time', 0.0):.1f}s")
    return "  ".join(parts)


class RunProgress:
    """Progress bar over the run's steps plus per-epoch lines; a no-op bar when disabled."""

    def __init__(self, total_steps: int, done_steps: int, *, enabled: bool | None, verbose: bool = True):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.verbose = verbose
        self._progress: Progress | None = None
        self._task = None
        if enabled and verbose:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task("train", total=total_steps, completed=done_steps, stats="")

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, step: int, epoch: int, epochs: int, loss: float | None = None) -> None:
        if self._progress is not None:
            stats = "" if loss is None else f"loss {loss:.4f}"
            self._progress.update(self._task, completed=step, description=f"epoch {epoch}/{epochs}", stats=stats)

    def message(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)  # while the bar is live, rich redirects stdout to print above it
