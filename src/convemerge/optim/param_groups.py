"""Parameter groups for β-LASSO and the SGD baselines: which tensors get the L1 step / weight decay.

A model's parameters fall into three named groups (empty ones are left out, each parameter is in exactly one):

``"first"``          the weight of the first weight layer (:func:`convemerge.models.weight_layers`; for a model
                     without any, the first ≥ 2-d ``weight`` in module order);
``"weights"``        every other layer weight: the weights of ``weight_layers(model)`` plus any parameter named
                     ``weight`` with ≥ 2 dimensions registered on a module that is not a normalisation layer
                     (conv 4-d, locally connected 3-d, linear 2-d);
``"bias_and_norm"``  everything else: biases, BatchNorm / LayerNorm / GroupNorm scales and shifts, any other
                     free parameter.

"Excluded" (the default) means the third group has λ = 0 for β-LASSO — no L1 step, and its threshold β·0 = 0
keeps every value, so these parameters follow plain SGD — and weight decay 0 for SGD.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from convemerge.errors import ConfigError
from convemerge.models.base import weight_layers

__all__ = ["beta_lasso_param_groups", "sgd_param_groups", "split_parameters"]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _check_strength(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def split_parameters(model: nn.Module) -> tuple[nn.Parameter | None, list[nn.Parameter], list[nn.Parameter]]:
    """``(first_weight, other_weights, bias_and_norm)`` of ``model``, each parameter exactly once, module order.

    ``first_weight`` is None only when the model has no layer weight at all.
    """
    scanned = [
        module._parameters["weight"]
        for module in model.modules()
        if not isinstance(module, _NORM_TYPES)
        and module._parameters.get("weight") is not None
        and module._parameters["weight"].dim() >= 2
    ]
    # a model that declares its weight layers leads with them (so weight_layers(model)[0] is "first"); for any
    # other module the scan, in module order, already holds every weight of weight_layers(model)
    declares = callable(getattr(model, "weight_layers", None))
    declared = [layer.module.weight for layer in weight_layers(model)] if declares else []
    weights = _unique(declared + scanned)  # declared first so that weight_layers()[0] leads
    if not weights:
        return None, [], _unique(list(model.parameters()))
    first = weights[0]
    weight_ids = {id(p) for p in weights}
    rest = [p for p in _unique(list(model.parameters())) if id(p) not in weight_ids]
    return first, weights[1:], rest


def _groups(model: nn.Module, key: str, first: float, others: float, rest: float) -> list[dict[str, Any]]:
    first_w, other_w, rest_p = split_parameters(model)
    groups = [
        {"params": [first_w] if first_w is not None else [], key: first, "name": "first"},
        {"params": other_w, key: others, "name": "weights"},
        {"params": rest_p, key: rest, "name": "bias_and_norm"},
    ]
    return [g for g in groups if g["params"]]


def beta_lasso_param_groups(
    model: nn.Module, lam: float, lam_first: float | None = None, *, include_bias_and_norm: bool = False
) -> list[dict[str, Any]]:
    """Groups for :class:`~convemerge.optim.BetaLasso`: λ_first on the first layer weight, λ on the other weights.

    Biases and normalisation parameters get λ = 0 (excluded: plain SGD, never thresholded) unless
    ``include_bias_and_norm``, which gives them λ. Each group carries ``"name"`` and ``"lam"``; lr and β come
    from the optimizer's defaults.

    Example:
        >>> from torch import nn
        >>> from convemerge.optim import BetaLasso, beta_lasso_param_groups
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        >>> groups = beta_lasso_param_groups(net, lam=1e-5, lam_first=2e-5)
        >>> [(g["name"], g["lam"], len(g["params"])) for g in groups]
        [('first', 2e-05, 1), ('weights', 1e-05, 1), ('bias_and_norm', 0.0, 4)]
        >>> opt = BetaLasso(groups, lr=0.1, beta=50.0)
    """
    lam = _check_strength("lam", lam)
    lam_first = lam if lam_first is None else _check_strength("lam_first", lam_first)
    if split_parameters(model)[0] is None:
        raise ConfigError(f"{type(model).__name__} has no conv/local/linear weight for beta-LASSO to sparsify")
    return _groups(model, "lam", lam_first, lam, lam if include_bias_and_norm else 0.0)


def sgd_param_groups(
    model: nn.Module, weight_decay: float, *, include_bias_and_norm: bool = False
) -> list[dict[str, Any]]:
    """Groups for ``torch.optim.SGD`` (or Adam): weight decay on layer weights, none on biases and norms.

    Same split as :func:`beta_lasso_param_groups` (the first layer is its own group, with the same decay).
    """
    wd = _check_strength("weight_decay", weight_decay)
    return _groups(model, "weight_decay", wd, wd, wd if include_bias_and_norm else 0.0)
