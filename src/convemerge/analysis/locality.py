"""Moved to :mod:`convemerge.models.locality` (the training loop logs it every epoch, and ``train`` sits below
``analysis``); kept so old imports work."""

from convemerge.models.locality import (
    first_layer_locality,
    inverse_participation_ratio,
    median_participation_ratio,
    nonzero_per_unit,
    participation_ratio,
)

__all__ = ["participation_ratio", "inverse_participation_ratio", "nonzero_per_unit", "median_participation_ratio",
           "first_layer_locality"]
