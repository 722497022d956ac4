"""``ImageLoader``: batches cut by index from a data set held whole in memory (on the target device), with
augmentation and standardisation done on the device, vectorised over the batch.

All randomness — each epoch's permutation, each batch's crop offsets and flips — is drawn from one CPU
``torch.Generator`` in a fixed order (permutation when an epoch starts; then per batch: offsets, flips), and only
then moved to the device. So CPU and CUDA runs see the same numbers, and saving ``generator.get_state()`` at an
epoch boundary and restoring it later reproduces the following epochs exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from convemerge.errors import ConfigError

from . import autoaugment
from .imagedata import ImageData

PAD = 4  # pixels of zero padding before a random crop back to the original size


def random_crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """Crop each image of ``x`` (B, C, H, W) from its zero-padded copy at ``offsets`` (B, 2) (row, column, each in
    0..2*pad), mirrored left-right where ``flips`` (B,) is true. One gather for the whole batch, no Python loop:
    each output pixel's position in the flattened padded image is computed once per sample and shared by all
    channels (an expanded index), which is several times faster than a per-sample loop or 4-d fancy indexing."""
    b, c, h, w = x.shape
    wp = w + 2 * pad
    padded = F.pad(x, (pad, pad, pad, pad)).reshape(b, c, -1)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = offsets[:, 0:1] + ar_h                                                 # (B, H)
    cols = offsets[:, 1:2] + torch.where(flips[:, None], (w - 1) - ar_w, ar_w)    # (B, W)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(padded, 2, flat).reshape(b, c, h, w)


def shard_slice(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` items split over ``world`` (``torch.tensor_split``'s sizes)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class ImageLoader:
    """Iterate over ``data`` in batches of ``(x, y)``: x float32 (B, C, H, W) standardised with
    ``data.mean``/``data.std``, y int64 (B,), both on ``device``.

    ``augment=True`` applies random crop (4-pixel zero padding) + horizontal flip, but only where it is meaningful
    for the data (``data.augment``: CIFAR yes; digits, MNIST-likes, SVHN and the synthetic tasks no); to force it,
    pass ``dataclasses.replace(data, augment=True)``. ``generator`` must be a CPU generator; without one, a new
    generator is seeded from torch's global generator (so ``torch.manual_seed`` still makes runs repeatable).

    ``cache=True`` standardises the whole set once and cuts every batch from that float32 copy (4 bytes a pixel
    instead of 1) — for loaders iterated many times, e.g. a training run's. The batches are bit-identical to the
    per-batch path (the same multiply-add, element by element). It applies only where batches are not augmented:
    crops pad with black pixels and policies work on 8-bit images, both before standardisation.

    >>> import torch
    >>> from convemerge.data import load_dataset
    >>> loader = ImageLoader(load_dataset("digits"), 256, shuffle=True, generator=torch.Generator().manual_seed(0))
    >>> x, y = next(iter(loader))
    >>> x.shape, x.dtype, y.dtype, len(loader)
    (torch.Size([256, 1, 8, 8]), torch.float32, torch.int64, 6)
    """

    def __init__(self, data: ImageData, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                 drop_last: bool = False, shard: tuple[int, int] | None = None, policy=None, cache: bool = False):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if generator is not None and generator.device.type != "cpu":
            raise ConfigError("ImageLoader needs a CPU torch.Generator (random numbers are drawn on the CPU, "
                              "then moved), got one on " + str(generator.device))
        if len(data) == 0:
            raise ConfigError(f"{data.name} {data.split}: cannot batch an empty data set")
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = bool(augment and data.augment)
        self.drop_last = drop_last
        # an automatic policy (data.autoaugment.Policy) applied per image before crop+flip, then Cutout 16 px
        self.policy = policy if self.augment else None
        if self.policy is not None and data.images.dtype != torch.uint8:
            raise ConfigError(f"{data.name}: augmentation policies work on 8-bit images, this data set holds "
                              f"{data.images.dtype}; drop --augment-policy")
        # (rank, world size): yield only this rank's contiguous part of every batch. The random draws are still
        # made for the whole batch, so every rank's generator advances alike (see train/distributed.py)
        self.shard = shard
        self.global_batch = 0  # size of the last batch before sharding
        self.device = torch.device(device)
        if generator is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        mean = torch.tensor(data.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        if mean.shape[1] != data.in_chans or std.shape[1] != data.in_chans or bool((std <= 0).any()):
            raise ConfigError(f"{data.name}: mean/std must give one value per channel ({data.in_chans}), std > 0")
        unit = 255.0 if data.images.dtype == torch.uint8 else 1.0
        # (x / unit - mean) / std folded into one multiply-add
        self._scale = 1.0 / (unit * std)
        self._shift = -mean / std
        # the whole set standardised once (``cache``), or None: batches are standardised as they are cut
        self._standardised = self.standardise(self.images) if cache and not self.augment else None

    @property
    def cached(self) -> bool:
        """Whether batches are cut from a standardised copy held by the loader (``cache=True``, no augmentation)."""
        return self._standardised is not None

    def standardised_images(self) -> torch.Tensor:
        """Every image of the set, standardised (float32 (N, C, H, W), on the loader's device; not augmented)."""
        return self._standardised if self._standardised is not None else self.standardise(self.images)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Raw images (uint8 or float) on the loader's device -> standardised float32 (a new tensor)."""
        # one multiply-add written into the converted copy: the same values as a fresh addcmul, one pass fewer
        y = x.to(torch.float32) if x.dtype != torch.float32 else x.clone()
        return torch.addcmul(self._shift, y, self._scale, out=y)

    def __iter__(self):
        n = len(self.data)
        gen = self.generator
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.augment:
                offsets = torch.randint(0, 2 * PAD + 1, (idx.shape[0], 2), generator=gen)
                flips = torch.rand(idx.shape[0], generator=gen) < 0.5
                if self.policy is not None:
                    draws = autoaugment.draw(self.policy, idx.shape[0], gen)
                    centres = torch.rand(idx.shape[0], 2, generator=gen)
            self.global_batch = idx.shape[0]
            if self.shard is not None:
                part = shard_slice(idx.shape[0], *self.shard)
                idx = idx[part]
                if self.augment:
                    offsets, flips = offsets[part], flips[part]
                if self.policy is not None:
                    draws, centres = draws[part], centres[part]
            idx_d = idx.to(self.device, non_blocking=True)
            if self._standardised is not None:
                yield self._standardised.index_select(0, idx_d), self.labels[idx_d]
                continue
            x = self.images.index_select(0, idx_d)  # ~3x faster than advanced indexing for uint8 rows
            if self.policy is not None:
                x = autoaugment.apply_policy(x, self.policy, draws)
            if self.augment:
                x = random_crop_flip(x, offsets.to(self.device, non_blocking=True),
                                     flips.to(self.device, non_blocking=True))
            x = self.standardise(x)
            if self.policy is not None:
                x = autoaugment.cutout(x, centres.to(self.device, non_blocking=True))
            yield x, self.labels[idx_d]
