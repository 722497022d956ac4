"""``create_optimizer(name, model, ...)``: the optimizers a run can use, over their parameter groups.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> opt = create_optimizer("beta-lasso", net, lr=0.1, lam=1e-4, lam_first=2e-4, beta=50.0)
>>> [(g["name"], g["lam"]) for g in opt.param_groups]
[('first', 0.0002), ('weights', 0.0001), ('bias_and_norm', 0.0)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from convemerge.errors import ConfigError
from convemerge.optim.beta_lasso import BetaLasso
from convemerge.optim.param_groups import beta_lasso_param_groups, sgd_param_groups

__all__ = ["OPTIMIZERS", "create_optimizer"]

OPTIMIZERS = ("sgd", "adam", "beta-lasso")


def create_optimizer(name: str, model: nn.Module, *, lr: float, momentum: float = 0.0, nesterov: bool = False,
                     weight_decay: float = 0.0, adam_betas: Sequence[float] = (0.9, 0.999), lam: float = 0.0,
                     lam_first: float | None = None, beta: float = 0.0,
                     regularize_bias_and_norm: bool = False, l1_sign: str = "pre") -> torch.optim.Optimizer:
    """SGD / Adam over :func:`sgd_param_groups` (weight decay on weights only), or β-LASSO over
    :func:`beta_lasso_param_groups` (λ on weights, ``lam_first`` on the first layer; ``l1_sign`` as
    :class:`BetaLasso`'s)."""
    if name == "beta-lasso":
        groups = beta_lasso_param_groups(model, lam, lam_first, include_bias_and_norm=regularize_bias_and_norm)
        return BetaLasso(groups, lr=lr, lam=lam, beta=beta, l1_sign=l1_sign)
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    groups = sgd_param_groups(model, weight_decay, include_bias_and_norm=regularize_bias_and_norm)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(adam_betas))
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
