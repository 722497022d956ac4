"""Kernel machines that learn features (Beaglehole et al.; Radhakrishnan et al.): RFM on flattened pixels vs
ConvRFM vs Deep ConvRFM vs the fixed kernels they start from (Laplace, CNTK — M = I) vs the vanilla CNN of the
same shape trained by our engine, at several training-set sizes n.

Every method gets the same ``n`` labelled images per (dataset, seed): the kernel machines choose their round on a
validation split carved from them (``validation_fraction``) and refit on all ``n``; the CNN trains on
``(1 − validation_fraction)·n`` of them and keeps its best-validation epoch on the other ``validation_fraction·n``.
All are scored on one fixed stratified test subsample (``n_test``, the same images for every seed and method). The
authors estimate the AGOP from 20 images and choose everything on the test set; here the AGOP uses all training
images and nothing is chosen on test data.

Scales:

- ``quick``: mnist-5k and noise-row, n = 150, 500 test images, 2 seeds, one AGOP round for the conv machines
  (depth-2 CNTK): about a minute of CPU in all, part of ``reproduce all --scale quick``.
- ``cpu``: MNIST, Fashion-MNIST, noise-row (drawn with 2,000 training images), digit-in-noise (42×42) and
  CIFAR-10 (the RGB task), n = 1,000, 1,000 test images, 3 seeds, RFM 5 rounds, ConvRFM 2 rounds of the depth-3
  CNTK on every dataset, the metric-power sweep (M = AGOP^½, AGOP, AGOP²) and the authors' construction as a whole
  (M = AGOP², VALID padding, K divided by its largest training entry; Deep ConvRFM with their linear
  featurisation) on MNIST and noise-row, Deep ConvRFM
  2 levels × 2 rounds (width 32) on MNIST, noise-row and digit-in-noise; CNN depth 3, width 32, Adam 5e-4,
  40 epochs. The convolutional kernels dominate the cost (see docs/reproduce.md for the wall time).
- ``paper``: n ∈ {500, 1000, 2000, 5000}, the full test splits, 5 rounds, CNN width 256 and 100 epochs as in the
  authors' scripts (meant for a GPU).
"""

from __future__ import annotations

from convemerge.experiments.convrfm.jobs import kernel_job
from convemerge.experiments.recipe import Arm, CallableSpec, Recipe
from convemerge.experiments._scales import settings
from convemerge.experiments.registry import register_recipe

JOB = kernel_job  # its "module:function" name enters the run ids
METHODS = ("laplace", "rfm", "cntk", "convrfm", "deep-convrfm")
VAL = 0.2  # share of the n labelled images every method validates on

# Training-split sizes, to turn "VAL·n validation images" into the engine's val_fraction of the whole split
TRAIN_SIZES = {"mnist": 60000, "fashion-mnist": 60000, "mnist-5k": 4000, "noise-row": 500, "digit-in-noise": 2000,
               "digits": 1437, "cifar10": 50000}

# noise-row's default noise (σ = 0.1) leaves the signal row plain to see: every method is perfect at n = 200.
# At σ = 3 (noise std ≈ 0.31 per pixel against ±0.18 on the signal row) the fixed kernels drop to ≈ 60-70 % at
# n = 200 and learning a horizontal patch metric pays. At paper scale the synthetic sets are drawn larger, so
# that n reaches 5,000 (noise-row) and 3,000 (digit-in-noise: train + test digits must fit in mnist-5k's 5,000).
NOISE_ROW = {"sigma": 3.0}
# The authors' ConvRFM settings (their scripts' defaults), as estimator options; and ours, pinned in the cpu plan so
# that its columns keep their meaning (and their run ids) whichever the estimators' defaults are
AUTHORS = {"agop_power": 2.0, "padding": "valid", "normalize_kernel": True}
OURS = {"agop_power": 0.5, "padding": "same", "normalize_kernel": False}
DATASET_OPTIONS = {
    "quick": {"noise-row": NOISE_ROW},
    "cpu": {"noise-row": {**NOISE_ROW, "n_train": 2000, "n_test": 1000}},
    "paper": {"noise-row": {**NOISE_ROW, "n_train": 5000, "n_test": 1000},
              "digit-in-noise": {"n_train": 3000, "n_test": 2000}},
}


def train_size(dataset: str, scale: str) -> int:
    """Training images ``dataset`` has at ``scale`` (synthetic sets: as drawn with the scale's options)."""
    return int(DATASET_OPTIONS[scale].get(dataset, {}).get("n_train", TRAIN_SIZES[dataset]))


