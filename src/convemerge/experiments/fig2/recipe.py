"""Fig. 2: test accuracy against parameter count as α grows (one curve per family), and the minimum parameter
count that fits the training set against the best test accuracy (description length ↔ generalisation)."""

from __future__ import annotations

from convemerge.experiments.recipe import Arm, Recipe
from convemerge.experiments._scales import LABELS, fmt_settings, per_dataset, settings
from convemerge.experiments.registry import register_recipe


@register_recipe("fig2", order=30)
def fig2(scale: str) -> Recipe:
    sc = settings(scale)
    arms = tuple(
        Arm(f"{family}/a{alpha}", model=family, optimizer="sgd", alpha=alpha, fixed=sc.sgd_fixed,
            tags={"family": LABELS[family], "alpha": alpha},
            per_dataset=per_dataset(family))
        for family, alphas in sc.alpha_sweep.items() for alpha in alphas
    )
    sweep = ", ".join(f"{LABELS[f]} {list(a)}" for f, a in sc.alpha_sweep.items())
    return Recipe(
        name="fig2", scale=scale, datasets=sc.sweep_datasets, arms=arms, seeds=sc.seeds, epochs=sc.sweep_epochs,
        base=sc.base, dataset_base=sc.dataset_base, notes={"fit_target": sc.fit_target, "bits": 8, "delta": 0.05},
        description=(f"α sweep per family ({sweep}), SGD {fmt_settings(sc.sgd_fixed)}, {sc.sweep_epochs} epochs. "
                     f"A family fits the training set when its training accuracy reaches {sc.fit_target:.0%}."),
    )
