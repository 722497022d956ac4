"""What each scale means: data, widths, epochs, seeds and the tuning grids shared by the recipes.

- ``quick``: embedded offline data (``mnist-5k``; ``digits`` for the α sweep and the ResNet kernels), tiny widths,
  a few epochs and reduced grids — the whole ``all`` target in a few minutes on two CPU cores. λ is larger than
  the paper's because β-LASSO gets a few hundred steps instead of hundreds of thousands: with the paper's λ the
  L1 step would not move any weight in that time.
- ``cpu``: full MNIST, Fashion-MNIST and CIFAR-10, α = 4, 12 epochs, two-point grids (Table 2 in under two
  hours on two CPU cores; ``all`` takes several hours).
- ``seed``: Table 2 (and Figs. 3-4) in the public student reproduction's setting, the one setting in which a
  reproduction measured β-LASSO's accuracy gain: CIFAR-10, α = 1 for every net, 400 epochs, batch 512, lr 0.1
  cosine, no augmentation, inputs (x - 0.5) / 0.5, SGD without momentum or weight decay, β-LASSO with λ = 2e-5 on
  every layer (first included), β ∈ {0, 1, 50}; each arm with both the reproduction's loss (one-hot BCE) and the
  paper's (cross-entropy). Unlike the reproduction, 10 % of the 50,000 training images are held out for validation.
- ``paper``: the paper's α (150 shallow, 15 deep), epochs (400 / 4000), batch 512, CIFAR-10/100 and SVHN and the
  full grids of Appendix A.2 (meant for GPUs). CIFAR-10 and CIFAR-100 train with the paper's augmentation, Fast
  AutoAugment: the published CIFAR-10 policy (``augment_policy="fast-autoaugment"``, 493 sub-policies, bundled
  with the library), per image before crop + flip, then Cutout (:mod:`convemerge.data.autoaugment`). SVHN keeps
  its default (no augmentation): the library bundles only the CIFAR-10 policy (Fast AutoAugment searched a
  separate one for SVHN, ``fa_reduced_svhn``, not bundled), and a policy also turns on crop + flip, and
  horizontal flips do not suit digits.

Per-dataset settings of a scale (:attr:`Scale.dataset_base`, e.g. the paper scale's augmentation policy) go into
:attr:`Recipe.dataset_base` of the recipes that reproduce the paper's experiments (Tables 1-2, Figs. 2-5), so a
scale without them (quick, cpu, seed) keeps its run ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The paper's grids (Appendix A.2)
PAPER_MOMENTUM = (0.0, 0.9)
PAPER_WEIGHT_DECAY = (0.0, 1e-4, 2e-4, 5e-4, 1e-3)
PAPER_LAMBDA = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5)


@dataclass(frozen=True)
class Scale:
    """Settings one scale gives every recipe."""

    name: str
    datasets: tuple[str, ...]  # main datasets (tables, Figs. 3-4)
    sweep_datasets: tuple[str, ...]  # datasets for the costly families (Fig. 2's α sweep, Fig. 5's ResNets)
    shallow_alpha: int  # α of S-CONV / S-LOCAL / S-FC / 3-FC
    deep_alpha: int  # α of D-CONV / D-LOCAL / D-FC
    resnet_alpha: int  # ResNet18 base width for Fig. 5
    alpha_sweep: dict[str, tuple[int, ...]]  # Fig. 2: family -> α values
    epochs: int  # the paper's "400" budget
    long_epochs: int  # the paper's "4000" budget (Table 2, Table 1's second column)
    table1_epochs: tuple[int, ...]  # Table 1 columns
    sweep_epochs: int  # Fig. 2 / Fig. 5
    seeds: tuple[int, ...]
    base: dict[str, Any]  # TrainConfig fields for every run
    sgd_grid: dict[str, tuple]  # SGD baselines' tuned hyperparameters
    lasso_grid: dict[str, tuple]  # β-LASSO's tuned λ (first layer and the rest)
    sgd_fixed: dict[str, Any]  # SGD settings where nothing is tuned (Figs. 2, 4, 5)
    lasso_fixed: dict[str, Any]  # β-LASSO settings where nothing is tuned (Figs. 3, 4, 5)
    fit_target: float  # Fig. 2: training accuracy that counts as "fits the training set"
    notes: dict[str, Any] = field(default_factory=dict)
    losses: tuple[str, ...] = ("ce",)  # training losses: one arm per loss when there are several
    lasso_tuned_grid: dict[str, tuple] = field(default_factory=dict)  # extra validation-tuned β-LASSO view (seed)
    # Table 2's S-FC arms again, with the first loss, under each of these lr schedules (an extra view; seed)
    schedule_variants: tuple[str, ...] = ()
    # dataset -> TrainConfig fields for every run on that dataset (Recipe.dataset_base); empty leaves run ids as
    # they were
    dataset_base: dict[str, dict[str, Any]] = field(default_factory=dict)


QUICK = Scale(
    name="quick",
    datasets=("mnist-5k",),
    sweep_datasets=("digits",),
    shallow_alpha=2,
    deep_alpha=1,
    resnet_alpha=2,
    alpha_sweep={"resnet18": (1, 2, 4), "d-conv": (1, 2, 4), "s-conv": (1, 2, 4), "3-fc": (1, 2, 4)},
    epochs=4,
    long_epochs=8,
    table1_epochs=(4,),
    sweep_epochs=6,
    seeds=(0, 1),
    base={"batch_size": 64, "lr": 0.1, "val_fraction": 0.1, "schedule": "cosine", "device": "cpu"},
    sgd_grid={"momentum": (0.9,), "weight_decay": (0.0, 5e-4)},
    lasso_grid={"lam_first": (2e-4, 5e-4), "lam": (1e-4,)},
    sgd_fixed={"momentum": 0.9, "weight_decay": 5e-4},
    lasso_fixed={"lam_first": 5e-4, "lam": 1e-4},
    fit_target=0.95,  # a few epochs do not fit the training set to 99 %
)

CPU = Scale(
    name="cpu",
    datasets=("mnist", "fashion-mnist", "cifar10"),
    sweep_datasets=("fashion-mnist",),
    # α = 4 and 12 epochs are what lets Table 2 (7 arms × 2 grid points × 3 seeds × 3 datasets = 126 runs) finish
    # in under two hours on two CPU cores (3.6 hours of run time): an S-FC epoch at α = 4 takes ≈ 10 s on CIFAR-10
    # and ≈ 3 s on MNIST with one thread. Tuning keeps momentum 0.9 (SGD) and λ = 2e-5 for the later layers
    # (β-LASSO) and chooses weight decay / λ_first on the validation split.
    shallow_alpha=4,
    deep_alpha=2,
    resnet_alpha=8,
    alpha_sweep={"resnet18": (2, 4, 8), "d-conv": (1, 2, 4, 8), "s-conv": (2, 4, 8, 16), "3-fc": (2, 4, 8, 16)},
    epochs=12,
    long_epochs=12,
    table1_epochs=(12,),
    sweep_epochs=12,
    seeds=(0, 1, 2),
    base={"batch_size": 256, "lr": 0.1, "val_fraction": 0.1, "schedule": "cosine"},
    sgd_grid={"momentum": (0.9,), "weight_decay": (0.0, 5e-4)},
    # λ_first: at 5e-5 a dozen epochs of shrinkage leave most first-layer weights near their initial values; at
    # 2e-4 the threshold β·λ_first = 0.01 and ~2,000 steps of shrinkage make the layer mostly zero.
    lasso_grid={"lam_first": (5e-5, 2e-4), "lam": (2e-5,)},
    sgd_fixed={"momentum": 0.9, "weight_decay": 5e-4},
    lasso_fixed={"lam_first": 2e-4, "lam": 2e-5},
    fit_target=0.99,
)

PAPER = Scale(
    name="paper",
    datasets=("cifar10", "cifar100", "svhn"),
    sweep_datasets=("cifar10",),
    shallow_alpha=150,
    deep_alpha=15,
    resnet_alpha=64,
    alpha_sweep={"resnet18": (8, 16, 32, 64, 128), "d-conv": (4, 8, 16, 32, 64),
                 "s-conv": (16, 32, 64, 128, 256), "3-fc": (16, 32, 64, 128, 256)},
    epochs=400,
    long_epochs=4000,
    table1_epochs=(400, 4000),
    sweep_epochs=400,
    seeds=(0, 1, 2),
    base={"batch_size": 512, "lr": 0.1, "val_fraction": 0.1, "schedule": "cosine", "amp": "auto"},
    sgd_grid={"momentum": PAPER_MOMENTUM, "weight_decay": PAPER_WEIGHT_DECAY},
    lasso_grid={"lam_first": PAPER_LAMBDA, "lam": PAPER_LAMBDA},
    sgd_fixed={"momentum": 0.9, "weight_decay": 5e-4},
    lasso_fixed={"lam_first": 2e-5, "lam": 1e-6},
    fit_target=0.99,
    # the paper trains every CIFAR model with Fast AutoAugment; SVHN keeps its default (see the module docstring)
    dataset_base={d: {"augment_policy": "fast-autoaugment"} for d in ("cifar10", "cifar100")},
)

# The student reproduction's setting (gojkoc54/convolutions_from_scratch, src/train.py, src/models.py; the spec's
# beta-lasso.md): its nets have no biases and BatchNorm without a learned scale or shift, its lr follows torch's
# CosineAnnealingLR(T_max = epochs) stepped once an epoch. Its CIFAR-10 checkpoints are stored under names without
# the "_scheduler" its scheduled runs' names carry, so they may have been trained at a constant lr: the
# constant-lr view runs the S-FC arms that way too. An S-FC epoch at α = 1 is ~2 s on one core.
SEED = Scale(
    name="seed",
    datasets=("cifar10",),
    sweep_datasets=(),
    shallow_alpha=1,
    deep_alpha=1,
    resnet_alpha=1,
    alpha_sweep={},
    epochs=400,
    long_epochs=400,
    table1_epochs=(400,),
    sweep_epochs=400,
    seeds=(0, 1, 2),
    # test_every: the test set is scored every 10 epochs for the curves, and at every new best validation epoch
    # and the last epoch, where numbers are reported; "last" checkpoints every 10 epochs (resume replays <= 9)
    base={"batch_size": 512, "lr": 0.1, "val_fraction": 0.1, "schedule": "cosine-epoch", "augment": False,
          "input_norm": "half", "momentum": 0.0, "weight_decay": 0.0, "test_every": 10, "checkpoint_every": 10,
          "model_options": {"norm_affine": False, "out_bias": False}},
    sgd_grid={},
    lasso_grid={},
    sgd_fixed={"momentum": 0.0, "weight_decay": 0.0},
    # the reproduction's β-LASSO steps every parameter (its optimizer gets model.parameters()): biases and
    # BatchNorm parameters would get the L1 step and the threshold too (its nets have none); it takes the L1
    # step's sign after the gradient step (src/optim.py)
    lasso_fixed={"lam_first": 2e-5, "lam": 2e-5, "regularize_bias_and_norm": True, "l1_sign": "post"},
    fit_target=0.99,
    losses=("bce-onehot", "ce"),
    lasso_tuned_grid={"lam_first": (2e-5, 1e-4)},
    schedule_variants=("constant",),
)

SCALE_SETTINGS = {s.name: s for s in (QUICK, CPU, PAPER, SEED)}

# Short names of the losses in arm names and labels
LOSS_LABELS = {"ce": "CE", "bce-onehot": "BCE", "mse": "MSE"}


def loss_arms(sc: Scale) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(arm-name prefix, fixed fields, tags)`` per training loss of the scale: one loss gives no prefix and
    leaves the config (and so the run ids) as before; several give ``bce/``, ``ce/`` ... arms that set ``loss``."""
    if len(sc.losses) == 1 and sc.losses[0] == "ce":
        return [("", {}, {})]
    return [(f"{LOSS_LABELS.get(l, l).lower()}/", {"loss": l}, {"loss": LOSS_LABELS.get(l, l)}) for l in sc.losses]


