"""Table 1: test accuracy of the seven architectures trained with SGD (momentum and weight decay tuned)."""

from __future__ import annotations

from convemerge.experiments.recipe import Arm, Recipe
from convemerge.experiments._scales import (
    DEEP,
    LABELS,
    SHALLOW,
    alpha_for,
    fmt_settings,
    per_dataset,
    settings,
)
from convemerge.experiments.registry import register_recipe

MODELS = (*DEEP, *SHALLOW)


@register_recipe("table1", order=10)
def table1(scale: str) -> Recipe:
    sc = settings(scale)
    arms = tuple(
        Arm(f"{m}/sgd@{e}", model=m, optimizer="sgd", alpha=alpha_for(m, sc), fixed={"epochs": e},
            grid=sc.sgd_grid, tags={"row": LABELS[m], "epochs": e},
            per_dataset=per_dataset(m))
        for e in sc.table1_epochs for m in MODELS
    )
    return Recipe(
        name="table1", scale=scale, datasets=sc.datasets, arms=arms, seeds=sc.seeds, epochs=sc.epochs,
        base=sc.base, dataset_base=sc.dataset_base,
        description=(f"Seven architectures (deep α={sc.deep_alpha}, shallow α={sc.shallow_alpha}) trained with SGD "
                     f"for {' / '.join(map(str, sc.table1_epochs))} epochs; momentum and weight decay chosen on "
                     f"the validation split from {fmt_settings(sc.sgd_grid)}."),
    )
