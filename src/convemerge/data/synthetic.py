"""Synthetic tasks where the signal is local (the feature-learning spec, section 3).

* ``noise-row``: a 16x32 image of Gaussian noise with standard deviation ``sqrt(sigma / 32)``; one uniformly
  chosen row is replaced by ``±w*/‖w*‖`` with ``w*`` all ones (every entry ``±1/sqrt(32)``). The label is the
  sign (class 0: negative, class 1: positive). Defaults: 500 train / 500 test, ``sigma = 0.1``.
* ``digit-in-noise``: a 42x42 frame of ``N(0, 1) * 0.5 * sqrt(sigma)`` noise (default ``sigma = 2``, i.e. noise
  standard deviation ~0.71) with a 28x28 MNIST digit (pixels / 255, in [0, 1]) pasted over it — the digit's
  square replaces the noise — at a uniformly random position. The label is the digit. Digits come from the
  embedded ``mnist-5k`` set so this works offline; train and test use disjoint digit images.
  Defaults: 2,000 train / 2,000 test.

Both are drawn from one CPU generator seeded with ``seed`` (train and test together, so they never overlap and
do not depend on which split is requested first). Images are float32 (N, 1, H, W).
"""

from __future__ import annotations

import math

import torch

from convemerge.errors import ConfigError

from .catalog import DIGIT_CLASSES
from .embedded import mnist_5k_all
from .imagedata import RawSplit

NOISE_ROW_SHAPE = (16, 32)
FRAME = 42


def _counts(n_train: int, n_test: int) -> None:
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"n_train and n_test must be positive, got {n_train} and {n_test}")


def make_noise_row(n_train: int = 500, n_test: int = 500, *, sigma: float = 0.1, seed: int = 0
                   ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train images, labels), (test images, labels)) of the noise-row task."""
    _counts(n_train, n_test)
    if sigma < 0:
        raise ConfigError(f"sigma must be >= 0, got {sigma}")
    h, w = NOISE_ROW_SHAPE
    n = n_train + n_test
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(n, 1, h, w, generator=gen) * math.sqrt(sigma / w)
    rows = torch.randint(0, h, (n,), generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    signs = (2 * labels - 1).to(torch.float32)
    x[torch.arange(n), 0, rows, :] = (signs / math.sqrt(w))[:, None].expand(n, w)
    return (x[:n_train], labels[:n_train]), (x[n_train:], labels[n_train:])


def make_digit_in_noise(n_train: int = 2000, n_test: int = 2000, *, sigma: float = 2.0, seed: int = 0
                        ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train images, labels), (test images, labels)) of the digit-in-noise task."""
    _counts(n_train, n_test)
    if sigma < 0:
        raise ConfigError(f"sigma must be >= 0, got {sigma}")
    digits, digit_labels = mnist_5k_all()
    n = n_train + n_test
    if n > digits.shape[0]:
        raise ConfigError(f"digit-in-noise draws distinct digits from the 5,000 of mnist-5k; "
                          f"n_train + n_test = {n} is too many")
    gen = torch.Generator().manual_seed(int(seed))
    pick = torch.randperm(digits.shape[0], generator=gen)[:n]
    frames = torch.randn(n, 1, FRAME, FRAME, generator=gen) * (0.5 * math.sqrt(sigma))
    size = digits.shape[-1]
    offsets = torch.randint(0, FRAME - size + 1, (n, 2), generator=gen)
    rows = offsets[:, 0:1] + torch.arange(size)                     # (n, 28)
    cols = offsets[:, 1:2] + torch.arange(size)
    frames[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]] = \
        digits[pick, 0].to(torch.float32) / 255.0
    labels = digit_labels[pick]
    return (frames[:n_train], labels[:n_train]), (frames[n_train:], labels[n_train:])


def load_noise_row(split: str, *, n_train: int = 500, n_test: int = 500, sigma: float = 0.1, seed: int = 0
                   ) -> RawSplit:
    train, test = make_noise_row(n_train, n_test, sigma=sigma, seed=seed)
    x, y = train if split == "train" else test
    return RawSplit(x.contiguous(), y.contiguous(), ["negative", "positive"], False, f"generated (seed {seed})")


def load_digit_in_noise(split: str, *, n_train: int = 2000, n_test: int = 2000, sigma: float = 2.0, seed: int = 0
                        ) -> RawSplit:
    train, test = make_digit_in_noise(n_train, n_test, sigma=sigma, seed=seed)
    x, y = train if split == "train" else test
    return RawSplit(x.contiguous(), y.contiguous(), list(DIGIT_CLASSES), False, f"generated (seed {seed})")
