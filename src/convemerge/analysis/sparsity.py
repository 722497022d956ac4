"""Sparsity of a model's weight layers: non-zero counts per layer and in total (Fig. 3 of the β-LASSO paper).

Only the weights of conv / locally-connected / linear layers count (no biases, no normalisation parameters),
as in the paper's parameter counts. A model with ``weight_layers()`` (every registered model) is read through
it; any other ``nn.Module`` falls back to the ``weight`` of its Conv / Linear modules.

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

_FALLBACK_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weight tensor of every weight layer, keyed by the layer's module name, ordered input -> output."""
    if hasattr(model, "weight_layers"):
        return {layer.name: layer.module.weight for layer in model.weight_layers()}
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, _FALLBACK_TYPES)}


@torch.no_grad()
def nonzero_per_layer(model: nn.Module) -> dict[str, int]:
    """Number of non-zero weights of each weight layer (biases and norms excluded)."""
    return {name: int(torch.count_nonzero(w).item()) for name, w in weight_tensors(model).items()}


def weights_per_layer(model: nn.Module) -> dict[str, int]:
    """Number of weights of each weight layer (what ``nonzero_per_layer`` is out of)."""
    return {name: w.numel() for name, w in weight_tensors(model).items()}


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
