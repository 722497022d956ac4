"""``convemerge rfm``: the command over the library (embedded mnist-5k, tiny settings)."""

from __future__ import annotations

import json

from convemerge.runs import read_kernel_matrices

from convemerge.cli import main


def test_rfm_command_writes_summary_and_metric(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["rfm", "--model", "convrfm", "--dataset", "mnist-5k", "--n-train", "60", "--n-test", "40",
               "--n-iter", "1", "--depth", "2", "--kernel", "patch-laplace", "--seed", "3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "chosen round=" in text and "test=" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train"] == 60 and summary["n_test"] == 40 and summary["dataset"] == "mnist-5k"
    assert summary["best_iter"] in (0, 1) and 0 <= summary["test_accuracy"] <= 1
    assert summary["val_accuracy"] is not None and len(summary["history"]) == 2
    assert read_kernel_matrices(out)["M"].shape == (9, 9)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_rfm_command_deep_model_saves_every_level(tmp_path):
    out = tmp_path / "deep"
    rc = main(["rfm", "--model", "deep-convrfm", "--dataset", "mnist-5k", "--n-train", "40", "--n-test", "20",
               "--n-iter", "0", "--depth", "2", "--width", "4", "--kernel", "patch-laplace", "--out", str(out)])
    assert rc == 0
    tensors = read_kernel_matrices(out)
    assert tensors["M_0"].shape == (9, 9) and tensors["M_1"].shape == (36, 36)


def test_rfm_command_user_errors_are_one_line(capsys):
    assert main(["rfm", "--model", "svm", "--dataset", "mnist-5k", "--n-train", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "svm" in err and "\n" not in err
    assert main(["rfm", "--model", "rfm", "--dataset", "mnist-5k", "--n-train", "20", "--depth", "3"]) == 2


def test_load_image_arrays_draws_exactly_n_in_proportion():
    import torch

    from convemerge.experiments.convrfm.kernel_fit import load_image_arrays

    _, y_all = load_image_arrays("mnist-5k", "train")
    share = torch.bincount(y_all, minlength=10).double() / len(y_all)
    for n in (7, 33, 101, 999):  # per-class rounding of n/N·count used to give n ± a few
        X, y = load_image_arrays("mnist-5k", "train", n=n, seed=1)
        assert len(X) == len(y) == n
        assert (torch.bincount(y, minlength=10) - n * share).abs().max() < 1
