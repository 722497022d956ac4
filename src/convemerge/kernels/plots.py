"""Figures of learned patch metrics (matplotlib object API: no pyplot state, renders with Agg when saved)."""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure

from .edges import metric_eigenpatches, patch_norm_map


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 8)
    return math.ceil(n / cols), cols


def _as_image(t: torch.Tensor):
    """(c, h, w) image → an array imshow understands: grey for one channel, min–max scaled RGB for three."""
    t = t.detach().cpu().double()
    if t.shape[0] == 1:
        return t[0].numpy(), "gray"
    if t.shape[0] == 3:
        lo, hi = t.min(), t.max()
        return ((t - lo) / (hi - lo + 1e-12)).permute(1, 2, 0).numpy(), None
    return t.norm(dim=0).numpy(), "gray"  # other channel counts: per-pixel norm


def _signed_patch(t: torch.Tensor) -> tuple[object, dict]:
    """An eigenvector patch (c, q, q) drawn so that its signs read: one channel on a diverging scale symmetric
    about zero (red +, white 0, blue −); three channels as RGB with zero at mid-grey; others as the per-pixel
    norm. Min–max scaling would turn a near-constant patch (an averaging filter) into apparent noise."""
    t = t.detach().cpu().double()
    a = float(t.abs().max()) or 1.0
    if t.shape[0] == 1:
        return t[0].numpy(), {"cmap": "RdBu_r", "vmin": -a, "vmax": a}
    if t.shape[0] == 3:
        return (t / (2 * a) + 0.5).clamp(0, 1).permute(1, 2, 0).numpy(), {}
    return t.norm(dim=0).numpy(), {"cmap": "gray", "vmin": 0.0}


def plot_eigenpatches(M: torch.Tensor, patch_shape: tuple[int, int, int], k: int = 8) -> Figure:
    """The top-``k`` eigenvectors of M as c×q×q patches, titled by their eigenvalues; one channel: red +, blue −,
    on a scale symmetric about zero per patch."""
    vals, patches = metric_eigenpatches(M, patch_shape, k)
    rows, cols = _grid(len(vals))
    fig = Figure(figsize=(1.6 * cols, 1.8 * rows))
    for i, (v, p) in enumerate(zip(vals, patches)):
        ax = fig.add_subplot(rows, cols, i + 1)
        img, style = _signed_patch(p)
        ax.imshow(img, **style)
        ax.set_title(f"λ={float(v):.3g}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_patch_norm_maps(M: torch.Tensor, images: torch.Tensor, patch_size: int) -> Figure:
    """Each image (top row) above its ‖M^{1/2} x_p‖ map (bottom row)."""
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    maps = patch_norm_map(M, images, patch_size)
    n = len(images)
    fig = Figure(figsize=(1.8 * n, 3.6))
    for i in range(n):
        ax = fig.add_subplot(2, n, i + 1)
        img, cmap = _as_image(images[i])
        ax.imshow(img, cmap=cmap)
        ax.axis("off")
        ax = fig.add_subplot(2, n, n + i + 1)
        ax.imshow(maps[i].cpu().numpy(), cmap="magma")
        ax.axis("off")
    fig.tight_layout()
    return fig
