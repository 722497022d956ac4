"""Data: official file formats with checksums, embedded offline sets, synthetic locality tasks, and in-memory
batching with on-device augmentation.

>>> from convemerge.data import load_dataset, train_val_split, ImageLoader
>>> train = load_dataset("mnist-5k", "train")
>>> train, val = train_val_split(train, 0.1, seed=0)
>>> len(train), len(val), train.mean == val.mean
(3600, 400, True)
"""

from .imagedata import ImageData, channel_stats
from .loader import ImageLoader, random_crop_flip
from .registry import clear_stats_cache, dataset_entry, list_datasets, load_dataset, register_dataset
from .standardise import standardised_arrays
from .split import fixed_test_subset, split_indices, stratified_subset, train_val_split
from .synthetic import make_digit_in_noise, make_noise_row

__all__ = [
    "ImageData", "ImageLoader", "channel_stats", "clear_stats_cache", "dataset_entry", "list_datasets",
    "load_dataset", "make_digit_in_noise", "make_noise_row", "random_crop_flip", "register_dataset",
    "fixed_test_subset", "split_indices", "standardised_arrays", "stratified_subset", "train_val_split",
]
