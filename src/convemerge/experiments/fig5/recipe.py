"""Fig. 5: ResNet18 with kernel size k = 3, 7, 11, 15 (the model's kernel_size option), β-LASSO vs SGD."""

from __future__ import annotations

from convemerge.experiments.recipe import Arm, Recipe
from convemerge.experiments._scales import fmt_settings, settings
from convemerge.experiments.registry import register_recipe

KERNELS = (3, 7, 11, 15)


@register_recipe("fig5", order=60)
def fig5(scale: str) -> Recipe:
    sc = settings(scale)
    arms = []
    for k in KERNELS:
        opts = {"model_options": {"kernel_size": k}}
        arms.append(Arm(f"resnet18-k{k}/sgd", model="resnet18", optimizer="sgd", alpha=sc.resnet_alpha,
                        fixed={**opts, **sc.sgd_fixed}, tags={"kernel": k, "method": "SGD"}))
        arms.append(Arm(f"resnet18-k{k}/beta-lasso", model="resnet18", optimizer="beta-lasso",
                        alpha=sc.resnet_alpha, fixed={**opts, "beta": 50.0, **sc.lasso_fixed},
                        tags={"kernel": k, "method": "β-LASSO"}))
    return Recipe(
        name="fig5", scale=scale, datasets=sc.sweep_datasets, arms=tuple(arms), seeds=sc.seeds,
        epochs=sc.sweep_epochs, base=sc.base, dataset_base=sc.dataset_base,
        description=(f"ResNet18 (width α={sc.resnet_alpha}) with kernel size {list(KERNELS)}, {sc.sweep_epochs} "
                     f"epochs; SGD {fmt_settings(sc.sgd_fixed)} vs β-LASSO β=50 {fmt_settings(sc.lasso_fixed)}."),
    )
