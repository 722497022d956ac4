"""``reproduce(experiment, scale)``: expand recipes into jobs, write each experiment's manifest, run the jobs.

Layout under ``out``::

    <out>/<experiment>/manifest.json     the recipe (arms, grids, seeds, notes), its jobs, the command
    <out>/<experiment>/<run_id>/         one run directory per job (config.yaml, metrics.jsonl, summary.json, ...)

The report (``convemerge report <out>``) reads only these files.
"""

from __future__ import annotations

import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convemerge.experiments.recipe import Job, Recipe
from convemerge.experiments.registry import expand_experiments, get_recipe
from convemerge.experiments.runner import RunReport, run_jobs
from convemerge.runs import EXPERIMENT_MANIFEST, atomic_write_json, manifest_path, read_json

__all__ = ["ReproduceResult", "reproduce", "select_arms", "write_manifest", "read_manifest", "MANIFEST", "default_out"]

MANIFEST = EXPERIMENT_MANIFEST  # kept for old imports


def default_out(scale: str) -> Path:
    """Where ``reproduce`` writes when no ``--out`` is given."""
    return Path("runs") / f"reproduce-{scale}"


def _command(argv: Sequence[str] | None) -> str:
    args = list(argv) if argv is not None else sys.argv[1:]
    return "convemerge " + " ".join(shlex.quote(a) for a in args)


def write_manifest(recipe: Recipe, jobs: list[Job], out: str | Path, *, command: str) -> Path:
    """Write ``<out>/<experiment>/manifest.json`` (atomically) and return its path."""
    from convemerge import __version__

    path = manifest_path(out, recipe.name)
    recipe_dict = recipe.to_dict()
    job_dicts = [j.to_dict() | {"out": str(Path(j.out).relative_to(Path(out)))} for j in jobs]
    recipe_dict, job_dicts = _merge_previous(path, recipe_dict, job_dicts)
    record = {
        "experiment": recipe.name,
        "scale": recipe.scale,
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "version": __version__,
        "python": platform.python_version(),
        "recipe": recipe_dict,
        "jobs": job_dicts,
    }
    atomic_write_json(path, record)
    return path


def _merge_previous(path: Path, recipe: dict, jobs: list[dict]) -> tuple[dict, list[dict]]:
    """Keep the jobs of an earlier run of the same recipe that only differed in its datasets or seeds (e.g. one
    ``--dataset`` at a time), so the report covers all of them; a changed recipe replaces the manifest."""
    old = read_json(path)
    if not isinstance(old, dict):
        return recipe, jobs
    old_recipe = old.get("recipe") or {}

    def core(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("datasets", "seeds", "arms", "callables")} | {
            "arms": [{k: v for k, v in a.items() if k != "datasets"} for a in r.get("arms", [])],
            "callables": [{k: v for k, v in c.items() if k != "datasets"} for c in r.get("callables", [])]}

    if core(old_recipe) != core(recipe):
        return recipe, jobs
    mine = {j["run_id"] for j in jobs}
    kept = [j for j in old.get("jobs", []) if j.get("run_id") not in mine]
    if not kept:
        return recipe, jobs
    merged = dict(recipe)
    merged["datasets"] = list(dict.fromkeys([*old_recipe.get("datasets", []), *recipe.get("datasets", [])]))
    merged["seeds"] = sorted(set(old_recipe.get("seeds", [])) | set(recipe.get("seeds", [])))
    return merged, kept + jobs


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest, with each job's ``out`` resolved against the runs folder (two levels up)."""
    path = Path(path)
    record = read_json(path)
    if not isinstance(record, dict):
        from convemerge.errors import ConfigError

        raise ConfigError(f"{path} is missing or not valid JSON; rerun `convemerge reproduce`")
    root = path.parent.parent
    for job in record.get("jobs", []):
        job["out"] = str(root / job["out"])
    return record


def select_arms(jobs: list[Job], patterns: Sequence[str]) -> list[Job]:
    """The training jobs whose arm matches one of the glob ``patterns``, plus the callables whose prerequisites
    are all among them (callables with none are kept)."""
    import fnmatch

    trained = [j for j in jobs if j.kind == "train" and any(fnmatch.fnmatchcase(j.arm, p) for p in patterns)]
    ids = {j.run_id for j in trained}
    return [j for j in jobs if (j.kind == "train" and j.run_id in ids and j in trained)
            or (j.kind != "train" and all(a in ids for a in j.after))]


@dataclass
class ReproduceResult:
    out: Path
    experiments: list[str]
    manifests: list[Path]
    run: RunReport


def reproduce(experiment: str, scale: str = "quick", *, out: str | Path | None = None,
              datasets: Sequence[str] | None = None, seeds: int | None = None, workers: int = 1,
              ray_address: str | None = None, threads: int | None = None, argv: Sequence[str] | None = None,
              only: Sequence[str] | None = None, log: Callable[[str], None] | None = print,
              pack: bool | None = None) -> ReproduceResult:
    """Run ``experiment`` (or ``all``) at ``scale``; finished runs are skipped, interrupted ones resumed.

    only: glob patterns of arm names (e.g. ``bce/s-fc/*``): run just those arms' jobs this time (and callables
        that depend on nothing else). The manifest still lists every job, so the report shows what is missing and
        a later call without ``only`` runs the rest. Run ids do not depend on it.
    pack: first train compatible training jobs together as packed runs (see experiments/packing.py); None: do so
        when the training jobs run on a CUDA device.
    """
    out = Path(out) if out is not None else default_out(scale)
    names = expand_experiments(experiment, scale)
    command = _command(argv)
    jobs: list[Job] = []
    manifests = []
    for name in names:
        recipe = get_recipe(name, scale).with_overrides(seeds=seeds, datasets=tuple(datasets) if datasets else None)
        rjobs = recipe.jobs(out)
        manifests.append(write_manifest(recipe, rjobs, out, command=command))
        if only:
            rjobs = select_arms(rjobs, only)
        jobs.extend(rjobs)
        if log:
            log(f"{name}: {len(rjobs)} job(s) ({len(recipe.arms)} arm(s), seeds {list(recipe.seeds)})")
    if pack is None:
        from convemerge.experiments.packing import runs_on_cuda

        pack = runs_on_cuda(jobs)
    if pack:
        from convemerge.experiments.packing import train_packs

        train_packs(jobs, command=command, log=log)
    report = run_jobs(jobs, workers=workers, ray_address=ray_address, threads=threads, command=command, log=log)
    if log:
        log(report.line())
    return ReproduceResult(out, names, manifests, report)
