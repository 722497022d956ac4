"""Deterministic, seeded, stratified sampling: hold-out splits, exact-size subsets, the fixed test subsample.

The validation set is always cut from the TRAIN split; the test split is never used to choose anything.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from convemerge.errors import ConfigError

from .imagedata import ImageData


def split_indices(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) sorted index tensors: from each class, ``floor(fraction * n_class + 0.5)`` random members
    are held out. The same ``labels``, ``fraction`` and ``seed`` always give the same split (torch's CPU generator).
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"a hold-out fraction must lie strictly between 0 and 1, got {fraction}")
    labels = labels.reshape(-1).to(torch.int64).cpu()
    n = labels.shape[0]
    if n == 0:
        raise ConfigError("cannot split an empty data set")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    shuffled = labels[perm]
    order = torch.sort(shuffled, stable=True).indices        # grouped by class, random order within a class
    idx, lab = perm[order], shuffled[order]
    counts = torch.bincount(lab)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[lab]                      # position of each sample within its class
    n_held = torch.floor(counts.to(torch.float64) * fraction + 0.5).to(torch.int64)
    held = rank < n_held[lab]
    return torch.sort(idx[~held]).values, torch.sort(idx[held]).values


def train_val_split(data: ImageData, val_fraction: float = 0.1, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Hold out a stratified ``val_fraction`` of a TRAIN split: returns (train, val) with ``val.split == "val"``.

    Both keep ``data.mean``/``data.std`` (the statistics of the full train split), so they are standardised alike.

    >>> import torch
    >>> from convemerge.data.imagedata import ImageData
    >>> d = ImageData("t", "train", torch.zeros(20, 1, 2, 2, dtype=torch.uint8), torch.arange(20) % 2, ["a", "b"],
    ...               (0.0,), (1.0,), False)
    >>> tr, va = train_val_split(d, 0.2, seed=0)
    >>> len(tr), len(va), va.split, va.labels.bincount().tolist()
    (16, 4, 'val', [2, 2])
    """
    if data.split != "train":
        raise ConfigError(f"train_val_split takes a train split, got {data.split!r}: "
                          f"the test split must never be used for selection")
    keep, held = split_indices(data.labels, val_fraction, seed)
    train = data.subset(keep)
    val = replace(data.subset(held), split="val")
    return train, val


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices (sorted) of a seeded subset of exactly ``n`` samples, each class in proportion to its count.

    Quotas are ``n * count / N`` rounded down, the remainder going to the classes with the largest
    fractional parts (ties to the lower class index); inside a class the samples are drawn at random.
    """
    total = labels.numel()
    if n > total:
        raise ConfigError(f"n_train={n} exceeds the {total} training samples available; lower --n-train")
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    short = n - int(quota.sum())
    if short > 0:
        order = torch.argsort(-(exact - quota), stable=True)
        quota[order[:short]] += 1
    picks = []
    for cls, q in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        picks.append(members[torch.randperm(members.numel(), generator=g)[:q]])
    return torch.sort(torch.cat(picks)).values


#: seed of the test subsample (``n_test``): fixed, so every seed and every method is scored on the same images
TEST_SUBSET_SEED = 0


def fixed_test_subset(test, n_test: int | None):
    """The ``n_test`` images of ``test`` every run scores on (stratified, drawn with :data:`TEST_SUBSET_SEED`);
    all of it when ``n_test`` is None or not smaller than the split."""
    if n_test is None or n_test >= len(test):
        return test
    return test.subset(stratified_subset(test.labels, n_test, TEST_SUBSET_SEED))
