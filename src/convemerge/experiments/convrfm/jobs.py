"""Callable jobs of the ``convrfm`` recipe: fit one kernel machine on ``n_train`` images and score it.

:func:`kernel_job` is listed with ``CallableSpec`` once per (method, n); the runner calls it per dataset and seed as
``kernel_job(out=<job dir>, method=..., n_train=..., dataset=..., seed=..., **kwargs)``. It draws the ``n_train``
training images (stratified, from ``seed``) and the test images exactly as a training run with the same
``n_test`` does (:func:`convemerge.data.fixed_test_subset`, one fixed subsample for every seed and method),
fits the estimator — whose round is chosen on a validation split carved from the ``n_train`` images — and writes into
``out``: its summary (accuracies, chosen round, per-round history, timings), the learned metric(s)
(:func:`convemerge.runs.write_kernel_matrices`) and ``eigenfilters.png`` (the top eigenvectors of M as patches, or as
images for RFM): of the chosen metric, or — where validation kept M = I — of the last round's (saved as ``M_last``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convemerge.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["kernel_job", "kernel_arrays", "METHODS"]

#: methods a job can fit (see :data:`convemerge.experiments.convrfm.kernel_fit.MODELS`); the vanilla CNN is a training arm
METHODS = ("laplace", "rfm", "cntk", "convrfm", "deep-convrfm")


def kernel_arrays(dataset: str, n_train: int, seed: int, n_test: int | None = None, data_dir: str | None = None,
                  dataset_options: Mapping[str, Any] | None = None):
    """(X_train, y_train, X_test, y_test): ``n_train`` stratified training images drawn with ``seed`` and the
    test subsample every run with this ``n_test`` scores on; standardised with the train split's statistics."""
    from convemerge.data import load_dataset
    from convemerge.data import fixed_test_subset, standardised_arrays, stratified_subset
    from convemerge.train import derived_seed

    opts = dict(dataset_options or {})
    train = load_dataset(dataset, "train", root=data_dir, **opts)
    test = load_dataset(dataset, "test", root=data_dir, **opts)
    if n_train < len(train):
        train = train.subset(stratified_subset(train.labels, int(n_train), derived_seed(seed, 3)))
    elif n_train > len(train):
        raise ConfigError(f"n_train={n_train} exceeds the {len(train)} training images of {dataset}; lower it")
    Xtr, ytr = standardised_arrays(train)
    Xte, yte = standardised_arrays(fixed_test_subset(test, n_test))
    return Xtr, ytr, Xte, yte


def _pictured_metric(est, method: str) -> tuple[str, int, torch.Tensor] | None:
    """(key in the saved matrices, round, M): the metric whose eigenvectors describe what the machine learned — the
    one validation chose, or, where it kept M = I (round 0), the last round's (that picture then shows what was
    learned and not used). None for the fixed kernels."""
    if method in ("rfm", "convrfm"):
        M, chosen, last, key = est.M_, est.best_iter_, est.last_metric_, "M"
    elif method == "deep-convrfm":  # the first level's metric acts on image patches
        M, chosen, last, key = est.Ms_[0], est.best_iters_[0], est.last_metrics_[0], "M_0"
    else:
        return None
    if chosen > 0:
        return key, chosen, M
    rounds = int(est.n_iter)
    return (f"{key}_last", rounds, last) if rounds > 0 else None


def _eigenfilters(M: torch.Tensor, est, method: str, image_shape, out: Path, k: int) -> str:
    """Top eigenvectors of a metric as pictures (c×q×q patches, or whole images for RFM)."""
    from convemerge.kernels.plots import plot_eigenpatches

    q = int(getattr(est, "patch_size", 0))
    shape = tuple(image_shape) if method == "rfm" else (int(image_shape[0]), q, q)
    fig = plot_eigenpatches(M.detach().cpu().double(), shape, k=min(k, M.shape[0]))
    tmp = out / ".eigenfilters.png.tmp"
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(out / "eigenfilters.png")
    return "eigenfilters.png"


def kernel_job(out: str, *, method: str, dataset: str, n_train: int, seed: int = 0, n_test: int | None = None,
               options: Mapping[str, Any] | None = None,
               dataset_options: Mapping[str, Mapping[str, Any]] | None = None,
               eigenfilters: int = 8, data_dir: str | None = None, variant: str | None = None) -> dict[str, Any]:
    """Fit ``method`` (laplace | rfm | cntk | convrfm | deep-convrfm) with estimator ``options`` on ``n_train``
    images of ``dataset`` and score the test subsample; writes ``summary.json`` (and the metric) in ``out``.
    ``dataset_options`` maps dataset names to their ``load_dataset`` options (e.g. ``{"noise-row": {"sigma":
    3}}``), so one recipe entry serves every dataset. ``variant`` names a setting of ``method`` that the report
    shows as its own column (e.g. ``"convrfm-agop2"``: ConvRFM with the metric AGOP²)."""
    from convemerge.experiments.convrfm.kernel_fit import fit_and_evaluate, save_run

    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not one of {', '.join(METHODS)}")
    start = time.perf_counter()
    data_opts = dict((dataset_options or {}).get(dataset, {}))
    Xtr, ytr, Xte, yte = kernel_arrays(dataset, n_train, seed, n_test, data_dir, data_opts)
    out_path = Path(out)  # created only once the data are there: a refused job leaves nothing behind
    out_path.mkdir(parents=True, exist_ok=True)
    image_shape = tuple(Xtr.shape[1:])
    opts = {"random_state": seed, **dict(options or {})}
    est, summary = fit_and_evaluate(method, Xtr, ytr, Xte, yte, **opts)
    pictured = _pictured_metric(est, method)
    picture = (_eigenfilters(pictured[2], est, method, image_shape, out_path, eigenfilters)
               if eigenfilters and pictured else None)
    record = {"kind": "kernel", "status": "completed", "method": method, "variant": variant or method,
              "dataset": dataset, "seed": seed,
              "dataset_options": data_opts, "image_shape": list(image_shape), "eigenfilters": picture,
              "eigenfilters_metric": pictured[0] if picture else None,
              "eigenfilters_round": pictured[1] if picture else None, **summary,
              "seconds": time.perf_counter() - start}
    extra = {pictured[0]: pictured[2]} if picture and pictured[0].endswith("_last") else None
    paths = save_run(out_path, record, est, extra)  # the matrices, then the summary (the finished marker)
    return {"summary": str(paths["summary"])}
