"""Per-run analysis records, computed once after training so that the report only reads files.

:func:`analyse_run` loads a finished run's selected weights (its best checkpoint; the last without validation)
and writes the run's analysis record beside them (schema: :class:`convemerge.runs.AnalysisRecord`):

- ``train_error`` — the exact 0-1 error of those weights on the run's training split (eval mode, no
  augmentation), and ``m``, the number of training samples: the ``L_S`` and ``m`` of the Occam bounds;
- ``mdl`` — dense and sparse/shared description lengths (bits) and both bounds (:mod:`convemerge.analysis.mdl`);
- ``weights`` / ``nonzero`` per weight layer;
- ``locality`` — first-layer participation ratio, window concentration and weight-sharing score
  (:mod:`convemerge.analysis.spatial`);
- ``filters`` — a seeded choice of first-layer units with ≥ ``min_nonzero`` non-zero weights, saved to
  the run's filters file for Fig. 4 (the threshold actually used is recorded when it had to be lowered).

:func:`architecture_counts` is a *callable job*: per-layer weight counts of untrained architectures at a given α
and a dataset's geometry (Fig. 3's S-CONV / S-LOCAL reference lines).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from convemerge.analysis.mdl import dense_bound, model_description_length, sparse_bound
from convemerge.analysis.spatial import locality_summary, select_units
from convemerge.runs import AnalysisRecord, RunPaths, RunStatus, load_run_model, read_state, write_analysis
from convemerge.runs import write_filters, write_summary

__all__ = ["analyse_run", "architecture_counts", "ANALYSIS", "FILTERS"]

ANALYSIS = RunPaths(Path()).analysis.name  # file names of the records, owned by convemerge.runs
FILTERS = RunPaths(Path()).filters.name


@torch.no_grad()
def _train_error(model: torch.nn.Module, config, batch_size: int = 1024) -> tuple[float, int]:
    """Exact 0-1 error of ``model`` on the run's training split (the same split and subsample as in training)."""
    from convemerge.data import ImageLoader
    from convemerge.train import pad_batch, prepare_data

    data = prepare_data(config)
    wrong, n = 0, 0
    fill = data.pad_fill
    for x, y in ImageLoader(data.train, batch_size):
        pred = model(pad_batch(x, data.image_size, fill)).argmax(1)
        wrong += int((pred != y).sum())
        n += int(y.numel())
    return wrong / max(1, n), n


def analyse_run(run_dir: str | Path, *, bits: int = 8, delta: float = 0.05, window: int = 9, units: int = 16,
                min_nonzero: int = 20, seed: int = 0, max_units: int = 1024) -> dict[str, Any]:
    """Write the analysis record (and the drawn filters) of one finished run; return the record."""
    from convemerge.analysis.sparsity import nonzero_per_layer, weights_per_layer
    from convemerge.train import TrainConfig

    run_dir = Path(run_dir)
    start = time.perf_counter()
    state = read_state(run_dir, "best", fallback=True)
    which = state["checkpoint"]
    model = load_run_model(run_dir, which)
    config = TrainConfig.from_dict({**state["config"], "device": "cpu"})

    train_error, m = _train_error(model, config)
    dl = model_description_length(model, bits=bits)
    record: AnalysisRecord = {
        "checkpoint": which,
        "epoch": state.get("epoch"),
        "train_error": train_error,
        "m": m,
        "weights": weights_per_layer(model),
        "nonzero": nonzero_per_layer(model),
        "mdl": {**dl.to_dict(), "delta": delta,
                "dense_bound": dense_bound(train_error, dl.n, bits, m, delta),
                "sparse_bound": sparse_bound(train_error, dl, m, delta)},
    }
    if hasattr(model, "first_layer_filters"):
        with torch.no_grad():
            filters = model.first_layer_filters().detach().float().cpu()
        record["locality"] = locality_summary(filters, k=window, max_units=max_units, seed=seed)
        idx, threshold = select_units(filters, count=units, min_nonzero=min_nonzero, seed=seed)
        name = write_filters(run_dir, filters[idx], idx)
        record["filters"] = {"file": name, "count": int(len(idx)), "threshold": threshold,
                             "requested_threshold": min_nonzero, "shape": list(filters.shape[1:])}
    record["seconds"] = time.perf_counter() - start
    write_analysis(run_dir, record)
    return record


def architecture_counts(out: str, *, models: list[str], alpha: int | None, dataset: str, pad_to: int | None = None,
                        data_dir: str | None = None, model_options: dict | None = None) -> dict[str, Any]:
    """Callable job: weights per layer of each (untrained) model at ``alpha`` on ``dataset``'s geometry; writes
    its summary in ``out``."""
    from convemerge.analysis.sparsity import weights_per_layer
    from convemerge.data import load_dataset
    from convemerge.models import create_model

    data = load_dataset(dataset, "train", root=data_dir)
    side = pad_to or data.image_shape[0]
    counts = {}
    for name in models:
        model = create_model(name, alpha=alpha, image_size=side, in_chans=data.in_chans,
                             num_classes=data.num_classes, **(model_options or {}))
        kinds = {layer.name: layer.kind for layer in model.weight_layers()}
        counts[name] = [{"layer": k, "kind": kinds.get(k), "weights": v} for k, v in weights_per_layer(model).items()]
    record = {"status": RunStatus.COMPLETED.value, "kind": "architecture_counts", "alpha": alpha, "dataset": dataset,
              "geometry": {"image_size": side, "in_chans": data.in_chans, "num_classes": data.num_classes},
              "counts": counts}
    write_summary(Path(out), record)
    return record
