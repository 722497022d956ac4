"""(Convolutional) Neural Feature Ansatz: how well WᵀW of each weight layer matches the AGOP at its input.

For a linear layer the AGOP is over the layer's flat input (NFA); for a conv layer it is the patch-AGOP
(CNFA), compared with W̃ᵀW̃, W̃ = W reshaped to (k_out, c·q·q); for a locally connected layer both sides are
pooled over positions (Σ_p W_pᵀW_p vs Σ_p G_p), optionally also compared position by position.

Each record reports the Pearson correlation (centred) and cosine similarity (uncentred) of the flattened
matrices for the claim and, given the network at initialisation (``init_model``), the baselines it must beat
(prefix of the keys, each with ``_pearson`` and ``_cosine``):

- (none)     corr(AGOP_T, W_TᵀW_T)   the ansatz for the trained network
- ``agop_w0``  corr(AGOP_T, W₀ᵀW₀)     the trained gradients against the *initial* filters
- ``w0``       corr(W₀ᵀW₀, W_TᵀW_T)    did the filters move?
- ``init``     corr(AGOP₀, W₀ᵀW₀)      the network at initialisation: high by construction (AGOP₀ = W₀ᵀ S W₀)
- ``delta``    corr(AGOP_T, ΔWᵀΔW)     the centred ansatz, ΔW = W_T − W₀ (the initial term removed)

plus ``moved`` = ‖W_T − W₀‖_F / ‖W₀‖_F. The claim means something only where it clearly beats ``agop_w0``
while ``moved`` is not small.

Example::

    rows = nfa_table(model, x[:100], init_model=model_at_init, power=0.5)
    conv = nfa_convergence(model, x, sizes=(10, 20, 50, 100), seed=0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from convemerge.analysis.agop import (
    AgopLayer,
    agops,
    filter_covariance,
    find_weight_layers,
    resolve_layer,
    sym_matrix_power,
    unsupported_reason,
)
from convemerge.errors import ConfigError

__all__ = [
    "DEFAULT_SIZES",
    "convergence_records",
    "convergence_sizes",
    "cosine_similarity",
    "cumulative_agops",
    "matrix_correlations",
    "nfa_convergence",
    "nfa_table",
    "pearson_correlation",
    "select_layers",
    "table_from_agops",
    "tables_by_power",
]

# key prefixes of the baselines (each with _pearson and _cosine), in the order the report prints them
BASELINES = ("agop_w0", "w0", "init", "delta")

DEFAULT_SIZES = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """⟨a, b⟩ / (‖a‖‖b‖) of the flattened tensors (NaN when either is zero)."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    den = a.norm() * b.norm()
    # clamp: round-off can push the cosine of (nearly) parallel matrices a hair past ±1
    return float("nan") if den == 0 else float((a @ b / den).clamp(-1.0, 1.0))


def pearson_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the flattened entries: cosine similarity after centring both."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return cosine_similarity(a - a.mean(), b - b.mean())


