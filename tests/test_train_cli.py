"""``convemerge train`` and ``convemerge runs list`` through the CLI entry point."""

from __future__ import annotations

import dataclasses
import json

import pytest
import typer

from convemerge.cli import app, main
from convemerge.models import list_models
from convemerge.train.config import OPTIMISATION, TrainConfig, setting, settings

# Small settings that make every registered model fit the 8x8 digits in a second or two.
SMALL = {
    "s-conv": ["--alpha", "2"], "s-local": ["--alpha", "2"], "s-fc": ["--alpha", "2"],
    "d-conv": ["--alpha", "1", "--pad-to", "16"], "d-local": ["--alpha", "1", "--pad-to", "16"],
    "d-fc": ["--alpha", "1", "--pad-to", "16"], "3-fc": ["--opt", "width=32"],
    "resnet18": ["--alpha", "2"], "vanilla-cnn": ["--opt", "width=4", "--opt", "depth=2"],
}


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_two_epochs(tmp_path, name, capsys):
    args = ["train", "--model", name, *SMALL.get(name, []), "--dataset", "digits", "--n-train", "200",
            "--epochs", "2", "--batch-size", "64", "--num-threads", "1", "--out", str(tmp_path / name)]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "best val acc" in out


def test_config_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: s-fc\nalpha: 2\ndataset: digits\nepochs: 5\nlr: 0.02\nnum_threads: 1\n")
    out = tmp_path / "run"
    assert main(["train", "-c", str(cfg), "--epochs", "1", "--optimizer", "beta-lasso", "--beta", "50",
                 "--lam", "1e-6", "--lam-first", "2e-5", "--no-augment", "--out", str(out)]) == 0
    saved = (out / "config.yaml").read_text()
    assert "epochs: 1" in saved and "lr: 0.02" in saved and "optimizer: beta-lasso" in saved
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"].startswith("convemerge train --config")
    assert "--lam-first 2e-05" in summary["command"] and "--no-augment" in summary["command"]
    capsys.readouterr()
    assert main(["runs", "list", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "run" in table and "beta-lasso" in table and f"{100 * summary['best_val_acc']:.2f}%" in table


def test_authors_net_options_and_loss_threshold_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "authors"
    args = ["train", "--model", "vanilla-cnn", "--opt", "width=4", "--opt", "depth=2", "--opt", "bias=false",
            "--opt", "init_std=5e-3", "--dataset", "digits", "--n-train", "200", "--optimizer", "adam",
            "--lr", "1e-2", "--schedule", "constant", "--epochs", "30", "--stop-train-loss", "0.8",
            "--val-fraction", "0", "--num-threads", "1", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_done"] < 30 and "stop_train_loss 0.8" in summary["stopped_early"]
    assert "stopped early" in capsys.readouterr().out
    from convemerge.train import TrainConfig

    saved = TrainConfig.from_yaml(out / "config.yaml")
    assert saved.stop_train_loss == 0.8
    assert saved.model_options == {"width": 4, "depth": 2, "bias": False, "init_std": 0.005}


@pytest.mark.parametrize("args, fragment", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--optimizer", "rmsprop"], "optimizer='rmsprop' is invalid"),
    (["--model", "d-conv"], "--pad-to"),
    (["--opt", "depth"], "key=value"),
    (["--model", "vanilla-cnn", "--opt", "init_std=-1"], "init_std=-1 is invalid"),
    (["--stop-train-loss", "0"], "stop_train_loss=0.0 is invalid"),
    (["--device", "cuda"], "CUDA is not available"),
])
def test_user_errors_are_one_line(tmp_path, capsys, args, fragment):
    rc = main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert rc != 0 and err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_runs_list_empty(tmp_path, capsys):
    assert main(["runs", "list", str(tmp_path)]) == 0
    assert "no runs" in capsys.readouterr().out


# ----------------------------------------------------------------------------- options generated from TrainConfig
def _train_options() -> dict[str, list[str]]:
    command = typer.main.get_command(app).commands["train"]
    return {p.name: [*p.opts, *p.secondary_opts] for p in command.params}


def test_every_field_has_a_flag_unless_marked_not_on_the_cli():
    options = _train_options()
    for name, s in settings().items():
        flag = "--" + name.replace("_", "-")
        if s.cli:
            assert flag in options.get(name, []), f"{name} has no {flag}"
        else:
            assert name not in options, f"{name} is marked cli=False but has an option"
    # the fields that are not options of their own: set in a --config file (the first two through --opt/--data-opt)
    assert {n for n, s in settings().items() if not s.cli} == {
        "model_options", "dataset_options", "adam_betas", "regularize_bias_and_norm", "deterministic"}
    assert set(options) - set(settings()) == {"config", "opt", "dropout", "data_opt", "resume", "progress"}
    assert options["out"] == ["--out", "-o"] and options["augment"] == ["--augment", "--no-augment"]


def test_a_new_field_is_declared_once_and_gets_its_flag():
    from convemerge.cli.train import train_parameters

    @dataclasses.dataclass
    class Extended(TrainConfig):
        stop_train_loss: float | None = setting(None, help="Stop once the training loss is below this.",
                                                panel=OPTIMISATION)

    params = {p.name: p.default for p in train_parameters(Extended)}
    option = params["stop_train_loss"]
    assert option.param_decls == ("--stop-train-loss",) and option.default is None
    assert option.help == "Stop once the training loss is below this." and option.rich_help_panel == "Optimisation"
    assert list(params)[-2:] == ["resume", "progress"]


def test_a_field_without_a_setting_has_no_flag_but_an_error():
    from convemerge.cli.train import train_parameters

    @dataclasses.dataclass
    class Extended(TrainConfig):
        stop_train_loss: float | None = None

    with pytest.raises(TypeError, match="'stop_train_loss' has no Setting"):
        train_parameters(Extended)
