"""The convolutional neural feature ansatz (Beaglehole et al.) on vanilla conv nets, and the NFA of S-FC first
layers trained with β-LASSO vs SGD.

Two parts, each a set of training runs plus one analysis job per run (``CallableSpec(per_run=...)``: the runner
starts it when its run is done):

- **CNFA.** ``vanilla-cnn`` (depth × [3×3 conv, width 64, ReLU], linear readout), n_train = 2000, Adam 1e-3 —
  the authors' setting. Per conv layer: corr(patch-AGOP, W̃ᵀW̃) of the trained net (best-validation weights),
  the same for the net at initialisation (rebuilt from the run's seed), and corr(W₀ᵀW₀, WᵀW); its convergence
  with the number of images (nested samples of the train split).
- **NFA of S-FC (beyond the authors).** S-FC at a small α, SGD vs β-LASSO: AGOP w.r.t. the flattened image vs
  WᵀW of the first layer, top eigenvectors of both as images. At ``quick`` scale these are exactly Fig. 4's S-FC
  runs (same configurations, so ``reproduce all`` trains them once).

AGOP images come from each run's train split (a seeded sample), never from the test split.
"""

from __future__ import annotations

from convemerge.experiments.cnfa.jobs import cnfa_job
from convemerge.experiments.recipe import Arm, CallableSpec, Recipe
from convemerge.experiments._scales import fmt_settings, settings
from convemerge.experiments.registry import register_recipe

JOB = cnfa_job  # its "module:function" name enters the run ids
CONV_ARM = "vanilla-cnn/adam"
SFC_ARMS = ("s-fc/sgd", "s-fc/beta-lasso")

# Per scale: vanilla-cnn depth and epochs, its validation share, AGOP images, S-FC epochs (None: Fig. 4's) and
# β-LASSO's λ (default: the scale's).
#  - quick: depth 2, 3 epochs on mnist-5k (≈ 25 CPU-seconds a run), 100 images (the correlation has settled by
#    ~20); S-FC = Fig. 4's quick runs. About 90 CPU-seconds in all when Fig. 4 has trained the S-FC nets.
#  - cpu: depth 2, 6 epochs on MNIST / Fashion-MNIST (≈ 20 CPU-seconds an epoch, most of it the 10,000 test
#    images the engine evaluates every epoch; ≈ 97-99 % training accuracy at the end), a 2 % validation hold-out
#    (1,200 images), 128 images; S-FC α = 2, 10 epochs over the full train split (≈ 2,100 steps). About 21
#    CPU-minutes in all: ≈ 11 minutes with two workers on two idle cores (depth 3 doubles the conv nets' share).
#    β-LASSO's λ_first is 2e-4, not the scale's 1e-4: its threshold β·λ_first = 0.01 and ~2,100 steps of shrinkage
#    leave the first layer mostly zero (at 1e-4, 10 epochs left 54 % of its weights, close to their initial values).
#  - paper: depth 3, 50 epochs (the authors train to fit), 1,000 images; S-FC for 100 epochs.
PLAN = {
    "quick": {"depth": 2, "epochs": 3, "val_fraction": 0.1, "images": 100, "sfc_epochs": None},
    "cpu": {"depth": 2, "epochs": 6, "val_fraction": 0.02, "images": 128, "sfc_epochs": 10,
            "lasso": {"lam_first": 2e-4, "lam": 2e-5}},
    "paper": {"depth": 3, "epochs": 50, "val_fraction": 0.1, "images": 1000, "sfc_epochs": 100},
}
EXTRA_POWERS = (0.5,)  # the table is also computed against AGOP^½, as some versions of the ansatz state it
SFC_ALPHA = 2
DATASETS = {"quick": ("mnist-5k",), "cpu": ("mnist", "fashion-mnist"), "paper": ("mnist", "fashion-mnist")}


@register_recipe("cnfa", order=70)
def cnfa(scale: str) -> Recipe:
    sc = settings(scale)
    plan = PLAN[scale]
    conv = {"model_options": {"depth": plan["depth"], "width": 64, "kernel_size": 3}, "n_train": 2000,
            "lr": 1e-3, "schedule": "constant", "batch_size": 32, "weight_decay": 0.0,
            "epochs": plan["epochs"], "val_fraction": plan["val_fraction"], "eval_batch_size": 256}
    lasso = {"beta": 50.0, **plan.get("lasso", sc.lasso_fixed)}
    # quick: Fig. 4's S-FC configurations exactly (α, epochs, batch, λ), so `reproduce all` trains them once
    sfc_alpha = sc.shallow_alpha if scale == "quick" else SFC_ALPHA
    sfc_epochs = {} if plan["sfc_epochs"] is None else {"epochs": plan["sfc_epochs"]}
    arms = (
        Arm(CONV_ARM, model="vanilla-cnn", optimizer="adam", fixed=conv,
            tags={"part": "cnfa", "label": f"vanilla CNN, depth {plan['depth']}, width 64, Adam 1e-3"}),
        Arm(SFC_ARMS[0], model="s-fc", optimizer="sgd", alpha=sfc_alpha, fixed={**sc.sgd_fixed, **sfc_epochs},
            tags={"part": "sfc", "label": f"S-FC α={sfc_alpha}, SGD"}),
        Arm(SFC_ARMS[1], model="s-fc", optimizer="beta-lasso", alpha=sfc_alpha, fixed={**lasso, **sfc_epochs},
            tags={"part": "sfc", "label": f"S-FC α={sfc_alpha}, β-LASSO"}),
    )
    images = plan["images"]
    kwargs = {"images": images, "split": "train", "power": 1.0, "extra_powers": list(EXTRA_POWERS)}
    callables = (
        CallableSpec("cnfa", JOB, kwargs=kwargs, per_run=(CONV_ARM,), tags={"part": "cnfa"}),
        CallableSpec("nfa-sfc", JOB, kwargs=kwargs, per_run=SFC_ARMS, tags={"part": "sfc"}),
    )
    sfc_e = plan["sfc_epochs"] or sc.long_epochs
    return Recipe(
        name="cnfa", scale=scale, datasets=DATASETS[scale], arms=arms, seeds=sc.seeds, epochs=sc.long_epochs,
        base=sc.base, callables=callables,
        notes={"images": images, "power": 1.0, "depth": plan["depth"], "conv_epochs": plan["epochs"],
               "sfc_epochs": sfc_e, "sfc_alpha": sfc_alpha},
        description=(
            f"CNFA: vanilla CNN (depth {plan['depth']}, width 64, 3×3, n_train = 2000, Adam 1e-3 constant, batch 32, "
            f"{plan['epochs']} epochs, {plan['val_fraction']:.0%} validation hold-out); per layer corr(patch-AGOP, "
            f"W̃ᵀW̃) trained vs at initialisation vs corr(W₀ᵀW₀, WᵀW), on {images} train-split images (AGOP and "
            f"AGOP^½). "
            f"NFA of S-FC α={sfc_alpha} first layers ({sfc_e} epochs; SGD {fmt_settings(sc.sgd_fixed)}; β-LASSO "
            f"{fmt_settings(lasso)}): AGOP w.r.t. the flattened image vs WᵀW."),
    )