def matrix_correlations(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """``{"pearson": ..., "cosine": ...}`` of two matrices (or per-position stacks, flattened whole)."""
    return {"pearson": pearson_correlation(a, b), "cosine": cosine_similarity(a, b)}


def select_layers(
    model: nn.Module, layers: Sequence[str] | None = None, max_dim: int | None = 8192
) -> tuple[list[AgopLayer], dict[str, str]]:
    """Weight layers to analyse and ``{name: reason}`` for those skipped: grouped convolutions, and layers
    whose d×d AGOP would exceed ``max_dim`` (e.g. VGG's first classifier layer, d = 25088: 5 GB in float64)."""
    chosen = find_weight_layers(model) if layers is None else [resolve_layer(model, n) for n in layers]
    if not chosen:
        raise ConfigError("the model has no Linear, Conv or locally connected layer to analyse")
    used, skipped = [], {}
    for layer in chosen:
        if unsupported_reason(layer) is not None:
            skipped[layer.name] = unsupported_reason(layer)
        elif max_dim is not None and layer.in_dim > max_dim:
            skipped[layer.name] = f"input dimension {layer.in_dim} > max_dim {max_dim}"
        else:
            used.append(layer)
    return used, skipped


def _init_layer(init_model: nn.Module, layer: AgopLayer) -> AgopLayer:
    init_layer = resolve_layer(init_model, layer.name)
    if init_layer.module.weight.shape != layer.module.weight.shape:
        raise ConfigError(
            f"init_model's layer {layer.name!r} has weight shape {tuple(init_layer.module.weight.shape)}, "
            f"the model's {tuple(layer.module.weight.shape)}; pass the same architecture at initialisation"
        )
    return init_layer


def _record(
    layer: AgopLayer,
    agop: torch.Tensor,
    n: int,
    power: float,
    init_layer: AgopLayer | None,
    init_agop: torch.Tensor | None,
    agop_pos: torch.Tensor | None = None,
) -> dict:
    wtw = filter_covariance(layer.module)
    rec = {
        "layer": layer.name,
        "kind": layer.kind,
        "in_dim": layer.in_dim,
        "out_dim": layer.out_dim,
        "n_images": n,
        "power": power,
        **matrix_correlations(agop, wtw),
        **dict.fromkeys(_BASELINE_KEYS),
        "moved": None,
        "skipped": None,
    }
    if init_layer is not None:
        w0tw0 = filter_covariance(init_layer.module)
        pairs = {"agop_w0": (agop, w0tw0), "w0": (w0tw0, wtw), "init": (init_agop, w0tw0),
                 "delta": (agop, filter_covariance(layer.module, minus=init_layer.module))}
        for prefix, (a, b) in pairs.items():
            for stat, value in matrix_correlations(a, b).items():
                rec[f"{prefix}_{stat}"] = value
        w, w0 = layer.module.weight.detach().double(), init_layer.module.weight.detach().double()
        rec["moved"] = float((w - w0).norm() / w0.norm()) if w0.norm() > 0 else float("nan")
    if agop_pos is not None:  # local layer, position by position: mean of the per-position correlations
        wtw_pos = filter_covariance(layer.module, per_position=True)
        per = [matrix_correlations(a, w) for a, w in zip(agop_pos, wtw_pos)]
        rec["per_position_pearson_mean"] = _nanmean([p["pearson"] for p in per])
        rec["per_position_cosine_mean"] = _nanmean([p["cosine"] for p in per])
    return rec


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


_BASELINE_KEYS = tuple(f"{prefix}_{stat}" for prefix in BASELINES for stat in ("pearson", "cosine"))


def _skipped_record(layer: AgopLayer, reason: str, n: int, power: float) -> dict:
    keys = ("pearson", "cosine", *_BASELINE_KEYS, "moved")
    return {
        "layer": layer.name,
        "kind": layer.kind,
        "in_dim": layer.in_dim,
        "out_dim": layer.out_dim,
        "n_images": n,
        "power": power,
        **dict.fromkeys(keys),
        "skipped": reason,
    }


def table_from_agops(
    model: nn.Module,
    agop_by_layer: dict[str, torch.Tensor],
    n: int,
    *,
    power: float = 1.0,
    init_model: nn.Module | None = None,
    init_agop_by_layer: dict[str, torch.Tensor] | None = None,
    skipped: dict[str, str] | None = None,
    per_position_by_layer: dict[str, torch.Tensor] | None = None,
) -> list[dict]:
    """NFA records from AGOPs already computed (power already applied), in the model's layer order."""
    skipped = skipped or {}
    known = {layer.name: layer for layer in find_weight_layers(model)}
    order = list(known)
    names = sorted(set(agop_by_layer) | set(skipped), key=lambda s: order.index(s) if s in order else len(order))
    rows = []
    for name in names:
        layer = known[name] if name in known else resolve_layer(model, name)
        if name in skipped:
            rows.append(_skipped_record(layer, skipped[name], n, power))
            continue
        init_layer = _init_layer(init_model, layer) if init_model is not None else None
        init_agop = init_agop_by_layer[name] if init_layer is not None else None
        pos = (per_position_by_layer or {}).get(name)
        rows.append(_record(layer, agop_by_layer[name], n, power, init_layer, init_agop, pos))
    return rows


def tables_by_power(
    model: nn.Module,
    agop_by_layer: dict[str, torch.Tensor],
    n: int,
    powers: Sequence[float],
    *,
    init_model: nn.Module | None = None,
    init_agop_by_layer: dict[str, torch.Tensor] | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, list[dict]]:
    """``{f"{p:g}": table}``: :func:`table_from_agops` against AGOP^p for each power p, from AGOPs of power 1
    computed once (the matrix power is cheap; the AGOP sweep is not)."""
    out = {}
    for p in powers:
        agop_p = {name: sym_matrix_power(g, p) for name, g in agop_by_layer.items()}
        init_p = None if init_agop_by_layer is None else {
            name: sym_matrix_power(g, p) for name, g in init_agop_by_layer.items()}
        out[f"{p:g}"] = table_from_agops(model, agop_p, n, power=p, init_model=init_model,
                                         init_agop_by_layer=init_p, skipped=skipped)
    return out


def nfa_table(
    model: nn.Module,
    x: torch.Tensor,
    *,
    init_model: nn.Module | None = None,
    power: float = 1.0,
    layers: Sequence[str] | None = None,
    max_dim: int | None = 8192,
    local_per_position: bool = False,
    **agop_options,
) -> list[dict]:
    """One record per weight layer (input → output): NFA/CNFA correlations of WᵀW with AGOP^power.

    Keys: layer, kind, in_dim, out_dim, n_images, power, pearson, cosine (AGOP^power vs WᵀW), the baselines
    ``{agop_w0,w0,init,delta}_{pearson,cosine}`` and ``moved`` of the module docstring (None without an
    ``init_model``), skipped (None, or why the layer was not analysed: see ``max_dim``); for local layers with
    ``local_per_position=True`` also per_position_pearson_mean / per_position_cosine_mean.
    ``agop_options`` go to :func:`convemerge.analysis.agop.agops` (batch_size, output_chunk, outputs, ...).
    """
    used, skipped = select_layers(model, layers, max_dim)
    names = [layer.name for layer in used]
    agop_by_layer = agops(model, x, names, power=power, **agop_options) if names else {}
    init_agops = None
    if init_model is not None and names:
        for layer in used:
            _init_layer(init_model, layer)
        init_agops = agops(init_model, x, names, power=power, **agop_options)
    per_pos = None
    if local_per_position:
        local = [layer.name for layer in used if layer.kind == "local"]
        if local:
            per_pos = agops(model, x, local, power=power, per_position=True, **agop_options)
    return table_from_agops(
        model,
        agop_by_layer,
        x.shape[0],
        power=power,
        init_model=init_model,
        init_agop_by_layer=init_agops,
        skipped=skipped,
        per_position_by_layer=per_pos,
    )


def convergence_sizes(n_total: int, sizes: Sequence[int] = DEFAULT_SIZES) -> list[int]:
    """The sizes below n_total, sorted, plus n_total itself ("all")."""
    if any(s < 1 for s in sizes):
        raise ConfigError(f"sizes {tuple(sizes)} must all be >= 1")
    return sorted({s for s in sizes if s < n_total} | {n_total})


def cumulative_agops(
    model: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    sizes: Sequence[int],
    seed: int = 0,
    **agop_options,
) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """Mean AGOPs (power 1) over nested random subsets of the given sizes, each image seen once.

    The subsets are prefixes of one seeded permutation, so every size extends the previous one.
    """
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=gen)
    running: dict[str, torch.Tensor] = {}
    out, start = [], 0
    for n in convergence_sizes(x.shape[0], sizes):
        part = agops(model, x[perm[start:n]], names, reduction="sum", **agop_options)
        for name, g in part.items():
            running[name] = running[name] + g if name in running else g
        out.append((n, {name: g / n for name, g in running.items()}))
        start = n
    return out