PLAN = {
    "quick": {
        "datasets": ("mnist-5k", "noise-row"), "ns": (150,), "n_test": 500,
        "kernel": {"dtype": "float32", "validation_fraction": VAL},
        "methods": {"laplace": {}, "rfm": {"n_iter": 2}, "cntk": {"depth": 2},
                    "convrfm": {"depth": 2, "n_iter": 1}, "deep-convrfm": {"depth": 2, "width": 8, "n_iter": 1}},
        "cnn": {"depth": 2, "width": 16, "epochs": 15, "lr": 5e-4, "batch_size": 32},
    },
    "cpu": {
        "datasets": ("mnist", "fashion-mnist", "noise-row", "digit-in-noise", "cifar10"), "ns": (1000,),
        "n_test": 1000,
        # the fused CNTK recursion makes every convolutional kernel affordable at n = 1,000 (benchmarks/RESULTS.md);
        # Deep ConvRFM's second level (32-channel features, 288-dimensional patches) costs a few ConvRFM fits, so
        # it runs on the local-signal tasks and MNIST
        "method_datasets": {"deep-convrfm": ("mnist", "noise-row", "digit-in-noise")},
        # the metric-power sweep: M = AGOP (the authors' -sqrtM) and M = AGOP² (their default T = AGOP) beside
        # the default M = AGOP^½ ("convrfm")
        "variants": {"convrfm-agop1": ("convrfm", {"agop_power": 1.0}, ("mnist", "noise-row")),
                     "convrfm-agop2": ("convrfm", {"agop_power": 2.0}, ("mnist", "noise-row")),
                     # the authors' construction as a whole (aradha/convrfm defaults): T = AGOP (metric AGOP²),
                     # VALID padding in every CNTK layer, kernel matrix divided by its largest training entry; and
                     # their Deep ConvRFM featurisation (linear 3×3 conv W = G·T, VALID) at our width
                     "convrfm-authors": ("convrfm", AUTHORS, ("mnist", "noise-row")),
                     "deep-convrfm-authors": ("deep-convrfm", {**AUTHORS, "features": "linear"},
                                              ("mnist", "noise-row"))},
        "kernel": {"dtype": "float32", "validation_fraction": VAL},
        "methods": {"laplace": {}, "rfm": {"n_iter": 5}, "cntk": {"depth": 3, **OURS},
                    "convrfm": {"depth": 3, "n_iter": 2, **OURS},
                    "deep-convrfm": {"depth": 2, "width": 32, "n_iter": 2, **OURS, "features": "relu"}},
        "cnn": {"depth": 3, "width": 32, "epochs": 40, "lr": 5e-4, "batch_size": 32},
    },
    "paper": {
        "datasets": ("mnist", "fashion-mnist", "noise-row", "digit-in-noise"), "ns": (500, 1000, 2000, 5000),
        "n_test": None,
        "kernel": {"dtype": "float32", "validation_fraction": VAL},
        "methods": {"laplace": {}, "rfm": {"n_iter": 5}, "cntk": {"depth": 3},
                    "convrfm": {"depth": 3, "n_iter": 5}, "deep-convrfm": {"depth": 3, "width": 64, "n_iter": 3}},
        "cnn": {"depth": 3, "width": 256, "epochs": 100, "lr": 5e-4, "batch_size": 32},
    },
}

LABELS = {"laplace": "Laplace kernel (M = I)", "rfm": "RFM (Laplace, learned M)", "cntk": "CNTK (M = I)",
          "convrfm": "ConvRFM", "deep-convrfm": "Deep ConvRFM", "cnn": "vanilla CNN (trained)"}


def _cnn_arm(n: int, datasets: tuple[str, ...], plan: dict, scale: str) -> Arm:
    c = plan["cnn"]
    n_val = round(VAL * n)
    opts = DATASET_OPTIONS[scale]
    # the CNN validates on VAL·n images held out of the whole split and trains on (1 − VAL)·n of the rest
    per_dataset = {d: {"val_fraction": n_val / train_size(d, scale),
                       **({"dataset_options": opts[d]} if d in opts else {})} for d in datasets}
    return Arm(f"cnn/n{n}", model="vanilla-cnn", optimizer="adam",
               fixed={"model_options": {"depth": c["depth"], "width": c["width"], "kernel_size": 3},
                      "n_train": n - n_val, "n_test": plan["n_test"], "lr": c["lr"], "batch_size": c["batch_size"],
                      "epochs": c["epochs"], "schedule": "constant", "weight_decay": 0.0, "augment": False,
                      "eval_batch_size": 500},
               datasets=datasets, per_dataset=per_dataset, tags={"method": "cnn", "label": LABELS["cnn"], "n": n})


