"""Fit a feature-learning kernel machine on an image data set and report it (the library under ``convemerge rfm``).

>>> from convemerge.kernels.evaluate import load_image_arrays, fit_and_evaluate  # doctest: +SKIP
>>> Xtr, ytr = load_image_arrays("mnist-5k", "train", n=500, seed=0)               # doctest: +SKIP
>>> Xte, yte = load_image_arrays("mnist-5k", "test", n=500, seed=0)                # doctest: +SKIP
>>> est, summary = fit_and_evaluate("convrfm", Xtr, ytr, Xte, yte, n_iter=2)      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from convemerge.errors import ConfigError

from .convrfm import ConvRFMClassifier, DeepConvRFMClassifier
from .rfm import RFMClassifier

#: model name → (estimator class, fixed options). ``laplace`` and ``cntk`` are the fixed-kernel baselines.
MODELS = {
    "rfm": (RFMClassifier, {}),
    "laplace": (RFMClassifier, {"n_iter": 0}),
    "convrfm": (ConvRFMClassifier, {}),
    "cntk": (ConvRFMClassifier, {"n_iter": 0}),
    "deep-convrfm": (DeepConvRFMClassifier, {}),
}


def load_image_arrays(dataset: str, split: str = "train", n: int | None = None, seed: int = 0,
                      root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised float32 images (n, C, H, W) and int64 labels; a seeded, stratified subsample of ``n``.

    Images are scaled like every model in this project sees them: ``(images/255 − mean)/std`` for uint8 sets,
    ``(images − mean)/std`` for float ones, with the train split's per-channel statistics.
    """
    from convemerge.data import load_dataset
    from convemerge.data.split import split_indices

    data = load_dataset(dataset, split, root=root)
    if n is not None and n < len(data):
        if n < 1:
            raise ConfigError(f"n={n} must be >= 1")
        _, keep = split_indices(data.labels, n / len(data), seed)
        data = data.subset(keep)
    return standardised_arrays(data)


def standardised_arrays(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 images, int64 labels) of an :class:`~convemerge.data.ImageData`, scaled as every model in this
    project sees them: ``(images/255 − mean)/std`` for uint8 sets, ``(images − mean)/std`` for float ones, with the
    set's own (train-split) per-channel statistics."""
    x = data.images.to(torch.float32)
    if data.images.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std, data.labels.to(torch.int64)


def make_estimator(model: str, **options):
    """The estimator for ``model`` (see :data:`MODELS`) with ``options`` (None values are left at defaults)."""
    if model not in MODELS:
        raise ConfigError(f"model={model!r} is not one of {sorted(MODELS)}")
    cls, fixed = MODELS[model]
    params = {k: v for k, v in options.items() if v is not None}
    unknown = set(params) - set(cls().get_params())
    if unknown:
        raise ConfigError(f"options {sorted(unknown)} do not apply to model {model!r}")
    params.update(fixed)
    return cls(**params)


def _json_safe(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


def fit_and_evaluate(model: str, X_train, y_train, X_test, y_test, **options):
    """Fit on the training arrays (the round is chosen on a validation split of them), then score the test set.

    Returns ``(estimator, summary)``; the summary is JSON-ready: the chosen round and ridge, train (refitted
    model, all training data), validation (chosen round) and test accuracy, per-round history, seconds.
    """
    est = make_estimator(model, **options)
    if model in ("rfm", "laplace"):
        X_train, X_test = X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1)
    t0 = time.perf_counter()
    est.fit(X_train, y_train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = est.predict(X_test)
    predict_s = time.perf_counter() - t0
    y_test = np.asarray(y_test)
    last_level = max((h.get("level", 0) for h in est.history_), default=0)
    chosen = [h for h in est.history_ if h["iteration"] == est.best_iter_ and h["reg"] == est.reg_
              and h.get("level", 0) == last_level]
    summary = {
        "model": model,
        "params": _json_safe(est.get_params()),
        "n_train": len(y_train),
        "n_test": len(y_test),
        "best_iter": est.best_iter_,
        "reg": est.reg_,
        "train_accuracy": est.train_metrics_.get("accuracy"),
        "val_accuracy": chosen[0].get("val_accuracy") if chosen else None,
        "test_accuracy": float((pred == y_test).mean()),
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "history": _json_safe(est.history_),
    }
    if hasattr(est, "best_iters_"):
        summary["best_iters"] = list(est.best_iters_)
    return est, summary


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_run(out_dir: str | Path, summary: dict, estimator) -> dict[str, Path]:
    """Write ``summary.json`` and the learned metric(s) as ``metrics.safetensors`` (keys ``M`` or ``M_0``…),
    each atomically (temporary file + rename). Returns the two paths."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    Ms = getattr(estimator, "Ms_", None)
    tensors = {f"M_{i}": M for i, M in enumerate(Ms)} if Ms is not None else {"M": estimator.M_}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    paths = {"summary": out / "summary.json", "metrics": out / "metrics.safetensors"}
    _atomic_write(paths["metrics"], lambda p: save_file(tensors, p))

    def _json(p):
        with open(p, "w") as fh:
            json.dump(summary, fh, indent=2)
            fh.write("\n")

    _atomic_write(paths["summary"], _json)
    return paths
