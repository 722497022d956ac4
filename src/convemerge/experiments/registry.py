"""The one registry of recipes: ``(experiment, scale) -> builder``.

Each experiment is a folder ``convemerge/experiments/<name>/`` whose ``recipe.py`` registers its builders with
:func:`register_recipe` (its jobs and helpers sit beside it); the ``recipe`` module of every such folder is imported
on first use, so a new experiment is added by copying a folder — the runner, the ``all`` target and the CLI pick it
up.

    >>> @register_recipe("demo", scales=("quick",))          # doctest: +SKIP
    ... def demo(scale: str) -> Recipe: ...
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any

from convemerge.errors import ConfigError
from convemerge.experiments.recipe import MOVED_JOBS, Recipe

__all__ = ["SCALES", "register_recipe", "get_recipe", "list_experiments", "expand_experiments", "resolve_job"]

SCALES = ("quick", "cpu", "paper", "seed")
# the scales every experiment has; others (``seed``: Table 2 in the student reproduction's setting) are opted into
DEFAULT_SCALES = ("quick", "cpu", "paper")

# (experiment, scale) -> builder(scale) -> Recipe; insertion order is the order of `all`
_REGISTRY: dict[tuple[str, str], Callable[[str], Recipe]] = {}
_ORDER: dict[str, int] = {}  # experiment -> position in `all` (lower runs first)
_loaded = False


def register_recipe(name: str, *, scales: Iterable[str] = DEFAULT_SCALES, order: int | None = None):
    """Decorator: register ``builder(scale) -> Recipe`` for ``name`` at each of ``scales``.

    ``order`` places the experiment within ``all`` (default: after those registered before it).
    """
    scales = tuple(scales)
    bad = [s for s in scales if s not in SCALES]
    if bad:
        raise ValueError(f"unknown scale(s) {bad}; scales are {SCALES}")

    def deco(builder: Callable[[str], Recipe]) -> Callable[[str], Recipe]:
        for s in scales:
            _REGISTRY[(name, s)] = builder
        _ORDER.setdefault(name, order if order is not None else 100 + len(_ORDER))
        return builder

    return deco


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import convemerge.experiments as experiments

    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        if info.ispkg and not info.name.startswith("_"):
            module = f"{experiments.__name__}.{info.name}.recipe"
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)


def resolve_job(name: str) -> Callable[..., Any]:
    """The job function named ``"module:function"``; a function that moved is found under its old name too
    (:func:`~convemerge.experiments.recipe.keep_job_name`)."""
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise ConfigError(f"callable job target {name!r} must be 'module:function'")
    if name not in MOVED_JOBS:
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if not e.name or not (module == e.name or module.startswith(e.name + ".")):
                raise  # the module exists but one of its imports is missing: not a moved job
        except AttributeError:
            pass
        _load()  # the experiments' modules declare the old names of the job functions that moved
    if name not in MOVED_JOBS:
        raise ConfigError(f"no job function {name!r}; it is neither importable nor a moved job's old name")
    return MOVED_JOBS[name]


def list_experiments(scale: str | None = None) -> list[str]:
    """Registered experiment names (those available at ``scale`` if given), in the order ``all`` runs them."""
    _load()
    names = {e for (e, s) in _REGISTRY if scale is None or s == scale}
    return sorted(names, key=lambda e: (_ORDER[e], e))


def get_recipe(name: str, scale: str) -> Recipe:
    """The recipe of experiment ``name`` at ``scale``; ConfigError (one line) for an unknown pair."""
    _load()
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    builder = _REGISTRY.get((name, scale))
    if builder is None:
        known = list_experiments(scale)
        raise ConfigError(f"no experiment {name!r} at scale {scale!r}; choose one of {', '.join(known + ['all'])}")
    recipe = builder(scale)
    if recipe.name != name or recipe.scale != scale:
        raise ConfigError(f"recipe builder for {name}/{scale} returned {recipe.name}/{recipe.scale}; fix the builder")
    return recipe


def expand_experiments(name: str, scale: str) -> list[str]:
    """``all`` -> every experiment at ``scale``; a single name -> [name] (checked)."""
    if name == "all":
        return list_experiments(scale)
    get_recipe(name, scale)  # raises for unknown names
    return [name]