def _metric(options: dict) -> str:
    """The metric an options dict asks for, as text (the estimators' default power when it names none)."""
    from convemerge.kernels import ConvRFMClassifier

    power = float(options.get("agop_power", ConvRFMClassifier().agop_power))
    return {0.5: "AGOP^½", 1.0: "AGOP", 2.0: "AGOP²"}.get(power, f"AGOP^{power:g}")


@register_recipe("convrfm", scales=("quick", "cpu", "paper"), order=80)
def convrfm(scale: str) -> Recipe:
    sc = settings(scale)
    plan = PLAN[scale]
    datasets, n_test = plan["datasets"], plan["n_test"]
    opts = DATASET_OPTIONS[scale]

    def fits(n: int, method: str | None = None) -> tuple[str, ...]:
        """The datasets with n training images to draw from (and in the plan's ``method_datasets`` of
        ``method``, where it lists them)."""
        only = plan.get("method_datasets", {}).get(method)
        return tuple(d for d in datasets if train_size(d, scale) >= n and (only is None or d in only))

    callables = tuple(
        CallableSpec(f"{m}/n{n}", JOB,
                     kwargs={"method": m, "n_train": n, "n_test": n_test,
                             "options": {**plan["kernel"], **plan["methods"][m]},
                             "dataset_options": {d: o for d, o in opts.items() if d in datasets}},
                     datasets=fits(n, m), tags={"method": m, "label": LABELS[m], "n": n})
        for n in plan["ns"] for m in METHODS) + tuple(
        CallableSpec(f"{v}/n{n}", JOB,
                     kwargs={"method": m, "variant": v, "n_train": n, "n_test": n_test,
                             "options": {**plan["kernel"], **plan["methods"][m], **extra},
                             "dataset_options": {d: o for d, o in opts.items() if d in datasets}},
                     datasets=tuple(d for d in fits(n, m) if d in only), tags={"method": v, "label": v, "n": n})
        for n in plan["ns"] for v, (m, extra, only) in plan.get("variants", {}).items())
    arms = tuple(_cnn_arm(n, fits(n), plan, scale) for n in plan["ns"])
    c = plan["cnn"]
    m = plan["methods"]
    return Recipe(
        name="convrfm", scale=scale, datasets=datasets, arms=arms, seeds=sc.seeds, epochs=c["epochs"],
        base={k: v for k, v in sc.base.items() if k == "device"},
        callables=callables,
        notes={"ns": list(plan["ns"]), "n_test": n_test, "val": VAL, "labels": LABELS,
               "dataset_options": opts},
        description=(
            f"n ∈ {{{', '.join(map(str, plan['ns']))}}} labelled images per dataset and seed (noise-row at "
            f"σ = {NOISE_ROW['sigma']:g}); "
            f"{'the full test split' if n_test is None else f'{n_test} test images (one stratified subsample)'}"
            + "".join(f"; {LABELS[k]} on {', '.join(v)} only" for k, v in plan.get("method_datasets", {}).items())
            + ". " +
            f"Kernel machines (ridge 1e-3) choose their round on {VAL:.0%} of the n images and refit on all n; "
            f"RFM {m['rfm'].get('n_iter', 5)} rounds; ConvRFM on the depth-{m['convrfm'].get('depth', 3)} CNTK, "
            f"{m['convrfm'].get('n_iter', 5)} round(s), M = {_metric(m['convrfm'])} Frobenius-normalised"
            f"{', ' + m['convrfm']['padding'] + ' padding' if 'padding' in m['convrfm'] else ''}, AGOP over all training "
            f"images; Deep ConvRFM {m['deep-convrfm'].get('depth', 2)} levels, width "
            f"{m['deep-convrfm'].get('width', 64)}, {m['deep-convrfm'].get('n_iter', 3)} round(s) per level; "
            f"vanilla CNN depth {c['depth']}, width {c['width']}, 3×3, Adam {c['lr']:g}, batch {c['batch_size']}, {c['epochs']} epochs on {1 - VAL:.0%} of the n images, best "
            f"epoch on the other {VAL:.0%}."
            + "".join(f" Variant {v}: {m} with {extra} on {', '.join(ds)}."
                      for v, (m, extra, ds) in plan.get("variants", {}).items())),
    )
