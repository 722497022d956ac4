"""``convemerge train`` (a thin shell over ``convemerge.train.train``) and ``convemerge runs list``.

The options of ``train`` are generated from the TrainConfig fields' :class:`~convemerge.train.config.Setting` s
(help, panel, short flag; ``cli=False`` fields have none): a new field declared in ``train/config.py`` gets its flag
without an edit here. Only the options that are not one field each are written out below.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shlex
from pathlib import Path
from typing import Any, Optional

import typer

from convemerge.cli._app import app
from convemerge.train.config import DATA, MODEL, RUNTIME, Setting, TrainConfig, setting_of

runs = typer.Typer(help="Inspect training run directories.", no_args_is_help=True)
app.add_typer(runs, name="runs")

# Options that are not one TrainConfig field each; a shortcut is listed after the field it fills.
_CONFIG = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig fields; flags override it.")
_SHORTCUTS = {
    "model_options": {
        "opt": (Optional[list[str]], typer.Option(
            None, "--opt", help="Model option key=value (repeatable), e.g. --opt depth=4.", rich_help_panel=MODEL)),
        "dropout": (Optional[float], typer.Option(
            None, help="Dropout on the last two linear layers (model option).", rich_help_panel=MODEL)),
    },
    "dataset_options": {
        "data_opt": (Optional[list[str]], typer.Option(
            None, "--data-opt", help="Dataset option key=value (repeatable), e.g. --data-opt sigma=0.5.",
            rich_help_panel=DATA)),
    },
}
_TAIL = {
    "resume": (bool, typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint.", rich_help_panel=RUNTIME)),
    "progress": (Optional[bool], typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: on a terminal).", rich_help_panel=RUNTIME)),
}
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def field_option(name: str, type_name: str, s: Setting) -> tuple[Any, Any]:
    """The (annotation, ``typer.Option``) of a TrainConfig field: ``--<name with dashes>`` (``--x/--no-x`` for a
    bool), default None (a flag given overrides the --config file, one not given leaves it)."""
    base = type_name.replace(" | None", "")
    if base not in _TYPES:
        raise TypeError(f"TrainConfig field {name!r} of type {type_name} has no CLI type; mark it cli=False")
    flag = "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}" if base == "bool" else flag] + ([s.short] if s.short else [])
    return Optional[_TYPES[base]], typer.Option(None, *decls, help=s.help, rich_help_panel=s.panel)


def train_parameters(config_class: type = TrainConfig) -> list[inspect.Parameter]:
    """The parameters of ``convemerge train``: --config, one option per TrainConfig field with ``cli=True`` (in
    field order, each shortcut after the field it fills), then --resume and --progress. TypeError for a field
    declared without a Setting."""
    params = {"config": (Optional[Path], _CONFIG)}
    for f in dataclasses.fields(config_class):
        s = setting_of(f)
        if s.cli:
            params[f.name] = field_option(f.name, str(f.type), s)
        params.update(_SHORTCUTS.get(f.name, {}))
    params.update(_TAIL)
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
            for name, (annotation, option) in params.items()]


def train_command(**options: Any) -> None:
    """Train a model; writes config.yaml, metrics.jsonl, checkpoints/ and summary.json to the run directory."""
    _train(**options)


train_command.__signature__ = inspect.Signature(train_parameters())  # type: ignore[attr-defined]
app.command("train")(train_command)


def _train(*, config: Path | None, opt: list[str] | None, dropout: float | None, data_opt: list[str] | None,
           resume: bool, progress: bool | None, **fields: Any) -> None:
    from convemerge.runs import RunPaths
    from convemerge.train import merge_overrides, train
    from convemerge.train.config import parse_option_pairs

    model_options = parse_option_pairs(opt)
    if dropout is not None:
        model_options["dropout"] = dropout
    dataset_options = parse_option_pairs(data_opt)
    options = {"model_options": model_options or None, "dataset_options": dataset_options or None}
    # every field the command line can set, in field order (the order of the recorded command)
    overrides = {f.name: fields[f.name] if f.name in fields else options[f.name]
                 for f in dataclasses.fields(TrainConfig) if f.name in fields or f.name in options}
    out = overrides["out"]
    if config is not None:
        base = TrainConfig.from_yaml(config)
    elif resume and out is not None and RunPaths(out).config.exists():
        base = TrainConfig.from_yaml(RunPaths(out).config)  # the run's own config; flags may only add runtime changes
    else:
        base = TrainConfig()
    cfg = merge_overrides(base, overrides)
    command = _command_line(config, {**overrides, "model_options": None, "dataset_options": None}, opt, data_opt,
                            dropout, resume)
    result = train(cfg, resume=resume, progress=progress, command=command)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return  # under torchrun only rank 0 reports
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
