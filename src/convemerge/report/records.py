"""Read a runs folder written by ``convemerge reproduce``: manifests, run summaries, metrics, analysis records.

Nothing here trains or loads a model: it reads each experiment's manifest and, for each job, the records of
its run directory (summary, metrics log, analysis record, Fig. 4 filters) through :mod:`convemerge.runs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from convemerge.errors import ConfigError
from convemerge.experiments.selection import Selection, mean_std, select_all
from convemerge.runs import (
    EXPERIMENT_MANIFEST,
    RunPaths,
    experiment_manifests,
    is_final,
    read_analysis,
    read_filters,
    read_json,
    read_metrics,
    read_summary,
)

__all__ = ["ExperimentRecords", "load_runs", "fmt_pct", "fmt_ms", "fmt_count"]

MANIFEST = EXPERIMENT_MANIFEST  # kept for old imports


@dataclass
class ExperimentRecords:
    """Everything on disk about one experiment of a runs folder."""

    name: str
    root: Path  # <runs>/<experiment>
    manifest: dict[str, Any]
    summaries: dict[str, dict | None] = field(default_factory=dict)
    analyses: dict[str, dict | None] = field(default_factory=dict)

    @property
    def recipe(self) -> dict[str, Any]:
        return self.manifest.get("recipe", {})

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return self.manifest.get("jobs", [])

    @property
    def command(self) -> str:
        return self.manifest.get("command", "")

    @property
    def scale(self) -> str:
        return self.manifest.get("scale", "")

    @property
    def notes(self) -> dict[str, Any]:
        return self.recipe.get("notes", {})

    @cached_property
    def arms(self) -> dict[str, dict[str, Any]]:
        return {a["name"]: a for a in self.recipe.get("arms", [])}

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def jobs_of(self, arm: str, dataset: str | None = None, kind: str = "train") -> list[dict[str, Any]]:
        return [j for j in self.jobs if j["arm"] == arm and j.get("kind", "train") == kind
                and (dataset is None or j.get("dataset") == dataset)]

    @property
    def datasets(self) -> list[str]:
        seen: dict[str, None] = {}
        for j in self.jobs:
            if j.get("dataset") is not None and j.get("kind", "train") == "train":
                seen.setdefault(j["dataset"], None)
        return list(seen)

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        return read_metrics(RunPaths(self.run_dir(run_id)).metrics)

    def filters(self, run_id: str):
        """The saved Fig. 4 filters of a run as ``(filters, indices)`` tensors, or None."""
        return read_filters(self.run_dir(run_id))

    @cached_property
    def selections(self) -> dict[tuple[str, str | None], Selection]:
        return select_all(self.jobs, self.summaries)

    def values(self, run_ids: list[str], getter) -> list[Any]:
        """``getter(summary, analysis)`` for each finished run among ``run_ids`` (None-valued results kept)."""
        out = []
        for rid in run_ids:
            s = self.summaries.get(rid)
            if s is None:
                continue
            out.append(getter(s, self.analyses.get(rid) or {}))
        return out

    @property
    def counts(self) -> tuple[int, int]:
        """(finished runs, jobs) over every job of the manifest."""
        return sum(self.summaries.get(j["run_id"]) is not None for j in self.jobs), len(self.jobs)


def _finished(summary: dict | None) -> bool:
    return isinstance(summary, dict) and is_final(summary.get("status", "completed"))


def load_experiment(root: Path) -> ExperimentRecords:
    path = root / EXPERIMENT_MANIFEST
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path} is missing or not valid JSON; rerun `convemerge reproduce`")
    rec = ExperimentRecords(manifest.get("experiment", root.name), root, manifest)
    for job in rec.jobs:
        rid = job["run_id"]
        d = root / rid
        summary = read_summary(d)
        rec.summaries[rid] = summary if _finished(summary) else None
        rec.analyses[rid] = read_analysis(d)
    return rec


def load_runs(runs_dir: str | Path) -> dict[str, ExperimentRecords]:
    """Every experiment (a folder with ``manifest.json``) directly under ``runs_dir``, by folder name."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError(f"runs folder {runs_dir} not found; pass the --out folder of `convemerge reproduce`")
    out = {}
    for path in experiment_manifests(runs_dir):
        rec = load_experiment(path.parent)
        out[rec.name] = rec
    if not out:
        raise ConfigError(f"no experiment manifests under {runs_dir}; run `convemerge reproduce ... --out {runs_dir}`")
    return out


# ----------------------------------------------------------------------------- number formatting
def fmt_ms(values, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std (n)`` of the finite values (× scale), ``mean (n=1)`` for one, ``—`` for none."""
    m, s, n = mean_std(values)
    if m is None:
        return "—"
    if s is None:
        return f"{m * scale:.{digits}f} (n=1)"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def fmt_pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def fmt_count(n: float | None) -> str:
    """Human parameter counts: 1.45M, 138M, 24.3k."""
    if n is None:
        return "—"
    n = float(n)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g}{unit}"
    return f"{n:.0f}"
