"""``convemerge data list | check | info``: what data is known and where, checksums, and a summary of a set."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from convemerge.cli._app import app, fail
from convemerge.errors import ConvemergeError

grp = typer.Typer(help="Data sets: what is known and found where, checksums, summaries.", no_args_is_help=True)
app.add_typer(grp, name="data")

_DIR = typer.Option(None, "--data-dir", "-d", help="Folder searched first (then $CONVEMERGE_DATA, the user cache, "
                                                   "system locations).")


@grp.command("list")
def list_command(data_dir: Optional[str] = _DIR) -> None:
    """List the known data sets and where each is found."""
    from convemerge.data.inventory import inventory

    table = Table(title="data sets")
    for col in ("name", "kind", "found", "description"):
        table.add_column(col, overflow="fold")
    for row in inventory(data_dir):
        found = row["where"] or "[yellow]not found[/yellow] (downloaded on first use when online)"
        table.add_row(row["name"], row["kind"], found, row["description"])
    Console().print(table)


@grp.command("check")
def check_command(names: list[str] = typer.Argument(..., help="Data set names, e.g. mnist cifar10."),
                  data_dir: Optional[str] = _DIR) -> None:
    """Verify the checksums of every file of each data set; exit non-zero on a mismatch or missing files."""
    from convemerge.data.inventory import check_dataset

    table = Table(title="checksums")
    for col in ("data set", "file", "result"):
        table.add_column(col, overflow="fold")
    errors: list[str] = []
    for name in names:
        try:
            for path, how in check_dataset(name, data_dir):
                table.add_row(name, path, f"[green]ok[/green] ({how})")
        except ConvemergeError as exc:
            errors.append(str(exc))
            table.add_row(name, "", "[red]FAILED[/red]")
    Console().print(table)
    if errors:
        more = f" (and {len(errors) - 1} more failure(s))" if len(errors) > 1 else ""
        fail(errors[0] + more)


@grp.command("info")
def info_command(name: str = typer.Argument(..., help="Data set name."), data_dir: Optional[str] = _DIR,
                 seed: Optional[int] = typer.Option(None, help="Seed (synthetic tasks only)."),
                 download: bool = typer.Option(True, "--download/--no-download",
                                               help="Fetch the official files when absent (when online)."),
                 verify: bool = typer.Option(True, "--verify/--no-verify", help="Check checksums.")) -> None:
    """Shape, classes, counts per split and channel statistics of a data set."""
    from convemerge.data import load_dataset

    options = {} if seed is None else {"seed": seed}
    try:
        splits = {s: load_dataset(name, s, data_dir, download=None if download else False, verify=verify, **options)
                  for s in ("train", "test")}
    except ConvemergeError as exc:
        fail(str(exc))
    train = splits["train"]
    console = Console()
    summary = Table(title=f"{name}", show_header=False)
    summary.add_row("image shape (C, H, W)", str(tuple(train.images.shape[1:])))
    summary.add_row("pixel type", str(train.images.dtype).replace("torch.", ""))
    summary.add_row("classes", f"{train.num_classes}: {', '.join(train.classes[:12])}"
                    + (", ..." if train.num_classes > 12 else ""))
    summary.add_row("mean (train)", ", ".join(f"{m:.4f}" for m in train.mean))
    summary.add_row("std (train)", ", ".join(f"{s:.4f}" for s in train.std))
    summary.add_row("crop+flip augmentation", "yes" if train.augment else "no")
    console.print(summary)
    counts = Table(title="examples per class")
    counts.add_column("split")
    counts.add_column("total", justify="right")
    shown = train.classes[:20]
    for c in shown:
        counts.add_column(c, justify="right")
    for s, d in splits.items():
        per = d.labels.bincount(minlength=d.num_classes).tolist()
        counts.add_row(s, str(len(d)), *[str(v) for v in per[:len(shown)]])
    console.print(counts)
