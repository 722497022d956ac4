"""Per-run analysis records, computed once after training so that the report only reads files.

:func:`analyse_run` loads a finished run's selected weights (``checkpoints/best``; ``last`` without validation)
and writes ``analysis.json`` beside them:

- ``train_error`` — the exact 0-1 error of those weights on the run's training split (eval mode, no
  augmentation), and ``m``, the number of training samples: the ``L_S`` and ``m`` of the Occam bounds;
- ``mdl`` — dense and sparse/shared description lengths (bits) and both bounds (:mod:`convemerge.analysis.mdl`);
- ``weights`` / ``nonzero`` per weight layer;
- ``locality`` — first-layer participation ratio, window concentration and weight-sharing score
  (:mod:`convemerge.analysis.spatial`);
- ``filters`` — a seeded choice of first-layer units with ≥ ``min_nonzero`` non-zero weights, saved to
  ``filters.safetensors`` for Fig. 4 (the threshold actually used is recorded when it had to be lowered).

:func:`architecture_counts` is a *callable job*: per-layer weight counts of untrained architectures at a given α
and a dataset's geometry (Fig. 3's S-CONV / S-LOCAL reference lines).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from convemerge.analysis.mdl import dense_bound, model_description_length, sparse_bound
from convemerge.analysis.spatial import locality_summary, select_units

__all__ = ["analyse_run", "architecture_counts", "ANALYSIS", "FILTERS"]

ANALYSIS = "analysis.json"
FILTERS = "filters.safetensors"


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
    tmp.replace(path)


@torch.no_grad()
def _train_error(model: torch.nn.Module, config, batch_size: int = 1024) -> tuple[float, int]:
    """Exact 0-1 error of ``model`` on the run's training split (the same split and subsample as in training)."""
    from convemerge.data import ImageLoader
    from convemerge.train.setup import pad_batch, prepare_data

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
    """Write ``analysis.json`` (and ``filters.safetensors``) for one finished run; return the record."""
    from convemerge.analysis.sparsity import nonzero_per_layer, weights_per_layer
    from convemerge.train import TrainConfig, find_checkpoint, load_run_model

    run_dir = Path(run_dir)
    start = time.perf_counter()
    which = "best" if find_checkpoint(run_dir / "checkpoints" / "best") is not None else "last"
    model = load_run_model(run_dir, which)
    state = json.loads((find_checkpoint(run_dir / "checkpoints" / which) / "state.json").read_text())
    config = TrainConfig.from_dict({**state["config"], "device": "cpu"})

    train_error, m = _train_error(model, config)
    dl = model_description_length(model, bits=bits)
    record: dict[str, Any] = {
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
        from safetensors.torch import save_file

        save_file({"filters": filters[idx].contiguous(), "indices": idx.contiguous()}, str(run_dir / FILTERS))
        record["filters"] = {"file": FILTERS, "count": int(len(idx)), "threshold": threshold,
                             "requested_threshold": min_nonzero, "shape": list(filters.shape[1:])}
    record["seconds"] = time.perf_counter() - start
    _write_json(run_dir / ANALYSIS, record)
    return record


def architecture_counts(out: str, *, models: list[str], alpha: int | None, dataset: str, pad_to: int | None = None,
                        data_dir: str | None = None, model_options: dict | None = None) -> dict[str, Any]:
    """Callable job: weights per layer of each (untrained) model at ``alpha`` on ``dataset``'s geometry; writes
    ``summary.json`` in ``out``."""
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
    record = {"status": "completed", "kind": "architecture_counts", "alpha": alpha, "dataset": dataset,
              "geometry": {"image_size": side, "in_chans": data.in_chans, "num_classes": data.num_classes},
              "counts": counts}
    out_path = Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    _write_json(out_path / "summary.json", record)
    return record
