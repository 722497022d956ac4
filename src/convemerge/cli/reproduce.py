"""``convemerge reproduce`` (recipes -> runs -> report), ``convemerge report`` and ``convemerge export``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from convemerge.cli._app import app, fail


@app.command("reproduce")
def reproduce_command(
    experiment: str = typer.Argument(..., help="table1 | table2 | fig2 | fig3 | fig4 | fig5 | all (and any "
                                               "registered experiment)."),
    scale: str = typer.Option("quick", "--scale", "-s", help="quick (embedded data, minutes on a CPU) | cpu "
                                                             "(full MNIST/Fashion-MNIST/CIFAR-10, hours) | paper "
                                                             "(the paper's widths and epochs, GPUs) | seed (Table 2 "
                                                             "and Figs. 3-4 in the student reproduction's setting: "
                                                             "CIFAR-10, α = 1, 400 epochs)."),
    dataset: Optional[list[str]] = typer.Option(None, "--dataset", "-d", help="Run on these datasets instead of "
                                                                              "the recipe's (repeatable)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Number of seeds (0..N-1); default: the scale's "
                                                              "(2 for quick, 3 otherwise)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Runs folder (default runs/reproduce-<scale>)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Local worker processes, each with "
                                                                        "cores/N threads (default: one per core, "
                                                                        "at most 16; 1 at paper scale)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run the jobs as Ray tasks on this "
                                                                          "cluster ('local' starts one here)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder searched first for the dataset files "
                                                                      "(sets $CONVEMERGE_DATA for every job)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Build the report when the runs are done."),
    list_only: bool = typer.Option(False, "--list", help="Print the jobs (run ids) and exit without running."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run only the arms matching this glob "
                                                                  "(repeatable), e.g. 'bce/s-fc/*'; the rest stay "
                                                                  "listed and run on a later call without it."),
    pack: Optional[bool] = typer.Option(None, "--pack/--no-pack", help="Train compatible runs (seeds, λ, β, ... of "
                                        "one arm) together as packed runs first: many small nets on one GPU "
                                        "(default: when the runs go to a CUDA device)."),
) -> None:
    """Run a paper table or figure as a recipe: finished runs are skipped, interrupted ones resumed."""
    from convemerge.experiments.registry import expand_experiments, get_recipe
    from convemerge.experiments.reproduce import default_out, reproduce
    from convemerge.experiments.runner import available_cores

    out = out or default_out(scale)
    if data_dir is not None:
        import os

        if not data_dir.is_dir():
            fail(f"--data-dir {data_dir} is not a folder; give the folder that holds the dataset files")
        # an environment variable reaches every worker process (and a local Ray instance) without entering the
        # run ids: where the files lie does not change what a run computes
        os.environ["CONVEMERGE_DATA"] = str(data_dir.resolve())
    if workers is None:
        # small nets train faster as one single-threaded process per core than as one multi-threaded process;
        # paper-scale nets want the whole machine (a GPU) each
        workers = 1 if scale == "paper" else min(16, available_cores())
    if list_only:
        for name in expand_experiments(experiment, scale):
            recipe = get_recipe(name, scale).with_overrides(seeds=seeds, datasets=tuple(dataset or ()) or None)
            jobs = recipe.jobs(out)
            if only:
                from convemerge.experiments.reproduce import select_arms

                jobs = select_arms(jobs, only)
            for job in jobs:
                print(f"{name}\t{job.arm}\t{job.dataset}\t{job.seed}\t{job.run_id}")
        return
    # the command recorded with every run: what reproduces it (execution-only flags left out)
    argv = ["reproduce", experiment, "--scale", scale, "--out", str(out)]
    argv += [a for d in dataset or () for a in ("--dataset", d)]
    argv += ["--seeds", str(seeds)] if seeds is not None else []
    result = reproduce(experiment, scale, out=out, datasets=dataset, seeds=seeds, workers=workers,
                       ray_address=ray_address, argv=argv, only=only, pack=pack)
    if report:
        from convemerge.report import build_report

        files = build_report(out)
        print(f"report: {files.html}")
    if not result.run.ok:
        fail(f"{len(result.run.failed)} job(s) failed (see error.txt in their run folders); rerun the same "
             f"command to retry them", code=1)


@app.command("report")
def report_command(
    runs_dir: Path = typer.Argument(..., help="Runs folder written by `convemerge reproduce` (its --out)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.html / report.md "
                                                                 "(default: RUNS_DIR)."),
) -> None:
    """Write one self-contained HTML report (+ Markdown tables) from the run records; never trains."""
    from convemerge.report import build_report

    files = build_report(runs_dir, out)
    print(f"markdown: {files.markdown}")
    print(f"report: {files.html}")


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="Run directory (with checkpoints/)."),
    sparse: bool = typer.Option(False, "--sparse", help="Sparse CSR weight matrices + JSON (the only format)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output path stem (default RUN/export/sparse)."),
    which: str = typer.Option("best", "--which", help="Checkpoint: best | last."),
) -> None:
    """Export a trained net, e.g. a β-LASSO S-FC whose weights are mostly zero, for fast sparse inference."""
    from convemerge.train.export import export_sparse

    if not sparse:
        fail("only the sparse format is available: pass --sparse")
    path = export_sparse(run, out, which=which)
    print(f"exported: {path} (+ {path.with_suffix('.json').name})")
