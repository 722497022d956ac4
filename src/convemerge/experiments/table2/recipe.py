"""Table 2: S-FC trained with β-LASSO (β = 0, 1, 50; λ tuned separately for the first layer and the rest) against
SGD-trained S-CONV, S-LOCAL, 3-FC and S-FC."""

from __future__ import annotations

from convemerge.experiments.recipe import Arm, Recipe
from convemerge.experiments._scales import LABELS, fmt_settings, loss_arms, settings
from convemerge.experiments.registry import register_recipe

BETAS = (0.0, 1.0, 50.0)


@register_recipe("table2", order=20, scales=("quick", "cpu", "paper", "seed"))
def table2(scale: str) -> Recipe:
    sc = settings(scale)
    a = sc.shallow_alpha

    def sfc_arms(prefix: str, fixed: dict, tags: dict) -> list[Arm]:
        """S-FC with SGD and with β-LASSO at each β (the scale's grids, or its fixed settings)."""
        out = [Arm(f"{prefix}s-fc/sgd", model="s-fc", optimizer="sgd", alpha=a, fixed={**sc.sgd_fixed, **fixed}
                   if not sc.sgd_grid else fixed, grid=sc.sgd_grid, tags={"row": "S-FC", "method": "SGD", **tags})]
        out += [Arm(f"{prefix}s-fc/beta-lasso-b{b:g}", model="s-fc", optimizer="beta-lasso", alpha=a,
                    fixed={"beta": b, **(sc.lasso_fixed if not sc.lasso_grid else {}), **fixed}, grid=sc.lasso_grid,
                    tags={"row": "S-FC", "method": f"β-LASSO β={b:g}", "beta": b, **tags})
                for b in BETAS]
        return out

    arms = []
    for prefix, fixed, tags in loss_arms(sc):
        # S-FC first: at the seed scale the runner goes arm by arm, and the S-FC comparison is the point
        sfc = sfc_arms(prefix, fixed, tags)
        context = [Arm(f"{prefix}{m}/sgd", model=m, optimizer="sgd", alpha=a,
                       fixed={**sc.sgd_fixed, **fixed} if not sc.sgd_grid else fixed, grid=sc.sgd_grid,
                       tags={"row": LABELS[m], "method": "SGD", **tags})
                   for m in ("s-conv", "s-local", "3-fc")]
        arms += (sfc + context) if prefix else (context + sfc)  # the other scales keep their order
    # the validation-tuned view (seed scale): λ_first chosen on validation per arm; its first grid point is the
    # fixed arm's configuration (one run id, run once)
    for prefix, fixed, tags in loss_arms(sc) if sc.lasso_tuned_grid else ():
        arms += [Arm(f"tuned/{prefix}s-fc/beta-lasso-b{b:g}", model="s-fc", optimizer="beta-lasso", alpha=a,
                     fixed={"beta": b, **{k: v for k, v in sc.lasso_fixed.items() if k not in sc.lasso_tuned_grid},
                            **fixed},
                     grid=sc.lasso_tuned_grid,
                     tags={"row": "S-FC", "method": f"β-LASSO β={b:g}", "beta": b, "view": "tuned", **tags})
                 for b in BETAS]
    # the schedule views (seed scale): the S-FC arms with the first loss under another lr schedule
    for sched in sc.schedule_variants:
        prefix, fixed, tags = loss_arms(sc)[0]
        arms += sfc_arms(f"{sched}-lr/{prefix}", {**fixed, "schedule": sched}, {**tags, "view": f"{sched} lr"})
    if sc.lasso_grid:
        how = (f"SGD arms tune {fmt_settings(sc.sgd_grid)}; β-LASSO arms (no momentum) tune λ_first × λ over "
               f"{fmt_settings(sc.lasso_grid)}.")
    else:
        how = (f"SGD {fmt_settings(sc.sgd_fixed)}; β-LASSO {fmt_settings(sc.lasso_fixed)} (every layer); each arm "
               f"with the losses {', '.join(sc.losses)}; a second view tunes {fmt_settings(sc.lasso_tuned_grid)} on "
               f"validation. Test accuracy is reported at the last epoch and at the best-validation epoch."
               + (f" The S-FC arms run again with the {sc.losses[0]} loss under a "
                  f"{' / '.join(sc.schedule_variants)} lr schedule." if sc.schedule_variants else ""))
    return Recipe(
        name="table2", scale=scale, datasets=sc.datasets, arms=tuple(arms), seeds=sc.seeds,
        epochs=sc.long_epochs, base=sc.base, dataset_base=sc.dataset_base,
        notes={"losses": list(sc.losses)} if len(sc.losses) > 1 else {},
        description=f"Shallow nets at α={a}, {sc.long_epochs} epochs. {how}",
    )
