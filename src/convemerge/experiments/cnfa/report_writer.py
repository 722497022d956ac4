"""Write a (C)NFA report for a model (orchestration over :mod:`convemerge.analysis`): the JSON table, its convergence with n, heat maps and filter pictures.

A CLI command is a few lines over :func:`cnfa_report`: load the model (and its initialisation), load images,
call it, print the table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from convemerge.analysis.agop import agops, filter_covariance, resolve_layer, sym_matrix_power
from convemerge.analysis.cnfa import (
    DEFAULT_SIZES,
    convergence_records,
    cumulative_agops,
    select_layers,
    table_from_agops,
    tables_by_power,
)
from convemerge.analysis.filters import eigenfilters, patch_shape
from convemerge.analysis.plots_nfa import (
    plot_agop_vs_wtw,
    plot_filter_grid,
    plot_nfa_convergence,
    plot_nfa_table,
)
from convemerge.runs import RunPaths, atomic_write_json, json_safe

__all__ = ["cnfa_report"]


finite_json = json_safe  # the former name: non-finite floats as None (JSON has no NaN)


def _file_stem(layer_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer_name) or "layer"


def cnfa_report(
    model: nn.Module,
    x: torch.Tensor,
    init_model: nn.Module | None = None,
    out_dir: str | Path = "cnfa",
    *,
    power: float = 1.0,
    sizes: Sequence[int] = DEFAULT_SIZES,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    max_dim: int | None = 8192,
    n_filters: int = 8,
    plot_layers: Sequence[str] | None = None,
    dpi: int = 120,
    extra_powers: Sequence[float] = (),
    **agop_options,
) -> dict:
    """Compute the (C)NFA table and its convergence with the number of images, and write them to ``out_dir``.

    Files: ``cnfa.json`` (settings, table, convergence, figure list), ``nfa_table.png``,
    ``nfa_convergence.png``, and per plotted layer ``agop_vs_wtw/<layer>.png`` and, for conv / local layers
    and linear layers over the whole input image, ``filters/<layer>.png`` (top eigenvectors of AGOP^power
    and of WᵀW). ``plot_layers`` defaults to every analysed layer. The AGOP is computed once: the table
    uses the full-x AGOP from the convergence sweep (nested subsets of a ``seed``-ed permutation).
    ``extra_powers`` adds ``tables_by_power`` ({"0.5": table, ...}: the table against AGOP^p) from the same
    AGOPs. Returns the content of ``cnfa.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used, skipped = select_layers(model, layers, max_dim)
    names = [layer.name for layer in used]
    cumulative = cumulative_agops(model, x, names, sizes, seed, **agop_options) if names else [(x.shape[0], {})]
    full = {name: sym_matrix_power(g, power) for name, g in cumulative[-1][1].items()}
    init_agops1 = agops(init_model, x, names, **agop_options) if init_model is not None and names else None
    init_agops = None if init_agops1 is None else {n: sym_matrix_power(g, power) for n, g in init_agops1.items()}
    table = table_from_agops(
        model,
        full,
        x.shape[0],
        power=power,
        init_model=init_model,
        init_agop_by_layer=init_agops,
        skipped=skipped,
    )
    by_power = tables_by_power(model, cumulative[-1][1], x.shape[0], extra_powers, init_model=init_model,
                               init_agop_by_layer=init_agops1, skipped=skipped) if extra_powers else None
    convergence = convergence_records(model, cumulative, power) if names else []

    figures = []

    def save(fig, rel: str) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
        figures.append(rel)

    if names:
        save(plot_nfa_table(table), "nfa_table.png")
        save(plot_nfa_convergence(convergence), "nfa_convergence.png")
    to_plot = names if plot_layers is None else [n for n in plot_layers if n in full]
    image_shape = tuple(x.shape[1:])
    for name in to_plot:
        layer = resolve_layer(model, name)
        wtw = filter_covariance(layer.module)
        stem = _file_stem(name)
        save(plot_agop_vs_wtw(full[name], wtw, title=f"{name}"), f"agop_vs_wtw/{stem}.png")
        if layer.kind == "linear":
            if layer.in_dim != math.prod(image_shape):
                continue
            shape = image_shape
        else:
            shape = patch_shape(layer.module)
        a_evals, a_filters = eigenfilters(full[name], shape, n_filters)
        w_evals, w_filters = eigenfilters(wtw, shape, n_filters)
        label_a = "AGOP" if power == 1.0 else f"AGOP^{power:g}"
        fig = plot_filter_grid(
            {label_a: a_filters, "WᵀW": w_filters},
            evals={label_a: a_evals, "WᵀW": w_evals},
            title=f"{name}: top eigenvectors as {'×'.join(map(str, shape))} filters",
        )
        save(fig, f"filters/{stem}.png")

    settings = {
        "n_images": int(x.shape[0]),
        "input_shape": list(image_shape),
        "power": power,
        "seed": seed,
        "sizes": sorted({int(r["n"]) for r in convergence}),
        "max_dim": max_dim,
        "init_model": init_model is not None,
    }
    result = {"settings": settings, "table": table, "convergence": convergence, "figures": figures}
    if by_power is not None:
        result["tables_by_power"] = by_power
    result = json_safe(result)
    atomic_write_json(RunPaths(out).cnfa, result, indent=2)
    return result
