"""Pure functions on models and tensors: sparsity and description length, locality, AGOP / patch-AGOP, (C)NFA.

Every public name of the submodules is available here, imported on first use (PEP 562), so
``import convemerge.analysis`` stays cheap: nothing (not even matplotlib, which the report and plot helpers
need) is loaded until a name is touched.

- :mod:`~convemerge.analysis.sparsity` — non-zero weights per layer
- :mod:`~convemerge.analysis.locality`, :mod:`~convemerge.analysis.spatial` — participation ratio, window
  concentration, weight sharing of first-layer filters
- :mod:`~convemerge.analysis.mdl` — description length and Occam bounds
- :mod:`~convemerge.analysis.agop` — (patch-)AGOP of any weight layer
- :mod:`~convemerge.analysis.cnfa` — (C)NFA tables and convergence (the report that writes them out is
  :mod:`convemerge.experiments.cnfa.report_writer`)
- :mod:`~convemerge.analysis.filters`, :mod:`~convemerge.analysis.plots_nfa` — eigenfilters and pictures

>>> from convemerge.analysis import layer_agop, nfa_table, participation_ratio   # doctest: +SKIP
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "sparsity": ("weight_tensors", "nonzero_per_layer", "weights_per_layer", "nonzero_total", "sparsity_table"),
    "locality": ("participation_ratio", "inverse_participation_ratio", "nonzero_per_unit",
                 "median_participation_ratio", "first_layer_locality"),
    "spatial": ("energy", "peak_positions", "window_concentration", "peak_crops", "weight_sharing_score",
                "select_units", "locality_summary"),
    "mdl": ("DescriptionLength", "quantize", "description_length", "dense_bound", "sparse_bound",
            "model_description_length", "min_params_to_fit"),
    "agop": ("AgopLayer", "agops", "filter_covariance", "find_weight_layers", "layer_agop", "layer_kind",
             "psd_power", "resolve_layer", "sym_matrix_power", "unsupported_reason", "weight_matrix"),
    "cnfa": ("DEFAULT_SIZES", "convergence_records", "convergence_sizes", "cosine_similarity", "cumulative_agops",
             "matrix_correlations", "nfa_convergence", "nfa_table", "pearson_correlation", "select_layers",
             "table_from_agops", "tables_by_power"),
    "filters": ("eigenfilters", "input_agop_eigenimages", "patch_shape", "top_eigenvectors"),
    "plots_nfa": ("filter_images", "plot_agop_vs_wtw", "plot_filter_grid", "plot_nfa_convergence", "plot_nfa_table"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
