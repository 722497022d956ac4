"""Each paper table and figure as a declarative recipe over the library, at named scales, and a runner.

- :mod:`~convemerge.experiments.recipe` — ``Recipe``, ``Arm``, ``Job``: models × optimizers × grid × seeds -> jobs
- :mod:`~convemerge.experiments.registry` — ``(experiment, scale) -> recipe`` (``register_recipe``, ``get_recipe``),
  and ``resolve_job`` (a job function by its ``"module:function"`` name)
- ``convemerge/experiments/<name>/`` — one folder per experiment (table1, table2, fig2, fig3, fig4, fig5, cnfa,
  convrfm): its ``recipe.py`` and, where it is not only training runs, its jobs and their helpers;
  ``_scales.py`` holds what each scale means, shared by the recipes
- :mod:`~convemerge.experiments.runner` — skip / resume / N local workers / Ray
- :mod:`~convemerge.experiments.selection` — hyperparameters chosen on validation, mean over seeds
- :mod:`~convemerge.experiments.postprocess` — per-run analysis record (description length, locality, filters)
- :mod:`~convemerge.experiments.reproduce` — ``reproduce(experiment, scale, ...)``: manifests + runner

Submodules are imported on use (nothing heavy happens on ``import convemerge.experiments``).
"""

from convemerge.experiments.recipe import Arm, CallableSpec, Job, Recipe, run_id
from convemerge.experiments.registry import SCALES, expand_experiments, get_recipe, list_experiments, register_recipe

__all__ = ["Arm", "CallableSpec", "Job", "Recipe", "run_id", "SCALES", "expand_experiments", "get_recipe",
           "list_experiments", "register_recipe"]
