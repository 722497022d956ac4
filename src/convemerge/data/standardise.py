"""Whole data sets as standardised arrays, with the same arithmetic as the training loader.

There is one standardisation in the package, :meth:`ImageLoader.standardise`: ``(x / unit − mean) / std`` per
channel (``unit`` = 255 for uint8 images, 1 for float ones) with the set's train-split statistics. Kernel
machines and analyses that want every image at once use :func:`standardised_arrays`, which calls it.

>>> from convemerge.data import load_dataset
>>> x, y = standardised_arrays(load_dataset("digits"))
>>> x.dtype, y.dtype, tuple(x.shape[1:])
(torch.float32, torch.int64, (1, 8, 8))
"""

from __future__ import annotations

import torch

from .imagedata import ImageData
from .loader import ImageLoader

__all__ = ["standardised_arrays"]


def standardised_arrays(data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 images (N, C, H, W), int64 labels (N,)) of ``data``, standardised as every model sees them."""
    # an explicit generator: the loader would otherwise draw its seed from torch's global generator
    loader = ImageLoader(data, max(1, len(data)), generator=torch.Generator())
    return loader.standardised_images(), data.labels.to(torch.int64)
