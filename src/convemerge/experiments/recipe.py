"""Declarative recipes: an experiment is models × optimizers × a hyperparameter grid × seeds, expanded into jobs.

A :class:`Recipe` lists :class:`Arm` s (one model with one optimizer: its fixed settings and the grid of settings
tuned on the validation split) and the datasets and seeds they run on. :meth:`Recipe.jobs` expands it into a flat
list of :class:`Job` s, each a full set of ``TrainConfig`` fields with a stable run id (a hash of those fields) and
its run directory ``out/<experiment>/<run_id>``. A job may also be a *callable* (``kind="callable"``): a function
(given as itself, or as ``"module:function"``; its ``"module:function"`` name enters the run id, see
:func:`job_name`) called as ``fn(out=<run dir>, **config)``, which must write its summary there
when done — the hook for experiments that are not a training run (kernel machines, AGOP analyses). A callable
with ``per_run`` analyses finished training runs: one job per run of the named arms, given that run's id as
``run`` and listed with it in :attr:`Job.after`, so the runner starts it only once the run is done. After each
training run the runner calls the recipe's :attr:`Recipe.analyses` (``fn(run_dir)``, writing the run's analysis
record), so the runner itself knows no analysis.

Example::

    >>> r = Recipe(name="demo", scale="quick", datasets=("mnist-5k",), seeds=(0, 1), epochs=2,
    ...            arms=(Arm("s-fc/sgd", model="s-fc", optimizer="sgd", alpha=2,
    ...                      grid={"weight_decay": (0.0, 5e-4)}),))
    >>> len(r.jobs("runs"))   # 2 grid points × 2 seeds
    4
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convemerge.errors import ConfigError

__all__ = ["Arm", "Recipe", "Job", "CallableSpec", "run_id", "EXECUTION_FIELDS", "grid_points", "job_name",
           "keep_job_name", "DEFAULT_ANALYSES"]

#: what runs after every training run unless a recipe says otherwise: the per-run analysis record
DEFAULT_ANALYSES = ("convemerge.experiments.postprocess:analyse_run",)


def job_name(fn: str | Callable[..., Any]) -> str:
    """The ``"module:function"`` name of a job function: what the runner imports, what the manifest records and
    what enters the run id. A function that moved keeps the name its finished runs were made with by carrying a
    ``job_name`` attribute (set it to the old ``"module:function"``)."""
    if isinstance(fn, str):
        return fn
    return getattr(fn, "job_name", None) or f"{fn.__module__}:{fn.__qualname__}"


# old "module:function" name -> the function that moved away from it (see keep_job_name)
MOVED_JOBS: dict[str, Callable[..., Any]] = {}


def keep_job_name(fn: Callable[..., Any], old_name: str) -> Callable[..., Any]:
    """Give a job function that moved the ``"module:function"`` name its finished runs were made with: its run ids
    stay, and :func:`convemerge.experiments.registry.resolve_job` still finds it under that name (manifests written
    before the move name it so)."""
    fn.job_name = old_name  # type: ignore[attr-defined]
    MOVED_JOBS[old_name] = fn
    return fn

# TrainConfig fields that change where or how fast a run executes, not what it computes: left out of the run id
# so the same recipe gives the same ids on a laptop and on a cluster.
EXECUTION_FIELDS = frozenset({"out", "device", "compile", "num_threads", "data_dir", "log_every", "eval_batch_size"})


def _canonical(value: Any) -> Any:
    """JSON-stable form: tuples -> lists, floats as repr-exact, dict keys sorted by json.dumps."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def run_id(config: Mapping[str, Any], kind: str = "train", target: str | None = None) -> str:
    """Stable, readable id of a job: ``<model>-<optimizer>-<dataset>-s<seed>-<10 hex of sha256(config)>``.

    Execution-only fields (:data:`EXECUTION_FIELDS`) do not enter the hash. Only the fields the recipe sets are
    hashed, so a new TrainConfig field with a default does not rename finished runs.
    """
    body = {k: v for k, v in config.items() if k not in EXECUTION_FIELDS}
    payload = json.dumps({"kind": kind, "target": target, "config": _canonical(body)}, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
    if kind == "train":
        head = f"{config.get('model', 'run')}-{config.get('optimizer', '')}-{config.get('dataset', '')}"
    else:
        head = str(config["method"]) if "method" in config else (target or "job").rsplit(":", 1)[-1].replace("_", "-")
        if "dataset" in config:
            head += f"-{config['dataset']}"
    seed = f"-s{config['seed']}" if "seed" in config else ""
    return f"{head}{seed}-{digest}".replace("/", "_")


def grid_points(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product of a grid ``{field: candidates}`` in the given key order (last key varies fastest).

    A candidate that is a dict sets several fields at once (e.g. ``{"beta": 0, "lam": 0}``): the key of such an
    axis is a label only.
    """
    if not grid:
        return [{}]
    keys = list(grid)
    axes = []
    for k in keys:
        values = grid[k]
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ConfigError(f"grid axis {k!r} must list candidate values, got {values!r}")
        values = list(values)
        if not values:
            raise ConfigError(f"grid axis {k!r} has no candidate values; give at least one")
        axes.append(values)
    points = []
    for combo in itertools.product(*axes):
        point: dict[str, Any] = {}
        for k, v in zip(keys, combo):
            if isinstance(v, Mapping):
                point.update(v)
            else:
                point[k] = v
        points.append(point)
    return points


@dataclass(frozen=True)
class Arm:
    """One model with one optimizer: fixed settings and a grid tuned on the validation split."""

    name: str  # unique within its recipe, e.g. "s-fc/beta-lasso-b50"
    model: str  # registered model name
    optimizer: str  # sgd | adam | beta-lasso
    alpha: int | None = None  # base channel count α (None: the model's default)
    fixed: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields fixed for this arm
    grid: Mapping[str, Any] = field(default_factory=dict)  # tuned TrainConfig fields -> candidates
    tags: Mapping[str, Any] = field(default_factory=dict)  # what the report shows (row, method, family, ...)
    datasets: tuple[str, ...] | None = None  # override the recipe's datasets for this arm
    per_dataset: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # dataset -> extra fixed fields


@dataclass(frozen=True)
class CallableSpec:
    """A non-training job of a recipe: ``target`` ("module:function") called with ``kwargs`` and ``out``."""

    name: str
    target: str | Callable[..., Any]  # the job function, or its "module:function" name (stored as the name)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    per_seed: bool = True  # one job per seed (kwargs get "seed") or a single job
    per_dataset: bool = True  # one job per dataset (kwargs get "dataset") or a single job
    datasets: tuple[str, ...] | None = None  # with per_dataset: these datasets instead of the recipe's
    tags: Mapping[str, Any] = field(default_factory=dict)
    # arm names: instead of the above, one job per training run of these arms, run after it; kwargs get "run"
    # (its run id, a sibling folder of the job's own), "dataset" and "seed"
    per_run: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", job_name(self.target))


@dataclass(frozen=True)
class Job:
    """One unit of work: a training run (``config`` = TrainConfig fields) or a callable (``config`` = kwargs)."""

    kind: str  # "train" | "callable"
    experiment: str
    arm: str
    dataset: str | None
    seed: int | None
    hparams: Mapping[str, Any]  # the tuned values of this grid point (a subset of config)
    config: Mapping[str, Any]
    run_id: str
    out: str  # run directory
    target: str | None = None  # "module:function" for callables
    after: tuple[str, ...] = ()  # run ids that must finish before this job starts (analyses of a training run)
    analyses: tuple[str, ...] = ()  # train jobs: "module:function"s called as fn(run_dir) once the run completed

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "experiment": self.experiment, "arm": self.arm, "dataset": self.dataset,
            "seed": self.seed, "hparams": _canonical(dict(self.hparams)), "config": _canonical(dict(self.config)),
            "run_id": self.run_id, "out": self.out, "target": self.target, "after": list(self.after),
            "analyses": list(self.analyses),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        fields = {k: d.get(k) for k in ("kind", "experiment", "arm", "dataset", "seed", "hparams", "config",
                                        "run_id", "out", "target")}
        return cls(**fields, after=tuple(d.get("after") or ()), analyses=tuple(d.get("analyses") or ()))


@dataclass(frozen=True)
class Recipe:
    """A paper table or figure at one scale, as data. See the module docstring."""

    name: str  # experiment name (registry key), e.g. "table2"
    scale: str  # quick | cpu | paper
    datasets: tuple[str, ...]
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 400
    base: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields common to every arm
    # dataset -> TrainConfig fields every arm gets on that dataset (after ``base``, before the arm's own fields)
    dataset_base: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    callables: tuple[CallableSpec, ...] = ()
    description: str = ""  # one paragraph for the report: what is run and how it differs from the paper
    notes: Mapping[str, Any] = field(default_factory=dict)  # free-form settings the report reads (e.g. fit target)
    analyses: tuple[str | Callable[..., Any], ...] = DEFAULT_ANALYSES  # called as fn(run_dir) after each train run

    def __post_init__(self) -> None:
        object.__setattr__(self, "analyses", tuple(job_name(a) for a in self.analyses))
        names = [a.name for a in self.arms] + [c.name for c in self.callables]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"recipe {self.name}: arm names must be unique, repeated: {', '.join(dup)}")
        arms = {a.name for a in self.arms}
        unknown = sorted({n for c in self.callables for n in c.per_run if n not in arms})
        if unknown:
            raise ConfigError(f"recipe {self.name}: per_run names no arm: {', '.join(unknown)}; use arm names")
        if not self.seeds:
            raise ConfigError(f"recipe {self.name}: give at least one seed")

    def with_overrides(self, *, seeds: int | None = None, datasets: tuple[str, ...] | None = None) -> Recipe:
        """This recipe with ``seeds`` seeds (0..seeds-1) and/or other datasets."""
        from dataclasses import replace

        changes: dict[str, Any] = {}
        if seeds is not None:
            if seeds < 1:
                raise ConfigError(f"--seeds must be >= 1, got {seeds}")
            changes["seeds"] = tuple(range(seeds))
        if datasets:
            changes["datasets"] = tuple(datasets)
            # an explicit --dataset applies to every arm, including those with their own default
            changes["arms"] = tuple(replace(a, datasets=None) for a in self.arms)
            changes["callables"] = tuple(replace(c, datasets=None) for c in self.callables)
        return replace(self, **changes) if changes else self

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def jobs(self, out: str | Path) -> list[Job]:
        """Every job of the recipe, in a stable order (arm, dataset, grid point, seed). A configuration shared by
        two arms appears under each, with one run id and one run directory."""
        root = Path(out) / self.name
        jobs: list[Job] = []
        for arm in self.arms:
            for dataset in arm.datasets or self.datasets:
                for point in grid_points(arm.grid):
                    for seed in self.seeds:
                        config = {**self.base, **dict(self.dataset_base.get(dataset, {})), "model": arm.model,
                                  "optimizer": arm.optimizer, "dataset": dataset, "epochs": self.epochs}
                        if arm.alpha is not None:
                            config["alpha"] = arm.alpha
                        config.update({**dict(arm.fixed), **dict(arm.per_dataset.get(dataset, {})), **point,
                                       "seed": seed})
                        # the same config under two arms stays listed under both (the runner runs it once)
                        rid = run_id(config)
                        jobs.append(Job("train", self.name, arm.name, dataset, seed, point, config, rid,
                                        str(root / rid), analyses=self.analyses))
        trained = list(jobs)
        for spec in self.callables:
            if spec.per_run:
                jobs.extend(self._per_run_jobs(spec, trained, root))
                continue
            for dataset in ((spec.datasets or self.datasets) if spec.per_dataset else (None,)):
                for seed in (self.seeds if spec.per_seed else (None,)):
                    kwargs = dict(spec.kwargs)
                    if dataset is not None:
                        kwargs["dataset"] = dataset
                    if seed is not None:
                        kwargs["seed"] = seed
                    rid = run_id(kwargs, kind="callable", target=spec.target)
                    jobs.append(Job("callable", self.name, spec.name, dataset, seed, {}, kwargs, rid,
                                    str(root / rid), target=spec.target))
        return jobs

    def _per_run_jobs(self, spec: CallableSpec, trained: list[Job], root: Path) -> list[Job]:
        """One callable per training run of ``spec.per_run`` (a run shared by two arms is analysed once)."""
        out, seen = [], set()
        for tj in trained:
            if tj.arm not in spec.per_run or tj.run_id in seen:
                continue
            seen.add(tj.run_id)
            kwargs = {**dict(spec.kwargs), "run": tj.run_id, "dataset": tj.dataset, "seed": tj.seed}
            rid = run_id(kwargs, kind="callable", target=spec.target)
            out.append(Job("callable", self.name, spec.name, tj.dataset, tj.seed, {}, kwargs, rid, str(root / rid),
                           target=spec.target, after=(tj.run_id,)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (written to the experiment's manifest)."""
        return _canonical({
            "name": self.name, "scale": self.scale, "datasets": self.datasets, "seeds": self.seeds,
            "epochs": self.epochs, "base": dict(self.base), "description": self.description,
            "notes": dict(self.notes),
            # only when set: the manifests of recipes without it stay as they were (an earlier manifest of the same
            # recipe is merged, not replaced)
            **({"dataset_base": {k: dict(v) for k, v in self.dataset_base.items()}} if self.dataset_base else {}),
            "arms": [{"name": a.name, "model": a.model, "optimizer": a.optimizer, "alpha": a.alpha,
                      "fixed": dict(a.fixed), "grid": {k: list(v) for k, v in a.grid.items()},
                      "tags": dict(a.tags), "datasets": a.datasets,
                      "per_dataset": {k: dict(v) for k, v in a.per_dataset.items()}} for a in self.arms],
            "callables": [{"name": c.name, "target": c.target, "kwargs": dict(c.kwargs), "tags": dict(c.tags),
                           "per_run": list(c.per_run), "datasets": c.datasets} for c in self.callables],
        })