def convergence_records(
    model: nn.Module, cumulative: list[tuple[int, dict[str, torch.Tensor]]], power: float = 1.0
) -> list[dict]:
    """Per (size, layer): correlation of AGOP_n^power with WᵀW and with the AGOP over all images."""
    full = {name: sym_matrix_power(g, power) for name, g in cumulative[-1][1].items()}
    rows = []
    for n, by_layer in cumulative:
        for name, g in by_layer.items():
            g = sym_matrix_power(g, power)
            wtw = filter_covariance(resolve_layer(model, name).module)
            corr = matrix_correlations(g, wtw)
            rows.append(
                {
                    "n": n,
                    "layer": name,
                    "pearson": corr["pearson"],
                    "cosine": corr["cosine"],
                    "pearson_vs_all": pearson_correlation(g, full[name]),
                }
            )
    return rows


def nfa_convergence(
    model: nn.Module,
    x: torch.Tensor,
    sizes: Sequence[int] = DEFAULT_SIZES,
    seed: int = 0,
    *,
    power: float = 1.0,
    layers: Sequence[str] | None = None,
    max_dim: int | None = 8192,
    **agop_options,
) -> list[dict]:
    """How the (C)NFA correlation converges with the number of images.

    For each size n in ``sizes`` below len(x), and for all of x, on nested random subsets drawn with ``seed``:
    records ``{"n", "layer", "pearson", "cosine", "pearson_vs_all"}`` where pearson/cosine compare
    AGOP_n^power with WᵀW and pearson_vs_all compares AGOP_n^power with the AGOP over all images.
    """
    used, _ = select_layers(model, layers, max_dim)
    cumulative = cumulative_agops(model, x, [layer.name for layer in used], sizes, seed, **agop_options)
    return convergence_records(model, cumulative, power)
