"""The run-directory owner: a run's initial weights, status values read the same everywhere, JSON records."""

from __future__ import annotations

import json

import pytest
import torch

from convemerge.errors import ConfigError
from convemerge.runs import (
    NOT_FINAL,
    RunPaths,
    RunStatus,
    atomic_write_json,
    init_model,
    is_final,
    json_safe,
    load_run_model,
    read_kernel_matrices,
    read_state,
    write_analysis,
    write_kernel_matrices,
)
from convemerge.train import TrainConfig, train


def _params(model):
    """The weight-layer weights (biases start at 0 and move even at lr 1e-30; BatchNorm statistics move)."""
    from convemerge.models import weight_layers

    return [layer.module.weight.detach().clone() for layer in weight_layers(model)]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))


def test_init_is_what_the_loop_starts_from(tmp_path):
    # an epoch at a learning rate far below float32 resolution leaves the weights where the loop built them
    cfg = TrainConfig(model="s-fc", alpha=2, dataset="digits", epochs=1, batch_size=256, lr=1e-30, momentum=0.0,
                      weight_decay=0.0, seed=5, num_threads=1, out=str(tmp_path / "run"))
    train(cfg, progress=False, verbose=False)
    last, init = load_run_model(cfg.out, "last"), load_run_model(cfg.out, "init")
    assert _same(init, last)
    # another seed gives other weights: the init really comes from the run's seed
    state = read_state(cfg.out, "last")
    other = init_model({**state["config"], "seed": 6}, state["geometry"], keep_rng=True)
    assert not _same(other, init)


def test_init_model_leaves_the_callers_generator_alone_when_asked():
    cfg, geo = {"model": "s-fc", "alpha": 2, "seed": 0}, {"image_size": 8, "in_chans": 1, "num_classes": 10}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    init_model(cfg, geo, keep_rng=True)
    assert torch.equal(torch.rand(3), expected)
    init_model(cfg, geo)  # the loop's way: the generator continues from where initialisation left it
    assert not torch.equal(torch.get_rng_state(), torch.manual_seed(123).get_state())


def test_load_run_model_refuses_unknown_which(tmp_path):
    with pytest.raises(ConfigError, match="best, last or init"):
        load_run_model(tmp_path, "first")
    with pytest.raises(ConfigError, match="not found"):
        read_state(tmp_path / "absent")


def test_one_set_of_final_statuses_for_runner_selection_and_report(tmp_path):
    from convemerge.experiments.runner import is_finished
    from convemerge.experiments.selection import candidates_by_arm
    from convemerge.report.records import _finished

    assert is_final("completed") and is_final("diverged") and is_final("skipped")
    assert not any(is_final(s) for s in ("failed", "running", "interrupted", "incomplete", None))
    assert RunStatus.FAILED.value in NOT_FINAL
    for status in RunStatus:
        run = tmp_path / status.value
        atomic_write_json(RunPaths(run).summary, {"status": status.value, "best_val_acc": 0.5,
                                                  "test_acc_at_best": 0.4})
        summary = json.loads(RunPaths(run).summary.read_text())
        job = {"kind": "train", "arm": "a", "dataset": "d", "seed": 0, "hparams": {}, "run_id": status.value}
        cand = candidates_by_arm([job], {status.value: summary})[("a", "d")][0]
        verdicts = {is_finished(run), _finished(summary), cand.val[0] is not None}
        assert verdicts == {is_final(status.value)}, status


def test_json_records_store_nan_as_null(tmp_path):
    record = {"loss": float("nan"), "acc": float("inf"), "n": torch.tensor(3), "shape": (1, 2), "ok": 0.5}
    assert json_safe(record) == {"loss": None, "acc": None, "n": 3, "shape": [1, 2], "ok": 0.5}
    path = tmp_path / "r.json"
    atomic_write_json(path, record)
    assert json.loads(path.read_text())["loss"] is None  # standard JSON: a strict parser reads it
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(TypeError, match="object"):
        json_safe({"x": object()})


def test_analysis_record_schema_is_enforced(tmp_path):
    with pytest.raises(ValueError, match="train_error"):
        write_analysis(tmp_path, {"checkpoint": "best", "epoch": 1})
    full = {"checkpoint": "best", "epoch": 1, "train_error": 0.1, "m": 10, "weights": {}, "nonzero": {},
            "mdl": {}, "seconds": 0.0}
    assert write_analysis(tmp_path, full) == RunPaths(tmp_path).analysis


def test_kernel_matrices_are_read_under_their_former_name_too(tmp_path):
    from safetensors.torch import save_file

    m = torch.eye(3)
    write_kernel_matrices(tmp_path / "new", {"M": m})
    assert torch.equal(read_kernel_matrices(tmp_path / "new")["M"], m)
    (tmp_path / "old").mkdir()
    save_file({"M": m}, str(tmp_path / "old" / "metrics.safetensors"))  # a kernel run made before the rename
    assert torch.equal(read_kernel_matrices(tmp_path / "old")["M"], m)
    assert read_kernel_matrices(tmp_path / "none") is None
