"""``convemerge train`` (a thin shell over ``convemerge.train.train``) and ``convemerge runs list``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from convemerge.cli._app import app

runs = typer.Typer(help="Inspect training run directories.", no_args_is_help=True)
app.add_typer(runs, name="runs")

_RUNTIME = "Runtime"
_OPT = "Optimisation"
_DATA = "Data"
_MODEL = "Model"


@app.command("train")
def train_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig fields; flags override it."),
    model: Optional[str] = typer.Option(None, help="Model name (s-conv, s-local, s-fc, d-conv, ..., vanilla-cnn).", rich_help_panel=_MODEL),
    alpha: Optional[int] = typer.Option(None, help="Base channel count α.", rich_help_panel=_MODEL),
    opt: Optional[list[str]] = typer.Option(None, "--opt", help="Model option key=value (repeatable), e.g. --opt depth=4.", rich_help_panel=_MODEL),
    dropout: Optional[float] = typer.Option(None, help="Dropout on the last two linear layers (model option).", rich_help_panel=_MODEL),
    dataset: Optional[str] = typer.Option(None, help="Dataset name (mnist, fashion-mnist, cifar10, ..., mnist-5k, digits).", rich_help_panel=_DATA),
    data_dir: Optional[str] = typer.Option(None, help="Dataset root folder.", rich_help_panel=_DATA),
    data_opt: Optional[list[str]] = typer.Option(None, "--data-opt", help="Dataset option key=value (repeatable), e.g. --data-opt sigma=0.5.", rich_help_panel=_DATA),
    val_fraction: Optional[float] = typer.Option(None, help="Validation hold-out fraction of the train split.", rich_help_panel=_DATA),
    n_train: Optional[int] = typer.Option(None, help="Stratified subsample size of the training set.", rich_help_panel=_DATA),
    n_test: Optional[int] = typer.Option(None, help="Stratified subsample of the test set (the same images for every seed).", rich_help_panel=_DATA),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Crop+flip augmentation (default: the dataset's).", rich_help_panel=_DATA),
    pad_to: Optional[int] = typer.Option(None, help="Zero-pad images to this side (e.g. 32 for D-models on 28px data).", rich_help_panel=_DATA),
    optimizer: Optional[str] = typer.Option(None, help="sgd | adam | beta-lasso.", rich_help_panel=_OPT),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate.", rich_help_panel=_OPT),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum.", rich_help_panel=_OPT),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov/--no-nesterov", help="Nesterov momentum (SGD).", rich_help_panel=_OPT),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay (sgd/adam; weights only).", rich_help_panel=_OPT),
    beta: Optional[float] = typer.Option(None, help="β-LASSO threshold multiplier β.", rich_help_panel=_OPT),
    lam: Optional[float] = typer.Option(None, help="β-LASSO λ for all but the first layer.", rich_help_panel=_OPT),
    lam_first: Optional[float] = typer.Option(None, help="β-LASSO λ for the first layer.", rich_help_panel=_OPT),
    schedule: Optional[str] = typer.Option(None, help="cosine | constant.", rich_help_panel=_OPT),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warm-up length in epochs.", rich_help_panel=_OPT),
    epochs: Optional[int] = typer.Option(None, help="Number of epochs.", rich_help_panel=_OPT),
    stop_train_loss: Optional[float] = typer.Option(None, help="Also stop after the first epoch whose mean training loss is below this (e.g. 1e-5).", rich_help_panel=_OPT),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size.", rich_help_panel=_OPT),
    loss: Optional[str] = typer.Option(None, help="ce | mse (on one-hot targets).", rich_help_panel=_OPT),
    seed: Optional[int] = typer.Option(None, help="Seed of every random choice.", rich_help_panel=_RUNTIME),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda.", rich_help_panel=_RUNTIME),
    amp: Optional[str] = typer.Option(None, help="auto | off | bf16 | fp16 mixed precision.", rich_help_panel=_RUNTIME),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model.", rich_help_panel=_RUNTIME),
    num_threads: Optional[int] = typer.Option(None, help="torch CPU threads.", rich_help_panel=_RUNTIME),
    eval_batch_size: Optional[int] = typer.Option(None, help="Evaluation batch size.", rich_help_panel=_RUNTIME),
    log_every: Optional[int] = typer.Option(None, help="Steps between progress refreshes.", rich_help_panel=_RUNTIME),
    checkpoint_every: Optional[int] = typer.Option(None, help="Epochs between 'last' checkpoints.", rich_help_panel=_RUNTIME),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory.", rich_help_panel=_RUNTIME),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.", rich_help_panel=_RUNTIME),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on a terminal).", rich_help_panel=_RUNTIME),
) -> None:
    """Train a model; writes config.yaml, metrics.jsonl, checkpoints/ and summary.json to the run directory."""
    from convemerge.train import TrainConfig, merge_overrides, train
    from convemerge.train.config import parse_option_pairs

    model_options = parse_option_pairs(opt)
    if dropout is not None:
        model_options["dropout"] = dropout
    dataset_options = parse_option_pairs(data_opt)
    overrides = dict(
        model=model, alpha=alpha, model_options=model_options or None, dataset=dataset, data_dir=data_dir,
        dataset_options=dataset_options or None,
        val_fraction=val_fraction, n_train=n_train, n_test=n_test, augment=augment, pad_to=pad_to, optimizer=optimizer, lr=lr,
        momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, beta=beta, lam=lam, lam_first=lam_first,
        schedule=schedule, warmup_epochs=warmup_epochs, epochs=epochs, stop_train_loss=stop_train_loss, batch_size=batch_size, loss=loss, seed=seed,
        device=device, amp=amp, compile=compile, num_threads=num_threads, eval_batch_size=eval_batch_size,
        log_every=log_every, checkpoint_every=checkpoint_every, out=out,
    )
    if config is not None:
        base = TrainConfig.from_yaml(config)
    elif resume and out is not None and (Path(out) / "config.yaml").exists():
        base = TrainConfig.from_yaml(Path(out) / "config.yaml")  # the run's own config; flags may only add runtime changes
    else:
        base = TrainConfig()
    cfg = merge_overrides(base, overrides)
    command = _command_line(config, {**overrides, "model_options": None, "dataset_options": None}, opt, data_opt,
                            dropout, resume)
    result = train(cfg, resume=resume, progress=progress, command=command)
    s = result.summary
    if s.get("best_val_acc") is not None:
        test = s.get("test_acc_at_best")
        print(f"best val acc {100 * s['best_val_acc']:.2f}% at epoch {s['best_epoch']}"
              + (f" (test {100 * test:.2f}%)" if test is not None else "")
              + f"; {s['wall_time']:.1f}s; run: {result.run_dir}")
    else:
        print(f"done in {s['wall_time']:.1f}s; run: {result.run_dir}")


def _command_line(config, overrides, opt, data_opt, dropout, resume) -> str:
    """The command as given (rebuilt from the parsed options, so it is the same however it was invoked)."""
    words = ["convemerge", "train"]
    if config is not None:
        words += ["--config", str(config)]
    for key, value in overrides.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            words += [flag, str(value)]
    for pair in opt or []:
        words += ["--opt", pair]
    for pair in data_opt or []:
        words += ["--data-opt", pair]
    if dropout is not None:
        words += ["--dropout", str(dropout)]
    if resume:
        words.append("--resume")
    return shlex.join(words)


@runs.command("list")
def runs_list(directory: Path = typer.Argument(Path("runs"), help="Folder to search for run directories.")) -> None:
    """Table of the runs under DIRECTORY: model, data, optimizer, epochs, best validation and its test accuracy."""
    from rich.console import Console
    from rich.table import Table

    from convemerge.train import list_runs

    found = list_runs(directory)
    if not found:
        print(f"no runs under {directory}")
        return
    table = Table(title=f"runs under {directory}")
    for col in ("run", "model", "α", "dataset", "optimizer", "epochs", "best val", "@epoch", "test@best", "status",
                "time"):
        table.add_column(col, justify="right" if col in ("α", "epochs", "best val", "@epoch", "test@best", "time") else "left")

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    for r in found:
        try:
            name = str(Path(r["path"]).relative_to(directory))
        except ValueError:
            name = r["path"]
        table.add_row(
            name if name != "." else str(directory),
            str(r.get("model") or "-"), str(r.get("alpha") if r.get("alpha") is not None else "-"),
            str(r.get("dataset") or "-"), str(r.get("optimizer") or "-"),
            f"{r.get('epochs_done', 0)}/{r.get('epochs') or '-'}", pct(r.get("best_val_acc")),
            str(r.get("best_epoch") or "-"), pct(r.get("test_acc_at_best")), str(r.get("status") or "-"),
            f"{r.get('wall_time') or 0:.0f}s",
        )
    Console(width=max(120, Console().width)).print(table)
