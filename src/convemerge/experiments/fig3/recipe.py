"""Fig. 3: non-zero weights per S-FC layer per epoch under β-LASSO, with the S-CONV and S-LOCAL counts of the
same layer (from the architectures at the same α and input size) as reference lines."""

from __future__ import annotations

from convemerge.experiments.postprocess import architecture_counts
from convemerge.experiments.recipe import Arm, CallableSpec, Recipe
from convemerge.experiments._scales import fmt_settings, loss_arms, settings
from convemerge.experiments.registry import register_recipe


@register_recipe("fig3", order=40, scales=("quick", "cpu", "paper", "seed"))
def fig3(scale: str) -> Recipe:
    sc = settings(scale)
    a = sc.shallow_alpha
    arms = tuple(Arm(f"{prefix}s-fc/beta-lasso", model="s-fc", optimizer="beta-lasso", alpha=a,
                     fixed={"beta": 50.0, **sc.lasso_fixed, **fixed},
                     tags={"row": "S-FC", "method": "β-LASSO β=50", **tags})
                 for prefix, fixed, tags in loss_arms(sc))
    counts = CallableSpec("reference-counts", architecture_counts,
                          kwargs={"models": ["s-fc", "s-conv", "s-local"], "alpha": a}, per_seed=False)
    return Recipe(
        name="fig3", scale=scale, datasets=sc.datasets, arms=arms, seeds=sc.seeds, epochs=sc.long_epochs,
        base=sc.base, dataset_base=sc.dataset_base, callables=(counts,),
        description=(f"S-FC α={a} with β-LASSO β=50, {fmt_settings(sc.lasso_fixed)}, {sc.long_epochs} epochs; "
                     f"non-zero weights of each layer logged every epoch."),
    )
