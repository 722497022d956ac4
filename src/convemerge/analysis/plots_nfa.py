"""Pictures for the (C)NFA: AGOP vs WᵀW heat maps, eigenvector filters, the table and its convergence.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, no window;
``fig.savefig(path)`` renders with Agg).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from convemerge.analysis.cnfa import pearson_correlation

__all__ = [
    "filter_images",
    "plot_agop_vs_wtw",
    "plot_filter_grid",
    "plot_nfa_convergence",
    "plot_nfa_table",
]


def _block_mean(m: np.ndarray, max_size: int) -> np.ndarray:
    """Average s×s blocks so that the matrix is at most max_size wide (heat maps of 4608² are unreadable)."""
    s = -(-m.shape[0] // max_size)
    if s == 1:
        return m
    n = -(-m.shape[0] // s) * s
    padded = np.full((n, n), np.nan)
    padded[: m.shape[0], : m.shape[1]] = m
    return np.nanmean(padded.reshape(n // s, s, n // s, s), axis=(1, 3))


def plot_agop_vs_wtw(
    agop: torch.Tensor, wtw: torch.Tensor, *, title: str | None = None, max_size: int = 256
) -> Figure:
    """Side-by-side heat maps of the AGOP and WᵀW, each scaled by its largest absolute entry."""
    fig = Figure(figsize=(8.4, 4.0), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, mat, name in zip(axes, (agop, wtw), ("AGOP", "WᵀW")):
        m = mat.detach().double().cpu().numpy()
        m = _block_mean(m / max(np.abs(m).max(), 1e-300), max_size)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{name} ({mat.shape[0]}×{mat.shape[1]})")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.8, label="entry / max |entry|")
    corr = pearson_correlation(agop, wtw)
    fig.suptitle(f"{title + ': ' if title else ''}Pearson r = {corr:.3f}")
    return fig


def filter_images(filters: torch.Tensor) -> np.ndarray:
    """(k, c, h, w) filters → (k, h, w, 3) RGB or (k, h, w) arrays in [0, 1], each filter min-max scaled.

    c = 3 is shown as colour, c = 1 as grey; other channel counts as the energy Σ_c v[c]² per position.
    """
    f = filters.detach().double().cpu()
    if f.dim() == 3:
        f = f.unsqueeze(1)
    if f.shape[1] not in (1, 3):
        f = f.pow(2).sum(1, keepdim=True)
    lo = f.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = f.flatten(1).max(1).values.view(-1, 1, 1, 1)
    f = (f - lo) / (hi - lo).clamp(min=1e-300)
    f = f.permute(0, 2, 3, 1).numpy()
    return f[..., 0] if f.shape[-1] == 1 else f


def plot_filter_grid(
    rows: dict[str, torch.Tensor],
    *,
    evals: dict[str, torch.Tensor] | None = None,
    title: str | None = None,
    panel_size: float = 1.1,
) -> Figure:
    """One row of filter pictures per entry of ``rows`` ({label: (k, c, h, w) filters}), e.g. the top
    eigenvectors of a patch-AGOP next to those of WᵀW; optional eigenvalues printed above each picture."""
    k = max(v.shape[0] for v in rows.values())
    fig = Figure(figsize=(panel_size * k + 1.2, panel_size * len(rows) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), k, squeeze=False))
    for r, (label, filt) in enumerate(rows.items()):
        images = filter_images(filt)
        for j in range(k):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= images.shape[0]:
                ax.axis("off")
                continue
            ax.imshow(images[j], cmap="gray" if images.ndim == 3 else None, vmin=0, vmax=1, interpolation="nearest")
            if evals is not None and label in evals:
                ax.set_title(f"{float(evals[label][j]):.2g}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_nfa_table(records: Sequence[dict], *, metric: str = "pearson") -> Figure:
    """Grouped bars per layer: trained model, model at initialisation, and W₀ᵀW₀ vs WᵀW (when present)."""
    rows = [r for r in records if not r.get("skipped")]
    names = [r["layer"] for r in rows]
    series = [
        (metric, "trained: AGOP vs WᵀW"),
        (f"init_{metric}", "init: AGOP₀ vs W₀ᵀW₀"),
        (f"w0_{metric}", "W₀ᵀW₀ vs WᵀW"),
    ]
    series = [(key, label) for key, label in series if any(r.get(key) is not None for r in rows)]
    fig = Figure(figsize=(max(5.0, 0.6 * len(names) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(names))
    for i, (key, label) in enumerate(series):
        vals = [np.nan if r.get(key) is None else r[key] for r in rows]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, names, rotation=60 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylabel(f"{metric} correlation")
    ax.set_ylim(min(0.0, np.nanmin([r[metric] for r in rows] + [0.0])), 1.0)
    ax.axhline(0, color="k", lw=0.5)
    fig.legend(loc="outside lower center", ncols=max(len(series), 1), fontsize=8)
    power = rows[0]["power"] if rows else 1.0
    ax.set_title(f"(C)NFA per layer, AGOP power {power:g}")
    return fig


def plot_nfa_convergence(records: Sequence[dict]) -> Figure:
    """Correlation with WᵀW (left) and with the all-image AGOP (right) against the number of images."""
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    layers = list(dict.fromkeys(r["layer"] for r in records))
    all_n = sorted({r["n"] for r in records})
    for name in layers:
        rs = sorted((r for r in records if r["layer"] == name), key=lambda r: r["n"])
        ns = [r["n"] for r in rs]
        axes[0].plot(ns, [r["pearson"] for r in rs], marker="o", ms=3, label=name)
        axes[1].plot(ns, [r["pearson_vs_all"] for r in rs], marker="o", ms=3, label=name)
    for ax, ylabel in zip(axes, ("Pearson r (AGOPₙ vs WᵀW)", "Pearson r (AGOPₙ vs AGOP_all)")):
        ax.set_xscale("log")
        ax.set_xticks(all_n, [str(n) for n in all_n])
        ax.minorticks_off()
        ax.set_xlabel("number of images n")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if len(layers) <= 12:
        axes[1].legend(fontsize=7)
    return fig
