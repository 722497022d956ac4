"""``ImageData``: one split of an image data set, held whole in memory.

Real image sets keep their pixels as uint8 (N, C, H, W) so that even CIFAR-10 fits in ~150 MB and batches are cut
by indexing; synthetic tasks keep float32. ``mean``/``std`` are per-channel statistics of the TRAIN split (in units
of ``images / 255`` for uint8, raw units for float), so every split of a data set is standardised the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class ImageData:
    """Images, labels and the metadata a model needs (classes, channel statistics, augmentation default).

    >>> import torch
    >>> d = ImageData("toy", "train", torch.zeros(4, 1, 2, 3, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
    ...               ["a", "b"], (0.0,), (1.0,), False)
    >>> len(d), d.num_classes, d.in_chans, d.image_shape
    (4, 2, 1, (2, 3))
    >>> len(d.subset(slice(0, 2)))
    2
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor | slice) -> "ImageData":
        """The same data set restricted to ``index`` (a slice, an index tensor or a boolean mask)."""
        return replace(self, images=self.images[index], labels=self.labels[index])

    def __repr__(self) -> str:  # the default repr would print every pixel
        return (f"ImageData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={tuple(self.images.shape[1:])}, dtype={self.images.dtype}, classes={self.num_classes})")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of ``images`` (N, C, H, W).

    uint8 images are summarised exactly through a 256-bin histogram per channel (integer counts, no float
    accumulation error) and reported in units of ``images / 255``; float images in their own units (float64 sums).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats needs a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    means, stds = [], []
    if images.dtype == torch.uint8:
        levels = torch.arange(256, dtype=torch.float64)
        for c in range(images.shape[1]):
            # bincount takes the uint8 values directly: no int64 copy of the pixels
            counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
            n = counts.sum()
            m = (counts * levels).sum() / n
            var = (counts * (levels - m) ** 2).sum() / n
            means.append(float(m) / 255.0)
            stds.append(float(var.sqrt()) / 255.0)
    else:
        x = images.to(torch.float64).transpose(0, 1).reshape(images.shape[1], -1)
        means = [float(v) for v in x.mean(dim=1)]
        stds = [float(v) for v in x.std(dim=1, correction=0)]
    return tuple(means), tuple(stds)


@dataclass
class RawSplit:
    """What a data-set loader hands to :func:`convemerge.data.load_dataset` before statistics are attached."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    verified: bool = False  # every file matched an official digest, so recorded statistics of the release apply
    source: str = ""        # where the data came from, for messages and ``convemerge data info``
