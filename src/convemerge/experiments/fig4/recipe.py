"""Fig. 4: first-layer filters of S-FC/SGD, S-FC/β-LASSO and S-LOCAL/SGD, and their locality measures."""

from __future__ import annotations

from convemerge.experiments.recipe import Arm, Recipe
from convemerge.experiments._scales import fmt_settings, loss_arms, settings
from convemerge.experiments.registry import register_recipe


@register_recipe("fig4", order=50, scales=("quick", "cpu", "paper", "seed"))
def fig4(scale: str) -> Recipe:
    sc = settings(scale)
    a = sc.shallow_alpha
    arms = []
    for prefix, fixed, tags in loss_arms(sc):
        suffix = f" ({tags['loss']})" if tags else ""
        arms += [
            Arm(f"{prefix}s-fc/sgd", model="s-fc", optimizer="sgd", alpha=a, fixed={**sc.sgd_fixed, **fixed},
                tags={"panel": f"S-FC, SGD{suffix}", **tags}),
            # the same configuration as Fig. 3's run, so the two share it
            Arm(f"{prefix}s-fc/beta-lasso", model="s-fc", optimizer="beta-lasso", alpha=a,
                fixed={"beta": 50.0, **sc.lasso_fixed, **fixed}, tags={"panel": f"S-FC, β-LASSO{suffix}", **tags}),
            Arm(f"{prefix}s-local/sgd", model="s-local", optimizer="sgd", alpha=a, fixed={**sc.sgd_fixed, **fixed},
                tags={"panel": f"S-LOCAL, SGD{suffix}", **tags}),
        ]
    arms = tuple(arms)
    return Recipe(
        name="fig4", scale=scale, datasets=sc.datasets, arms=arms, seeds=sc.seeds, epochs=sc.long_epochs,
        base=sc.base, dataset_base=sc.dataset_base, notes={"min_nonzero": 20, "units": 16, "window": 9},
        description=(f"α={a}, {sc.long_epochs} epochs; SGD {fmt_settings(sc.sgd_fixed)}, β-LASSO β=50 "
                     f"{fmt_settings(sc.lasso_fixed)}. Filters drawn (seeded) among units with ≥ 20 non-zero "
                     f"weights."),
    )
