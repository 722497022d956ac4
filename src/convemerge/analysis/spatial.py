"""Spatial locality of first-layer filters: concentration around the peak and weight sharing.

Filters are ``(units, C, H, W)`` tensors, e.g. ``model.first_layer_filters()`` (an S-FC unit's incoming weights as
an image; S-LOCAL units embedded at their receptive field). Conventions used by every function here:

- *energy* of a unit at pixel (i, j) is ``Σ_c w[c, i, j]²``; its *peak* is the pixel of largest energy (ties go to
  the first pixel in row-major order);
- a *peak-centred crop* is the ``k×k`` window (all channels) centred on the peak, zero-padded past the border;
- units whose weights are all zero have no peak and are left out of the averages (they are counted in ``dead``).

Measures (the participation ratio lives in :mod:`convemerge.analysis.locality`):

- :func:`window_concentration` — share of a unit's energy inside the ``k×k`` window at its peak (1 for a filter
  that fits in the window; ``k²/(H·W)`` or less for a uniform one).
- :func:`weight_sharing_score` — how close the units are to copies of each other up to a shift, i.e. to a
  convolution: crops are divided by their peak value (the largest-magnitude entry at the peak pixel, so the peak
  becomes +1 and a sign flip does not count as a different feature), then compared by cosine similarity. With
  ``reduce="nearest"`` (default) each unit scores its best match among the others and the score is the mean of
  those maxima: 1 when every unit has a shifted copy (a convolution), low for unrelated filters. ``reduce="mean"``
  averages over all pairs instead (1 only when all units share a single filter). Even unrelated filters share the
  +1 peak pixel, so the floor is above 0 (about ``1/(1 + Σ_{off-peak} w²/w_peak²)``); compare arms, not to zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convemerge.errors import ConfigError

__all__ = [
    "energy",
    "peak_positions",
    "window_concentration",
    "peak_crops",
    "weight_sharing_score",
    "select_units",
    "locality_summary",
]


def _check_filters(filters: torch.Tensor) -> torch.Tensor:
    if filters.dim() == 3:  # (units, H, W): one channel
        filters = filters.unsqueeze(1)
    if filters.dim() != 4:
        raise ConfigError(f"filters must be (units, C, H, W), got shape {tuple(filters.shape)}")
    return filters.detach().to(torch.float64)


def _check_k(k: int) -> None:
    if k < 1 or k % 2 == 0:
        raise ConfigError(f"window size k must be a positive odd integer (a window centred on a pixel), got {k}")


def energy(filters: torch.Tensor) -> torch.Tensor:
    """``(units, H, W)``: squared weights summed over channels."""
    return _check_filters(filters).pow(2).sum(1)


def peak_positions(filters: torch.Tensor) -> torch.Tensor:
    """``(units, 2)`` int64 (row, col) of each unit's largest-energy pixel."""
    e = energy(filters)
    flat = e.flatten(1).argmax(1)
    w = e.shape[-1]
    return torch.stack([flat // w, flat % w], dim=1)


def window_concentration(filters: torch.Tensor, k: int = 9) -> torch.Tensor:
    """``(units,)``: share of each unit's squared mass inside the ``k×k`` window centred on its peak (NaN for an
    all-zero unit)."""
    _check_k(k)
    e = energy(filters)
    # Sum of energy in every k×k window (zero outside the image), read off at the peak.
    window = F.avg_pool2d(e.unsqueeze(1), k, stride=1, padding=k // 2, count_include_pad=True).squeeze(1) * k * k
    peaks = peak_positions(filters)
    inside = window[torch.arange(e.shape[0]), peaks[:, 0], peaks[:, 1]]
    total = e.flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.nan)


def peak_crops(filters: torch.Tensor, k: int = 9) -> torch.Tensor:
    """``(units, C, k, k)``: each unit's window centred on its peak (zero past the border)."""
    _check_k(k)
    f = _check_filters(filters)
    peaks = peak_positions(f)
    padded = F.pad(f, (k // 2,) * 4)
    offs = torch.arange(k)
    rows = (peaks[:, 0:1] + offs)[:, :, None]  # (U, k, 1) in padded coordinates (the pad shifts by k//2)
    cols = (peaks[:, 1:2] + offs)[:, None, :]  # (U, 1, k)
    units = torch.arange(f.shape[0])[:, None, None]
    crops = padded[units, :, rows, cols]  # advanced indices around a slice -> (U, k, k, C)
    return crops.permute(0, 3, 1, 2).contiguous()


def _sample(n: int, max_units: int | None, seed: int) -> torch.Tensor:
    if max_units is None or n <= max_units:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:max_units].sort().values


def weight_sharing_score(filters: torch.Tensor, k: int = 9, *, reduce: str = "nearest",
                         max_units: int | None = 1024, seed: int = 0) -> float:
    """Similarity of the units' peak-centred, peak-normalised ``k×k`` crops (see the module doc); NaN when fewer
    than two live units. At most ``max_units`` live units are compared (a seeded sample), which bounds the
    ``units²`` similarity matrix."""
    if reduce not in ("nearest", "mean"):
        raise ConfigError(f"reduce must be 'nearest' or 'mean', got {reduce!r}")
    f = _check_filters(filters)
    live = f.flatten(1).abs().amax(1) > 0
    f = f[live]
    f = f[_sample(f.shape[0], max_units, seed)]
    if f.shape[0] < 2:
        return float("nan")
    crops = peak_crops(f, k)
    centre = crops[:, :, k // 2, k // 2]  # (U, C) values at the peak pixel
    peak_value = centre.gather(1, centre.abs().argmax(1, keepdim=True)).squeeze(1)
    v = crops.flatten(1) / peak_value[:, None]
    v = v / v.norm(dim=1, keepdim=True)
    sim = v @ v.T
    n = sim.shape[0]
    if reduce == "mean":
        return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))
    sim.fill_diagonal_(-torch.inf)
    return float(sim.max(1).values.mean())


def select_units(filters: torch.Tensor, count: int = 16, *, min_nonzero: int = 20,
                 seed: int = 0) -> tuple[torch.Tensor, int]:
    """Seeded choice of ``count`` units with at least ``min_nonzero`` non-zero weights (Fig. 4's rule).

    If fewer than ``count`` units qualify, the threshold drops to the ``count``-th largest non-zero count (at least
    1) so the panel can still be filled; the threshold actually used is returned so a caller can say so.
    Returns ``(indices, threshold)``; indices are sorted.
    """
    f = _check_filters(filters)
    nnz = (f != 0).flatten(1).sum(1)
    threshold = int(min_nonzero)
    if int((nnz >= threshold).sum()) < count:
        top = nnz.sort(descending=True).values
        threshold = max(1, int(top[min(count, len(top)) - 1])) if len(top) else 1
    candidates = torch.nonzero(nnz >= threshold).flatten()
    g = torch.Generator().manual_seed(seed)
    pick = candidates[torch.randperm(len(candidates), generator=g)[:count]]
    return pick.sort().values, threshold


def locality_summary(filters: torch.Tensor, k: int = 9, *, max_units: int | None = 1024, seed: int = 0) -> dict:
    """Per-layer locality numbers: mean and median participation ratio, mean window concentration, weight-sharing
    score (nearest and mean), the share of zero weights, and how many units are all zero (``dead``)."""
    from convemerge.analysis.locality import participation_ratio

    f = _check_filters(filters)
    live = f.flatten(1).abs().amax(1) > 0
    fl = f[live]
    pr = participation_ratio(fl.to(torch.float32)).to(torch.float64) if len(fl) else torch.empty(0)
    conc = window_concentration(fl, k) if len(fl) else torch.empty(0)

    def stat(t: torch.Tensor, fn) -> float:
        return float(fn(t)) if t.numel() else float("nan")

    return {
        "units": int(f.shape[0]),
        "dead": int((~live).sum()),
        "pixels": int(f[0].numel()) if len(f) else 0,
        "zero_fraction": float((f == 0).double().mean()) if f.numel() else float("nan"),
        "pr_mean": stat(pr, torch.mean),
        "pr_median": stat(pr, torch.median),
        "concentration_k": int(k),
        "concentration_mean": stat(conc, torch.mean),
        "sharing_nearest": weight_sharing_score(fl, k, reduce="nearest", max_units=max_units, seed=seed),
        "sharing_mean": weight_sharing_score(fl, k, reduce="mean", max_units=max_units, seed=seed),
    }
