"""Locality of learned filters.

The participation ratio of a filter w (flattened), PR(w) = (Σw²)² / Σw⁴, is the effective number of weights
that carry its mass: 1 for a single non-zero pixel, D for a filter spread uniformly over D pixels. Its inverse
is the inverse participation ratio (IPR) of Ingrosso & Goldt (2022). The training loop logs the median PR of
the first layer's unit filters (``model.first_layer_filters()``) every epoch.

>>> f = torch.zeros(2, 1, 3, 3); f[0, 0, 1, 1] = 5.0; f[1] = 1.0
>>> participation_ratio(f)
tensor([1., 9.])
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 24  # bound the temporary memory of chunked reductions (~64 MB of float32)


def participation_ratio(filters: torch.Tensor) -> torch.Tensor:
    """(units, ...) -> (units,): (Σw²)² / Σw⁴ per unit, in float32; an all-zero unit gets 0.

    Each unit is divided by its largest |w| first (PR is scale-invariant), so w⁴ neither underflows for tiny
    weights nor overflows for large ones. Computed in chunks of units to bound memory on big layers.
    """
    if filters.dim() < 1:
        raise ValueError("filters must have a leading units dimension")
    flat = filters.detach().reshape(filters.shape[0], -1)
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
    per = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[1]))
    for start in range(0, flat.shape[0], per):
        w = flat[start : start + per].float()
        scale = w.abs().amax(dim=1, keepdim=True)
        w = w / scale.clamp_min(torch.finfo(torch.float32).tiny)
        s2 = w.square().sum(dim=1)
        s4 = w.square().square().sum(dim=1)
        out[start : start + per] = torch.where(s4 > 0, s2.square() / s4.clamp_min(1e-30), torch.zeros_like(s2))
    return out


def inverse_participation_ratio(filters: torch.Tensor) -> torch.Tensor:
    """(units, ...) -> (units,): Σw⁴ / (Σw²)², the IPR (1 for one pixel, 1/D uniform); all-zero units get 0."""
    pr = participation_ratio(filters)
    return torch.where(pr > 0, 1.0 / pr.clamp_min(1e-30), torch.zeros_like(pr))


def nonzero_per_unit(filters: torch.Tensor) -> torch.Tensor:
    """(units, ...) -> (units,) int64: the number of non-zero weights of each unit."""
    return torch.count_nonzero(filters.detach().reshape(filters.shape[0], -1), dim=1)


def median_participation_ratio(filters: torch.Tensor, *, min_nonzero: int = 1) -> float:
    """Median PR over the units with at least ``min_nonzero`` non-zero weights (NaN when there are none).

    Dead (all-zero) units are left out by default: a unit that β-LASSO switched off has no shape to measure.
    The paper's Fig. 4 draws units with ``min_nonzero=20``.
    """
    pr = participation_ratio(filters)
    keep = nonzero_per_unit(filters) >= min_nonzero
    if not bool(keep.any()):
        return float("nan")
    return float(pr[keep].median().item())


def first_layer_locality(model, *, min_nonzero: int = 1) -> dict[str, float]:
    """Summary of the first layer's unit filters: median PR, live units, their median non-zero count."""
    with torch.no_grad():
        filters = model.first_layer_filters()
    nz = nonzero_per_unit(filters)
    live = nz >= min_nonzero
    return {
        "pr_median": median_participation_ratio(filters, min_nonzero=min_nonzero),
        "units": int(filters.shape[0]),
        "units_live": int(live.sum().item()),
        "nonzero_median": float(nz[live].float().median().item()) if bool(live.any()) else 0.0,
        "filter_size": int(filters[0].numel()) if filters.shape[0] else 0,
    }
