"""Fig. 4: first-layer filters of S-FC/SGD, S-FC/β-LASSO and S-LOCAL/SGD, and their locality measures."""

from __future__ import annotations

from convemerge.experiments.recipe import Arm, Recipe
from convemerge.experiments.recipes._scales import fmt_settings, settings
from convemerge.experiments.registry import register_recipe


@register_recipe("fig4", order=50)
def fig4(scale: str) -> Recipe:
    sc = settings(scale)
    a = sc.shallow_alpha
    arms = (
        Arm("s-fc/sgd", model="s-fc", optimizer="sgd", alpha=a, fixed=sc.sgd_fixed,
            tags={"panel": "S-FC, SGD"}),
        # the same configuration as Fig. 3's run, so the two share it
        Arm("s-fc/beta-lasso", model="s-fc", optimizer="beta-lasso", alpha=a, fixed={"beta": 50.0, **sc.lasso_fixed},
            tags={"panel": "S-FC, β-LASSO"}),
        Arm("s-local/sgd", model="s-local", optimizer="sgd", alpha=a, fixed=sc.sgd_fixed,
            tags={"panel": "S-LOCAL, SGD"}),
    )
    return Recipe(
        name="fig4", scale=scale, datasets=sc.datasets, arms=arms, seeds=sc.seeds, epochs=sc.long_epochs,
        base=sc.base, notes={"min_nonzero": 20, "units": 16, "window": 9},
        description=(f"α={a}, {sc.long_epochs} epochs; SGD {fmt_settings(sc.sgd_fixed)}, β-LASSO β=50 "
                     f"{fmt_settings(sc.lasso_fixed)}. Filters drawn (seeded) among units with ≥ 20 non-zero "
                     f"weights."),
    )