def settings(scale: str) -> Scale:
    return SCALE_SETTINGS[scale]


# Labels as the paper prints them
LABELS = {"d-conv": "D-CONV", "d-local": "D-LOCAL", "d-fc": "D-FC", "s-conv": "S-CONV", "s-local": "S-LOCAL",
          "s-fc": "S-FC", "3-fc": "3-FC", "resnet18": "ResNet18"}
DEEP = ("d-conv", "d-local", "d-fc")
SHALLOW = ("s-conv", "s-local", "s-fc", "3-fc")


def fmt_settings(d: dict[str, Any]) -> str:
    """``{"momentum": (0.0, 0.9), "lr": 0.1}`` -> ``momentum ∈ {0, 0.9}, lr = 0.1`` (for recipe descriptions)."""
    parts = []
    for k, v in d.items():
        if isinstance(v, (tuple, list)):
            parts.append(f"{k} ∈ {{{', '.join(f'{x:g}' if isinstance(x, float) else str(x) for x in v)}}}")
        else:
            parts.append(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}")
    return ", ".join(parts)


def alpha_for(model: str, sc: Scale) -> int:
    return sc.deep_alpha if model in DEEP else sc.shallow_alpha


# Image side of each dataset the recipes know: the D-family halves the side four times, so it needs a multiple of
# 16; smaller or odd sides are zero-padded on the device (pad_to) — 28 -> 32 (MNIST-like), 8 -> 16 (digits).
SIDES = {"mnist": 28, "fashion-mnist": 28, "mnist-5k": 28, "digits": 8, "cifar10": 32, "cifar100": 32, "svhn": 32}


def deep_padding() -> dict[str, dict[str, int]]:
    """Arm.per_dataset for D-CONV / D-LOCAL / D-FC: ``{dataset: {"pad_to": side}}`` where the side needs it."""
    return {d: {"pad_to": -(-side // 16) * 16} for d, side in SIDES.items() if side % 16}


def per_dataset(model: str) -> dict[str, dict[str, int]]:
    return deep_padding() if model in DEEP else {}
