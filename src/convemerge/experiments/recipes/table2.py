"""Table 2: S-FC trained with β-LASSO (β = 0, 1, 50; λ tuned separately for the first layer and the rest) against
SGD-trained S-CONV, S-LOCAL, 3-FC and S-FC."""

from __future__ import annotations

from convemerge.experiments.recipe import Arm, Recipe
from convemerge.experiments.recipes._scales import LABELS, fmt_settings, settings
from convemerge.experiments.registry import register_recipe

BETAS = (0.0, 1.0, 50.0)


@register_recipe("table2", order=20)
def table2(scale: str) -> Recipe:
    sc = settings(scale)
    a = sc.shallow_alpha
    arms = [Arm(f"{m}/sgd", model=m, optimizer="sgd", alpha=a, grid=sc.sgd_grid,
                tags={"row": LABELS[m], "method": "SGD"})
            for m in ("s-conv", "s-local", "3-fc", "s-fc")]
    arms += [Arm(f"s-fc/beta-lasso-b{b:g}", model="s-fc", optimizer="beta-lasso", alpha=a, fixed={"beta": b},
                 grid=sc.lasso_grid, tags={"row": "S-FC", "method": f"β-LASSO β={b:g}", "beta": b})
             for b in BETAS]
    return Recipe(
        name="table2", scale=scale, datasets=sc.datasets, arms=tuple(arms), seeds=sc.seeds,
        epochs=sc.long_epochs, base=sc.base,
        description=(f"Shallow nets at α={a}, {sc.long_epochs} epochs. SGD arms tune {fmt_settings(sc.sgd_grid)}; "
                     f"β-LASSO arms (no momentum) tune λ_first × λ over {fmt_settings(sc.lasso_grid)}."),
    )
