"""``convemerge cnfa``: the (convolutional) neural feature ansatz of a trained run or of a pretrained ImageNet net."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from convemerge.cli._app import app, fail


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def print_table(record: dict) -> None:
    """The per-layer table of a ``cnfa.json`` record, with rich."""
    from rich.console import Console
    from rich.table import Table

    src = record.get("source", {})
    settings = record.get("settings", {})
    title = (f"(C)NFA of {src.get('run') or src.get('model')}: {settings.get('n_images')} images"
             f"{' of the ' + src['split'] + ' split' if src.get('split') else ''}, AGOP^{settings.get('power', 1):g}")
    table = Table(title=title)
    columns = {"claim": "pearson", "cos": "cosine", "vs W₀": "agop_w0_pearson", "W moved": "w0_pearson",
               "at init": "init_pearson", "centred": "delta_pearson", "‖ΔW‖/‖W₀‖": "moved"}
    for col in ("layer", "kind", "d", *columns):
        table.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    skipped = []
    for row in record.get("table", []):
        if row.get("skipped"):
            table.add_row(row["layer"], row["kind"], str(row["in_dim"]), "skipped", *[""] * (len(columns) - 1))
            skipped.append(f"{row['layer']}: {row['skipped']}")
            continue
        table.add_row(row["layer"], row["kind"], str(row["in_dim"]), *(_fmt(row.get(k)) for k in columns.values()))
    console = Console()
    if not console.is_terminal:  # a log file or pipe: wide enough for every column rather than rich's 80
        console = Console(width=132)
    console.print(table)
    console.print("Pearson correlations: claim = corr(AGOP_T, W_TᵀW_T) (cos: its cosine); vs W₀ = corr(AGOP_T, "
                  "W₀ᵀW₀); W moved = corr(W₀ᵀW₀, W_TᵀW_T); at init = corr(AGOP₀, W₀ᵀW₀); centred = corr(AGOP_T, "
                  "ΔWᵀΔW), ΔW = W_T − W₀. Both AGOP powers and all cosines are in cnfa.json.")
    for line in skipped:
        console.print(f"skipped {line}")


def _other_power(power: float) -> tuple[float, ...]:
    """Both versions of the ansatz (AGOP and AGOP^½) are always computed; the table prints ``--power``."""
    return tuple(p for p in (1.0, 0.5) if p != power)


@app.command("cnfa")
def cnfa_command(
    run_dir: Optional[Path] = typer.Argument(None, help="Training run directory (with checkpoints/); omit with "
                                                        "--imagenet."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Take the images from this data set (same "
                                                                  "geometry) instead of the run's."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder searched first for the data files."),
    images: Optional[int] = typer.Option(None, "--images", "-n", help="Images in the AGOP (default 200; 20 with "
                                                                      "--imagenet)."),
    split: str = typer.Option("train", "--split", help="train | val: where the images come from (never test)."),
    power: float = typer.Option(1.0, "--power", help="Compare WᵀW with AGOP^P (e.g. 0.5)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN_DIR/cnfa; required "
                                                                 "with --imagenet)."),
    layer: Optional[list[str]] = typer.Option(None, "--layer", help="Analyse only these layers (repeatable)."),
    which: str = typer.Option("best", "--which", help="Checkpoint: best | last."),
    seed: int = typer.Option(0, "--seed", help="Seeds the image sample and the convergence subsets."),
    imagenet: Optional[str] = typer.Option(None, "--imagenet", help="resnet18 | vgg11: a pretrained net instead of "
                                                                    "a run."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="With --imagenet: torchvision-format state "
                                                                   "dict (.safetensors or .pth)."),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="With --imagenet: folder of .jpg/.png "
                                                                         "images (first N by name)."),
    outputs: Optional[int] = typer.Option(None, "--outputs", help="With --imagenet: sum the AGOP over the K classes "
                                                                  "of largest mean logit only (default: all 1000)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (1 is often fastest on a "
                                                                  "busy machine)."),
) -> None:
    """Correlate each layer's WᵀW with the (patch-)AGOP at its input, trained vs at initialisation; writes
    cnfa.json, the table, its convergence with the number of images, heat maps and eigenfilters."""
    import torch

    from convemerge.experiments.cnfa import run as cnfa_run
    from convemerge.runs import RunPaths

    if threads is not None:
        torch.set_num_threads(max(1, threads))
    if imagenet is not None:
        if run_dir is not None:
            fail("give either RUN_DIR or --imagenet, not both")
        if weights is None or images_dir is None or out is None:
            fail("--imagenet needs --weights FILE, --images-dir DIR and --out DIR")
        record = cnfa_run.cnfa_for_imagenet(
            imagenet, weights, images_dir, out, images=images or cnfa_run.DEFAULT_IMAGENET_IMAGES,
            outputs=outputs if outputs is not None else cnfa_run.DEFAULT_IMAGENET_OUTPUTS, power=power,
            layers=layer, seed=seed, extra_powers=_other_power(power))
        where = out
    else:
        if run_dir is None:
            fail("give a training run directory, or --imagenet resnet18|vgg11 with --weights and --images-dir")
        if outputs is not None:
            fail("--outputs applies to --imagenet only (a run's AGOP sums over all of its outputs)")
        record = cnfa_run.cnfa_for_run(run_dir, out, images=images or cnfa_run.DEFAULT_RUN_IMAGES, split=split,
                                       dataset=dataset, data_dir=data_dir, power=power, which=which, seed=seed,
                                       layers=layer, extra_powers=_other_power(power))
        where = out or run_dir / "cnfa"
    print_table(record)
    print(f"wrote {RunPaths(where).cnfa} and {len(record.get('figures', []))} figure(s) in {where}")
