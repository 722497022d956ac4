"""``convemerge rfm``: fit RFM / ConvRFM / Deep ConvRFM (or a fixed-kernel baseline) on an image data set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from convemerge.cli._app import app


def _reg(value: str):
    return value if value == "auto" else float(value)


@app.command("rfm")
def rfm_command(
    model: str = typer.Option("rfm", "--model", help="rfm | convrfm | deep-convrfm | laplace | cntk (the last two: "
                                                      "fixed-kernel baselines, no feature learning)."),
    dataset: str = typer.Option("fashion-mnist", "--dataset", help="A name from `convemerge data list`."),
    n_train: int = typer.Option(2000, "--n-train", help="Seeded, stratified subsample of the train split."),
    n_test: Optional[int] = typer.Option(None, "--n-test", help="Subsample of the test split (default: all)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder searched first for the data files."),
    seed: int = typer.Option(0, "--seed", help="Seeds the subsamples, the validation split and the AGOP sample."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the run summary and the learned matrices here."),
    n_iter: Optional[int] = typer.Option(None, "--n-iter", help="AGOP rounds (default: the estimator's)."),
    reg: str = typer.Option("1e-3", "--reg", help="Ridge, or 'auto' to choose it on the validation split."),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="laplace|gaussian (rfm); cntk|cnngp|patch-laplace "
                                                                 "(conv models)."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Conv depth (conv models)."),
    width: Optional[int] = typer.Option(None, "--width", help="Random filters per level (deep-convrfm)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float64 | float32 (default: the estimator's)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    solver: Optional[str] = typer.Option(None, "--solver", help="solve | cholesky | eigenpro | auto (by n and "
                                                                 "memory; default: the estimator's)."),
    agop_sample_size: Optional[int] = typer.Option(None, "--agop-sample-size",
                                                   help="Average the AGOP over this many training points (default: all)."),
    agop_power: Optional[float] = typer.Option(None, "--agop-power", help="Metric = AGOP^power (default: the "
                                                                          "estimator's)."),
    padding: Optional[str] = typer.Option(None, "--padding", help="same | valid (conv models)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every round as it finishes."),
) -> None:
    """Fit on --n-train images (round and ridge chosen on a validation split of them) and report the test set."""
    from convemerge.experiments.convrfm.kernel_fit import fit_and_evaluate, load_image_arrays, save_run

    Xtr, ytr = load_image_arrays(dataset, "train", n_train, seed, data_dir)
    Xte, yte = load_image_arrays(dataset, "test", n_test, seed, data_dir)
    est, summary = fit_and_evaluate(model, Xtr, ytr, Xte, yte, n_iter=n_iter, reg=_reg(reg), kernel=kernel,
                                    depth=depth, width=width, dtype=dtype, device=device, random_state=seed,
                                    solver=solver, agop_sample_size=agop_sample_size, agop_power=agop_power,
                                    padding=padding,
                                    verbose=int(verbose))
    summary.update(dataset=dataset, seed=seed)
    acc = {k: summary[f"{k}_accuracy"] for k in ("train", "val", "test")}
    print(f"{model} on {dataset}: n_train={summary['n_train']} n_test={summary['n_test']} "
          f"chosen round={summary['best_iter']} reg={summary['reg']:g} (on validation)")
    print("accuracy: " + "  ".join(f"{k}={v:.4f}" if v is not None else f"{k}=n/a" for k, v in acc.items())
          + f"  fit={summary['fit_seconds']:.1f}s")
    if out is not None:
        paths = save_run(out, summary, est)
        print(f"wrote {paths['summary']} and {paths['metrics']}")
