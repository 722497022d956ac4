"""The convolutional neural feature ansatz (Beaglehole et al.) in the authors' regime, and the NFA of S-FC first
layers trained with β-LASSO vs SGD.

Two parts, each a set of training runs plus one analysis job per run (``CallableSpec(per_run=...)``: the runner
starts it when its run is done):

- **CNFA, the authors' setting** (their ``hyperparam_cnfa_verification``): ``vanilla-cnn`` (depth × [3×3 conv,
  ReLU], 'same' padding, linear readout), **no biases, every weight N(0, 0.005²)**, n_train = 2000, Adam 1e-3,
  batch 128, no augmentation, trained until the mean training loss of an epoch is below 1e-5 or the epoch budget
  is spent; CIFAR-10 first (RGB: 27-dimensional patches), MNIST and Fashion-MNIST as further datasets. No
  validation hold-out: the analysed weights are the last epoch's, as the authors analyse a net trained to fit
  (they keep the best *test* checkpoint, which we do not copy). The AGOP runs over all n_train training images.
  A **control arm** trains the same net with PyTorch's default initialisation (and no biases) on CIFAR-10. Per
  conv layer: the claim corr(AGOP_T, W_TᵀW_T) next to every baseline (see ``convemerge.analysis.cnfa``), against
  AGOP and AGOP^½, and the convergence with the number of images.
- **NFA of S-FC (beyond the authors).** S-FC at a small α, SGD vs β-LASSO: AGOP w.r.t. the flattened image vs
  WᵀW of the first layer, top eigenvectors of both as images. At ``quick`` scale these are exactly Fig. 4's S-FC
  runs (same configurations, so ``reproduce all`` trains them once).

AGOP images come from each run's train split, never from the test split.
"""

from __future__ import annotations

from convemerge.experiments.cnfa.jobs import cnfa_job
from convemerge.experiments.recipe import Arm, CallableSpec, Recipe
from convemerge.experiments._scales import fmt_settings, settings
from convemerge.experiments.registry import register_recipe

JOB = cnfa_job  # its "module:function" name enters the run ids
AUTHORS_ARM = "vanilla-cnn/authors-init"
CONTROL_ARM = "vanilla-cnn/default-init"
CONV_ARMS = (CONTROL_ARM, AUTHORS_ARM)
SFC_ARMS = ("s-fc/sgd", "s-fc/beta-lasso")
INIT_STD = 0.005  # the authors' -init 5e-3
STOP_TRAIN_LOSS = 1e-5  # the authors stop once an epoch's training loss is below this

# Per scale: the conv net (depth, width), its epoch budget, test images evaluated each epoch (reported only),
# AGOP images (None: all n_train), S-FC epochs (None: Fig. 4's) and β-LASSO's λ (default: the scale's).
#  - quick: depth 2, width 32, 4 epochs on mnist-5k; 100 AGOP images. A smoke test of the pipeline and the report.
#  - cpu: depth 4 (the authors'), width 32 instead of 64, a budget of 30 epochs instead of 1000, 1,000 test images
#    instead of 10,000 (reported only). Why: on two shared CPU cores an epoch of the 4 × 64 net over 2,000 CIFAR
#    images took ≈ 40 s and its AGOP over 2,000 images ≈ 4 min per network (trained and initial: 8), so the 12 conv
#    runs would take many hours; width 32 costs about a quarter and keeps layer 1 at 32 ≥ 27 filters (W₀ᵀW₀ of
#    full rank). A 4 × 32 CIFAR-10 net reached 99 % training accuracy and a loss of ≈ 0.03 after 30 epochs, far
#    from 1e-5: the summary records whether a run stopped on the loss, the report shows each run's final loss.
#    S-FC α = 2, 10 epochs over the full train split (≈ 2,100 steps); β-LASSO's λ_first is 2e-4, not the scale's
#    1e-4: its threshold β·λ_first = 0.01 and ~2,100 steps of shrinkage leave the first layer mostly zero (at 1e-4,
#    10 epochs left 54 % of its weights, close to their initial values).
#  - paper: the authors' net and budget: depth 4, width 64, up to 1,000 epochs, every test image.
PLAN = {
    "quick": {"depth": 2, "width": 32, "epochs": 4, "n_test": None, "images": 100, "sfc_epochs": None},
    "cpu": {"depth": 4, "width": 32, "epochs": 30, "n_test": 1000, "images": None, "sfc_epochs": 10,
            "lasso": {"lam_first": 2e-4, "lam": 2e-5}},
    "paper": {"depth": 4, "width": 64, "epochs": 1000, "n_test": None, "images": None, "sfc_epochs": 100},
}
N_TRAIN = 2000
EXTRA_POWERS = (0.5,)  # the table is also computed against AGOP^½, as some versions of the ansatz state it
SFC_ALPHA = 2
# the authors' default data set first; the S-FC part keeps the single-channel data sets it was built on
DATASETS = {"quick": ("mnist-5k",), "cpu": ("cifar10", "mnist", "fashion-mnist"),
            "paper": ("cifar10", "mnist", "fashion-mnist")}
