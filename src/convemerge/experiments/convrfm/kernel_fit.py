"""Fit a feature-learning kernel machine on an image data set, score it and save it (under ``convemerge rfm`` and
the kernel jobs): the orchestration over :mod:`convemerge.kernels`, which only defines and fits the estimators.

>>> from convemerge.experiments.convrfm.kernel_fit import load_image_arrays, fit_and_evaluate  # doctest: +SKIP
>>> Xtr, ytr = load_image_arrays("mnist-5k", "train", n=500, seed=0)               # doctest: +SKIP
>>> Xte, yte = load_image_arrays("mnist-5k", "test", n=500, seed=0)                # doctest: +SKIP
>>> est, summary = fit_and_evaluate("convrfm", Xtr, ytr, Xte, yte, n_iter=2)      # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from convemerge.data import standardised_arrays
from convemerge.errors import ConfigError
from convemerge.kernels import ConvRFMClassifier, DeepConvRFMClassifier, RFMClassifier
from convemerge.runs import json_safe, write_kernel_matrices, write_summary

__all__ = ["MODELS", "fit_and_evaluate", "load_image_arrays", "make_estimator", "save_run", "standardised_arrays"]

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
    from convemerge.data.split import stratified_subset

    data = load_dataset(dataset, split, root=root)
    if n is not None and n < len(data):
        if n < 1:
            raise ConfigError(f"n={n} must be >= 1")
        data = data.subset(stratified_subset(data.labels, int(n), seed))  # exactly n, classes in proportion
    return standardised_arrays(data)


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
    """Estimator parameters and history as JSON: what json_safe cannot store (a callable kernel) as its text."""
    try:
        return json_safe(value)
    except TypeError:
        pass
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
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


def save_run(out_dir: str | Path, summary: dict, estimator, extra: dict | None = None) -> dict[str, Path]:
    """Write the learned metric(s) (keys ``M`` or ``M_0``…, plus any ``extra`` named matrices) and then the summary
    (the finished marker) into the run directory ``out_dir``, each atomically. Returns ``{"summary": path,
    "metrics": path}`` (``metrics``: the matrices' file, named as before)."""
    from convemerge.runs import RunPaths

    Ms = getattr(estimator, "Ms_", None)
    tensors = {f"M_{i}": M for i, M in enumerate(Ms)} if Ms is not None else {"M": estimator.M_}
    tensors.update(extra or {})
    matrices = write_kernel_matrices(out_dir, tensors)
    write_summary(out_dir, summary)
    return {"summary": RunPaths(out_dir).summary, "metrics": matrices}
