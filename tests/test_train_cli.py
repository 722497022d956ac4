"""``convemerge train`` and ``convemerge runs list`` through the CLI entry point."""

from __future__ import annotations

import json

import pytest

from convemerge.cli import main
from convemerge.models import list_models

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
