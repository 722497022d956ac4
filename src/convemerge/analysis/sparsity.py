"""Sparsity of a model's weight layers: non-zero counts per layer and in total (Fig. 3 of the β-LASSO paper).

Only the weights of conv / locally-connected / linear layers count (no biases, no normalisation parameters),
as in the paper's parameter counts; which modules those are is decided once, by
:func:`convemerge.models.weight_layers`.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> with torch.no_grad():
...     _ = net[0].weight.zero_()
>>> nonzero_per_layer(net)
{'0': 0, '2': 6}
"""

from __future__ import annotations

import torch
from torch import nn

from convemerge.models.base import nonzero_per_layer, weight_layers, weights_per_layer

__all__ = ["weight_tensors", "nonzero_per_layer", "weights_per_layer", "nonzero_total", "sparsity_table"]


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weight tensor of every weight layer (:func:`convemerge.models.weight_layers`), keyed by the layer's module
    name, ordered input -> output."""
    return {layer.name: layer.module.weight for layer in weight_layers(model)}


def nonzero_total(model: nn.Module) -> int:
    """Non-zero weights over all weight layers."""
    return sum(nonzero_per_layer(model).values())


def sparsity_table(model: nn.Module) -> list[dict]:
    """One row per weight layer: name, weights, non-zero, density (non-zero / weights); a last row 'total'."""
    nz = nonzero_per_layer(model)
    n = weights_per_layer(model)
    rows = [{"layer": k, "weights": n[k], "nonzero": nz[k], "density": nz[k] / n[k] if n[k] else 0.0} for k in nz]
    tw, tn = sum(n.values()), sum(nz.values())
    rows.append({"layer": "total", "weights": tw, "nonzero": tn, "density": tn / tw if tw else 0.0})
    return rows
