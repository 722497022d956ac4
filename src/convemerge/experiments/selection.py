"""Model selection over seeds, on the validation split only.

The rule (the same at every scale):

1. Runs of one arm on one dataset are grouped by their tuned hyperparameters (one *candidate* per grid point);
   each run contributes its best validation accuracy over epochs (``summary.best_val_acc``) and the test accuracy
   at that same epoch (``summary.test_acc_at_best``) — the per-run early stopping is itself on validation.
2. Candidates whose every seed finished rank before incomplete ones; among them the highest **mean validation
   accuracy over seeds** wins; ties go to the earlier grid point (the grids list milder regularisation first).
3. The reported number is the winner's test accuracy, mean ± sample standard deviation (ddof = 1) over its seeds.

Selecting on the mean over seeds (rather than per seed) picks one configuration whose spread over seeds is then
an honest error bar; per-seed selection would fold the selection noise into the mean. The test set is never read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convemerge.runs import is_final

__all__ = ["Candidate", "Selection", "mean_std", "candidates_by_arm", "select", "select_all", "hparams_key"]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std or None for fewer than two values, count) of the non-None, finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return None, None, 0
    mean = sum(vals) / n
    if n < 2:
        return mean, None, n
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean, math.sqrt(var), n


def hparams_key(hparams: Mapping[str, Any]) -> str:
    """A stable, readable key for a grid point, e.g. ``lam=1e-05, lam_first=2e-05``."""
    if not hparams:
        return "(fixed)"
    return ", ".join(f"{k}={hparams[k]!r}" for k in sorted(hparams))


@dataclass
class Candidate:
    """One grid point of one arm on one dataset, with its runs over seeds."""

    arm: str
    dataset: str | None
    hparams: dict[str, Any]
    order: int  # position in the grid (tie-break)
    run_ids: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    val: list[float | None] = field(default_factory=list)
    test: list[float | None] = field(default_factory=list)
    expected: int = 0  # number of seeds the recipe asked for

    @property
    def finished(self) -> int:
        return sum(v is not None for v in self.val)

    @property
    def complete(self) -> bool:
        return self.finished >= self.expected > 0

    @property
    def val_mean(self) -> float | None:
        return mean_std(self.val)[0]

    def to_dict(self) -> dict[str, Any]:
        vm, vs, _ = mean_std(self.val)
        tm, ts, tn = mean_std(self.test)
        return {"arm": self.arm, "dataset": self.dataset, "hparams": self.hparams, "key": hparams_key(self.hparams),
                "run_ids": self.run_ids, "seeds": self.seeds, "val_mean": vm, "val_std": vs, "test_mean": tm,
                "test_std": ts, "n": tn, "expected": self.expected, "complete": self.complete}


@dataclass
class Selection:
    """The selected candidate of one (arm, dataset) and every candidate considered."""

    arm: str
    dataset: str | None
    chosen: Candidate | None
    candidates: list[Candidate]

    @property
    def complete(self) -> bool:
        """Every grid point has all its seeds: until then the choice may change as runs finish."""
        return all(c.complete for c in self.candidates)

    @property
    def test(self) -> tuple[float | None, float | None, int]:
        return mean_std(self.chosen.test) if self.chosen else (None, None, 0)

    @property
    def val(self) -> tuple[float | None, float | None, int]:
        return mean_std(self.chosen.val) if self.chosen else (None, None, 0)

    def to_dict(self) -> dict[str, Any]:
        tm, ts, tn = self.test
        return {"arm": self.arm, "dataset": self.dataset, "test_mean": tm, "test_std": ts, "n": tn,
                "chosen": self.chosen.to_dict() if self.chosen else None,
                "candidates": [c.to_dict() for c in self.candidates]}


def candidates_by_arm(jobs: Iterable[Mapping[str, Any]], summaries: Mapping[str, Mapping[str, Any] | None],
                      *, val_key: str = "best_val_acc", test_key: str = "test_acc_at_best",
                      ) -> dict[tuple[str, str | None], list[Candidate]]:
    """Group train jobs (manifest entries) into candidates per (arm, dataset); ``summaries`` maps run id to the
    run's summary (None or missing for unfinished runs, which then count as missing seeds)."""
    groups: dict[tuple[str, str | None], dict[str, Candidate]] = {}
    seeds_per_group: dict[tuple[str, str | None], set[int]] = {}
    for job in jobs:
        if job.get("kind", "train") != "train":
            continue
        gkey = (job["arm"], job.get("dataset"))
        cands = groups.setdefault(gkey, {})
        hkey = hparams_key(job.get("hparams") or {})
        cand = cands.get(hkey)
        if cand is None:
            cand = cands[hkey] = Candidate(job["arm"], job.get("dataset"), dict(job.get("hparams") or {}), len(cands))
        seeds_per_group.setdefault(gkey, set()).add(job.get("seed"))
        summary = summaries.get(job["run_id"])
        # a run still going (or stopped half-way) is not a finished seed; a diverged one is (it was tried)
        finished = bool(summary) and is_final(summary.get("status", "completed"))
        cand.run_ids.append(job["run_id"])
        cand.seeds.append(job.get("seed"))
        cand.val.append(summary.get(val_key) if finished else None)
        cand.test.append(summary.get(test_key) if finished else None)
    out = {}
    for gkey, cands in groups.items():
        for c in cands.values():
            c.expected = len(seeds_per_group[gkey])
        out[gkey] = sorted(cands.values(), key=lambda c: c.order)
    return out


def select(candidates: list[Candidate]) -> Candidate | None:
    """The winner by the module's rule, or None when no candidate has a finished run with a validation score."""
    live = [c for c in candidates if c.val_mean is not None]
    if not live:
        return None
    # max() keeps the first of equal keys, so ties go to the earlier grid point
    return max(live, key=lambda c: (c.complete, c.val_mean))


def select_all(jobs: Iterable[Mapping[str, Any]], summaries: Mapping[str, Mapping[str, Any] | None],
               **keys: str) -> dict[tuple[str, str | None], Selection]:
    """:func:`select` for every (arm, dataset) of a manifest's jobs."""
    return {g: Selection(g[0], g[1], select(c), c) for g, c in candidates_by_arm(jobs, summaries, **keys).items()}