SFC_DATASETS = {"quick": None, "cpu": ("mnist", "fashion-mnist"), "paper": ("mnist", "fashion-mnist")}
CONTROL_DATASETS = {"quick": None, "cpu": ("cifar10",), "paper": ("cifar10",)}


@register_recipe("cnfa", order=70)
def cnfa(scale: str) -> Recipe:
    sc = settings(scale)
    plan = PLAN[scale]
    net = {"depth": plan["depth"], "width": plan["width"], "kernel_size": 3, "bias": False}
    conv = {"n_train": N_TRAIN, "lr": 1e-3, "schedule": "constant", "batch_size": 128, "weight_decay": 0.0,
            "epochs": plan["epochs"], "stop_train_loss": STOP_TRAIN_LOSS, "val_fraction": 0.0, "augment": False,
            "eval_batch_size": 256}
    if plan["n_test"] is not None:
        conv["n_test"] = plan["n_test"]
    lasso = {"beta": 50.0, **plan.get("lasso", sc.lasso_fixed)}
    # quick: Fig. 4's S-FC configurations exactly (α, epochs, batch, λ), so `reproduce all` trains them once
    sfc_alpha = sc.shallow_alpha if scale == "quick" else SFC_ALPHA
    sfc_epochs = {} if plan["sfc_epochs"] is None else {"epochs": plan["sfc_epochs"]}
    shape = f"depth {plan['depth']}, width {plan['width']}, 3×3, no bias"
    # the control first: the runner starts jobs in this order, so both CIFAR-10 arms come before the further datasets
    arms = (
        Arm(CONTROL_ARM, model="vanilla-cnn", optimizer="adam", fixed={**conv, "model_options": net},
            datasets=CONTROL_DATASETS[scale],
            tags={"part": "cnfa", "label": f"vanilla CNN ({shape}), PyTorch's default init (control)"}),
        Arm(AUTHORS_ARM, model="vanilla-cnn", optimizer="adam",
            fixed={**conv, "model_options": {**net, "init_std": INIT_STD}},
            tags={"part": "cnfa", "label": f"vanilla CNN ({shape}), weights N(0, {INIT_STD:g}²)"}),
        Arm(SFC_ARMS[0], model="s-fc", optimizer="sgd", alpha=sfc_alpha, fixed={**sc.sgd_fixed, **sfc_epochs},
            datasets=SFC_DATASETS[scale], tags={"part": "sfc", "label": f"S-FC α={sfc_alpha}, SGD"}),
        Arm(SFC_ARMS[1], model="s-fc", optimizer="beta-lasso", alpha=sfc_alpha, fixed={**lasso, **sfc_epochs},
            datasets=SFC_DATASETS[scale], tags={"part": "sfc", "label": f"S-FC α={sfc_alpha}, β-LASSO"}),
    )
    images = plan["images"] or N_TRAIN
    kwargs = {"images": images, "split": "train", "power": 1.0, "extra_powers": list(EXTRA_POWERS)}
    sfc_kwargs = {**kwargs, "images": plan["images"] or 128}
    callables = (
        CallableSpec("cnfa", JOB, kwargs=kwargs, per_run=CONV_ARMS, tags={"part": "cnfa"}),
        CallableSpec("nfa-sfc", JOB, kwargs=sfc_kwargs, per_run=SFC_ARMS, tags={"part": "sfc"}),
    )
    sfc_e = plan["sfc_epochs"] or sc.long_epochs
    return Recipe(
        name="cnfa", scale=scale, datasets=DATASETS[scale], arms=arms, seeds=sc.seeds, epochs=sc.long_epochs,
        base=sc.base, callables=callables,
        notes={"images": images, "power": 1.0, "depth": plan["depth"], "width": plan["width"],
               "conv_epochs": plan["epochs"], "stop_train_loss": STOP_TRAIN_LOSS, "init_std": INIT_STD,
               "sfc_epochs": sfc_e, "sfc_alpha": sfc_alpha},
        description=(
            f"CNFA in the authors' setting: vanilla CNN ({shape}; every weight N(0, {INIT_STD:g}²)), "
            f"n_train = {N_TRAIN}, Adam 1e-3 constant, batch 128, no augmentation, until the epoch's training loss "
            f"is < {STOP_TRAIN_LOSS:g} or {plan['epochs']} epochs, no validation hold-out (last-epoch weights); "
            f"control: the same net with PyTorch's default initialisation. Per conv layer corr(patch-AGOP, W̃ᵀW̃) "
            f"next to corr(AGOP_T, W₀ᵀW₀), corr(W₀ᵀW₀, W_TᵀW_T), corr(AGOP₀, W₀ᵀW₀) and the centred "
            f"corr(AGOP_T, ΔWᵀΔW), on {images} train-split images (AGOP and AGOP^½). "
            f"NFA of S-FC α={sfc_alpha} first layers ({sfc_e} epochs; SGD {fmt_settings(sc.sgd_fixed)}; β-LASSO "
            f"{fmt_settings(lasso)}): AGOP w.r.t. the flattened image vs WᵀW."),
    )
