"""A run's network from its record: the architecture from config + geometry, and its initial weights.

The initial weights of a run are defined here, once: torch's global generator is seeded with the run's
``seed`` and the model is built right after (:func:`init_model`). The training loop builds its model with
this function, so rebuilding a run's initialisation later needs nothing stored but the config.

>>> cfg = {"model": "s-fc", "alpha": 2, "seed": 0}
>>> geo = {"image_size": 8, "in_chans": 1, "num_classes": 10}
>>> a, b = init_model(cfg, geo, keep_rng=True), init_model(cfg, geo, keep_rng=True)
>>> all(bool((p == q).all()) for p, q in zip(a.parameters(), b.parameters()))
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["create_run_model", "init_model"]


def _size(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def create_run_model(config: Mapping[str, Any], geometry: Mapping[str, Any]) -> nn.Module:
    """``create_model`` for a run's ``config`` (model, alpha, model_options) on ``geometry`` (image_size,
    in_chans, num_classes), with whatever weights the global generator gives."""
    from convemerge.models import create_model

    return create_model(config["model"], alpha=config.get("alpha"), image_size=_size(geometry["image_size"]),
                        in_chans=geometry["in_chans"], num_classes=geometry["num_classes"],
                        **(config.get("model_options") or {}))


def init_model(config: Mapping[str, Any], geometry: Mapping[str, Any], *, keep_rng: bool = False) -> nn.Module:
    """The run's network before its first step: ``torch.manual_seed(config["seed"])``, then
    :func:`create_run_model`.

    The training loop calls it with ``keep_rng=False``: the global generator is left where initialisation
    ended, and the run draws on from there. ``keep_rng=True`` restores the caller's generator afterwards.
    """
    if keep_rng:
        with torch.random.fork_rng(devices=[]):
            return init_model(config, geometry)
    torch.manual_seed(int(config["seed"]))
    return create_run_model(config, geometry)
