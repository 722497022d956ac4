"""Turn a TrainConfig into the pieces of a run: device, precision, data splits, model, optimizer, RNG seeds."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from convemerge.data.split import TEST_SUBSET_SEED, fixed_test_subset, stratified_subset  # noqa: F401 (old path)
from convemerge.devices import resolve_device  # noqa: F401 (old path)
from convemerge.errors import ConfigError, GeometryError
from convemerge.train.config import TrainConfig


# ----------------------------------------------------------------------------- device and precision
@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast dtype (None = full fp32) and whether a GradScaler is needed."""

    dtype: torch.dtype | None
    scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for the forward pass. Parameters (BN's included) stay fp32: autocast only
        lowers the inputs of matmul-like ops, and BN's statistics and affine parameters remain fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """``auto``: bf16 on CUDA when supported, else fp16 with a GradScaler; fp32 on CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return Precision(None, False)
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)  # fp16's narrow range needs loss scaling


# ----------------------------------------------------------------------------- seeds
def derived_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for one random stream of a run (0: init, 1: loader, ...)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ----------------------------------------------------------------------------- data
@dataclass
class RunData:
    """The data of a run: train / validation / test sets and the geometry the model sees."""

    train: Any  # ImageData
    val: Any | None  # ImageData, or None when val_fraction == 0
    test: Any  # ImageData
    image_size: tuple[int, int]  # (H, W) the model sees (after pad_to)
    in_chans: int
    num_classes: int
    augment: bool
    pad_fill: torch.Tensor  # (C,) standardised value of a zero (black) pixel: what padding writes


def prepare_data(cfg: TrainConfig) -> RunData:
    """Load the dataset, hold out validation (stratified, seeded), subsample the train part if asked."""
    from convemerge.data import load_dataset, train_val_split

    full = load_dataset(cfg.dataset, "train", root=cfg.data_dir, **cfg.dataset_options)
    test = load_dataset(cfg.dataset, "test", root=cfg.data_dir, **cfg.dataset_options)
    if cfg.val_fraction > 0:
        train, val = train_val_split(full, val_fraction=cfg.val_fraction, seed=derived_seed(cfg.seed, 2) % 2**31)
    else:
        train, val = full, None
    if cfg.n_train is not None:
        train = train.subset(stratified_subset(train.labels, cfg.n_train, derived_seed(cfg.seed, 3)))
    test = fixed_test_subset(test, cfg.n_test)

    h, w = full.image_shape
    if cfg.pad_to is not None:
        if cfg.pad_to < max(h, w):
            raise ConfigError(f"pad_to={cfg.pad_to} is smaller than the {h}x{w} images of {cfg.dataset}; "
                              f"give a side >= {max(h, w)}")
        h = w = cfg.pad_to
    augment = full.augment if cfg.augment is None else bool(cfg.augment)
    augment = augment or cfg.augment_policy is not None  # a policy turns augmentation on
    if augment and not full.augment:  # the loader augments only sets marked for it: mark this one, as asked
        train = dataclasses.replace(train, augment=True)
    if cfg.input_norm == "half":  # (x - 0.5) / 0.5 per channel: inputs in [-1, 1], as the student reproduction
        half = (0.5,) * full.in_chans
        train, test = (dataclasses.replace(d, mean=half, std=half) for d in (train, test))
        val = dataclasses.replace(val, mean=half, std=half) if val is not None else None
        full = dataclasses.replace(full, mean=half, std=half)
    mean = torch.tensor(full.mean, dtype=torch.float32)
    std = torch.tensor(full.std, dtype=torch.float32)
    return RunData(
        train=train,
        val=val,
        test=test,
        image_size=(h, w),
        in_chans=full.in_chans,
        num_classes=full.num_classes,
        augment=augment,
        pad_fill=-mean / std,
    )


def pad_batch(x: torch.Tensor, size: tuple[int, int], fill: torch.Tensor) -> torch.Tensor:
    """Centre ``x`` (B, C, H, W) in a (B, C, *size) canvas of per-channel ``fill`` (on x's device); the extra
    row/column of an odd margin goes to the bottom/right."""
    b, c, h, w = x.shape
    if (h, w) == tuple(size):
        return x
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    out = fill.to(device=x.device, dtype=x.dtype).view(1, c, 1, 1).expand(b, c, *size).clone()
    out[:, :, top : top + h, left : left + w] = x
    return out


# ----------------------------------------------------------------------------- model and optimizer
def build_model(cfg: TrainConfig, data: RunData) -> nn.Module:
    """The run's initial network (:func:`convemerge.runs.init_model`: seeded with ``cfg.seed``) on the data's
    geometry; impossible geometry -> its ConfigError, plus a pad hint."""
    from convemerge.runs import init_model

    config = {"model": cfg.model, "alpha": cfg.alpha, "model_options": cfg.model_options, "seed": cfg.seed}
    geometry = {"image_size": data.image_size, "in_chans": data.in_chans, "num_classes": data.num_classes}
    try:
        return init_model(config, geometry)
    except GeometryError as exc:  # the images do not fit the model: padding them may
        if cfg.pad_to is None:
            raise GeometryError(f"{exc} (--pad-to 32 zero-pads them on the device)") from None
        raise


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """:func:`convemerge.optim.create_optimizer` with the config's settings."""
    from convemerge.optim import create_optimizer

    return create_optimizer(cfg.optimizer, model, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                            weight_decay=cfg.weight_decay, adam_betas=cfg.adam_betas, lam=cfg.lam,
                            lam_first=cfg.lam_first, beta=cfg.beta,
                            regularize_bias_and_norm=cfg.regularize_bias_and_norm, l1_sign=cfg.l1_sign)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, steps_per_epoch: int = 1) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based): linear warm-up, then cosine to 0
    at ``total_steps`` (``cosine``: per step, T = total steps; ``cosine-epoch``: the value at the step that starts
    the epoch, held through it — lr_e = ½(1 + cos(π e/E)) for epoch e of E without warm-up) or constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    import math

    if schedule == "cosine-epoch":
        step = max(warmup_steps, step - step % max(1, steps_per_epoch))
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
