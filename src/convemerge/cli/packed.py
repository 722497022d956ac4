"""``convemerge train-packed``: a seed × λ × β grid of one configuration, trained as one packed model."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Optional

import typer

from convemerge.cli._app import app


@app.command("train-packed")
def train_packed_command(
    config: Path = typer.Option(..., "--config", "-c", help="YAML file of the TrainConfig fields the runs share."),
    seed: Optional[list[int]] = typer.Option(None, "--seed", help="A seed of the grid (repeatable)."),
    lam: Optional[list[float]] = typer.Option(None, "--lam", help="A β-LASSO λ of the grid (repeatable)."),
    beta: Optional[list[float]] = typer.Option(None, "--beta", help="A β-LASSO β of the grid (repeatable)."),
    out_root: Path = typer.Option(..., "--out-root", help="Folder of the run directories (one per grid point)."),
    resume: bool = typer.Option(False, "--resume", help="Continue every run of the grid from its last checkpoint."),
) -> None:
    """Train every (seed, λ, β) of the grid as one packed model; each run gets its own ordinary run directory,
    <out-root>/s<seed>-lam<λ>-beta<β>."""
    from convemerge.train import TrainConfig
    from convemerge.train.packed import train_packed

    base = TrainConfig.from_yaml(config)
    configs = [base.replace(seed=s, lam=lm, beta=b, out=str(out_root / f"s{s}-lam{lm:g}-beta{b:g}"))
               for s, lm, b in itertools.product(seed or [base.seed], lam or [base.lam], beta or [base.beta])]
    results = train_packed(configs, resume=resume)
    for r in results:
        best = r.summary.get("best_val_acc")
        print(f"{r.run_dir}: best val acc {100 * best:.2f}%" if best is not None else f"{r.run_dir}: done")
