"""The `convrfm` recipe: expansion at every scale, the same labelled-image budget and the same test images for the
kernel machines and the trained CNN, the kernel job's outputs, and a tiny real run of the recipe through the
runner into the report section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from convemerge.errors import ConfigError
from convemerge.experiments import get_recipe, list_experiments
from convemerge.experiments.convrfm.jobs import kernel_arrays, kernel_job
from convemerge.experiments.convrfm import recipe as recipe_mod
from convemerge.experiments.reproduce import write_manifest
from convemerge.experiments.runner import run_jobs
from convemerge.runs import read_kernel_matrices
from convemerge.experiments.convrfm.kernel_fit import fit_and_evaluate, standardised_arrays
from convemerge.train.config import TrainConfig
from convemerge.train.setup import prepare_data

JOB = "convemerge.experiments.kernel_jobs:kernel_job"  # the name before the move: it stays in the run ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("scale", ["quick", "cpu", "paper"])
def test_expansion(scale, tmp_path):
    assert "convrfm" in list_experiments(scale)
    recipe = get_recipe("convrfm", scale)
    plan = recipe_mod.PLAN[scale]
    jobs = recipe.jobs(tmp_path)
    sizes = {n: sum(recipe_mod.train_size(d, scale) >= n for d in plan["datasets"]) for n in plan["ns"]}
    train = [j for j in jobs if j.kind == "train"]
    calls = [j for j in jobs if j.kind == "callable"]
    assert len(train) == sum(sizes.values()) * len(recipe.seeds)
    only = plan.get("method_datasets", {})
    expected = sum(recipe_mod.train_size(d, scale) >= n and d in only.get(m, plan["datasets"])
                   for m in recipe_mod.METHODS for n in plan["ns"] for d in plan["datasets"])
    variants = plan.get("variants", {})  # the metric-power sweep: extra ConvRFM settings on a few datasets
    expected += sum(recipe_mod.train_size(d, scale) >= n for v, (_, _, ds) in variants.items() for d in ds
                    for n in plan["ns"])
    assert len(calls) == len(recipe.seeds) * expected
    assert all(c.dataset in only.get(c.config["method"], plan["datasets"]) for c in calls
               if c.config.get("variant") is None)
    for c in calls:
        if c.config.get("variant") is not None:
            method, extra, ds = variants[c.config["variant"]]
            assert c.config["method"] == method and c.dataset in ds
            assert all(c.config["options"][k] == v for k, v in extra.items())
    if scale != "paper":  # every dataset at every n
        assert set(sizes.values()) == {len(plan["datasets"])}
    assert len({j.run_id for j in jobs}) == len(jobs)
    for j in train:
        cfg = TrainConfig.from_dict({**j.config, "out": j.out})
        assert cfg.model == "vanilla-cnn" and cfg.n_test == plan["n_test"]
        assert cfg.dataset_options == recipe_mod.DATASET_OPTIONS[scale].get(j.dataset, {})
    for c in calls:
        assert c.config["n_train"] <= recipe_mod.train_size(c.dataset, scale)
        assert c.target == JOB and c.config["method"] in recipe_mod.METHODS
        assert c.config["n_test"] == plan["n_test"] and c.config["options"]["validation_fraction"] == 0.2
        assert c.run_id.startswith(c.config["method"] + "-")


@pytest.mark.parametrize("dataset", ["mnist-5k", "noise-row"])
def test_cnn_and_kernels_share_the_budget_and_the_test_images(dataset):
    recipe = get_recipe("convrfm", "quick")
    n, n_test = recipe_mod.PLAN["quick"]["ns"][0], recipe_mod.PLAN["quick"]["n_test"]
    cnn = next(j for j in recipe.jobs("runs") if j.kind == "train" and j.dataset == dataset and j.seed == 1)
    data = prepare_data(TrainConfig.from_dict(dict(cnn.config)))
    assert len(data.train) + len(data.val) == n  # (1 − VAL)·n to train on, VAL·n to choose the epoch
    assert len(data.val) == round(recipe_mod.VAL * n)
    opts = recipe_mod.DATASET_OPTIONS["quick"].get(dataset)
    Xtr, ytr, Xte, yte = kernel_arrays(dataset, n, 1, n_test, dataset_options=opts)
    assert len(Xtr) == n and len(Xte) == min(n_test, 500)
    Xc, yc = standardised_arrays(data.test)
    torch.testing.assert_close(Xte, Xc)
    assert torch.equal(yte, yc)
    # the test images do not depend on the seed; the training images do
    Xtr0, _, Xte0, _ = kernel_arrays(dataset, n, 0, n_test, dataset_options=opts)
    assert torch.equal(Xte0, Xte) and not torch.equal(Xtr0, Xtr)
    # stratified: each class in proportion to its share of the whole train split
    from convemerge.data import load_dataset

    full = load_dataset(dataset, "train", **(opts or {})).labels
    expected = torch.bincount(full).double() * n / len(full)
    assert (torch.bincount(ytr, minlength=len(expected)).double() - expected).abs().max() < 1.0


def test_kernel_job_writes_what_fit_and_evaluate_gives(tmp_path):
    opts = {"n_iter": 1, "dtype": "float64", "validation_fraction": 0.25}
    kernel_job(str(tmp_path), method="rfm", dataset="noise-row", n_train=80, seed=3, n_test=120, options=opts,
               dataset_options={"noise-row": {"sigma": 3.0}, "mnist": {"ignored": 1}})
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "completed" and s["method"] == "rfm" and s["dataset_options"] == {"sigma": 3.0}
    assert s["n_train"] == 80 and s["n_test"] == 120 and s["image_shape"] == [1, 16, 32]
    Xtr, ytr, Xte, yte = kernel_arrays("noise-row", 80, 3, 120, dataset_options={"sigma": 3.0})
    _, ref = fit_and_evaluate("rfm", Xtr, ytr, Xte, yte, random_state=3, **opts)
    assert s["test_accuracy"] == ref["test_accuracy"] and s["best_iter"] == ref["best_iter"]
    assert read_kernel_matrices(tmp_path) is not None
    # the picture shows the chosen metric, or the last round's where validation kept M = I (saved beside it)
    assert s["eigenfilters"] == "eigenfilters.png" and (tmp_path / "eigenfilters.png").exists()
    assert s["eigenfilters_metric"] == ("M" if s["best_iter"] > 0 else "M_last") and s["eigenfilters_round"] >= 1
    assert s["eigenfilters_metric"] in read_kernel_matrices(tmp_path)
    # the data option reached the data: σ = 3 noise is not the default σ = 0.1 noise
    Xd, *_ = kernel_arrays("noise-row", 80, 3, 120)
    assert not torch.allclose(Xd, Xtr)


def test_kernel_job_refuses_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="method="):
        kernel_job(str(tmp_path / "a"), method="svm", dataset="noise-row", n_train=50)
    with pytest.raises(ConfigError, match="exceeds the 500 training images"):
        kernel_job(str(tmp_path / "b"), method="laplace", dataset="noise-row", n_train=501)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_train_config_n_test():
    with pytest.raises(ConfigError, match="n_test"):
        TrainConfig(n_test=0).validate()
    cfg = TrainConfig(model="vanilla-cnn", dataset="mnist-5k", n_train=50, n_test=30, seed=4)
    a = prepare_data(cfg)
    b = prepare_data(TrainConfig(model="vanilla-cnn", dataset="mnist-5k", n_train=50, n_test=30, seed=5))
    assert len(a.test) == 30 and torch.equal(a.test.images, b.test.images)
    full = prepare_data(TrainConfig(model="vanilla-cnn", dataset="mnist-5k", n_train=50, n_test=10**6))
    assert len(full.test) == 1000


# ----------------------------------------------------------------------------- a tiny real run
TINY = {
    "datasets": ("noise-row",), "ns": (40,), "n_test": 60,
    "kernel": {"dtype": "float32", "validation_fraction": recipe_mod.VAL},
    "methods": {"laplace": {}, "rfm": {"n_iter": 1}, "cntk": {"depth": 1},
                "convrfm": {"depth": 1, "n_iter": 1}, "deep-convrfm": {"depth": 2, "width": 4, "n_iter": 1}},
    "cnn": {"depth": 1, "width": 4, "epochs": 2, "lr": 5e-4, "batch_size": 16},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("convrfm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(recipe_mod.PLAN, "quick", TINY)
        recipe = get_recipe("convrfm", "quick").with_overrides(seeds=2)
    jobs = recipe.jobs(out)
    write_manifest(recipe, jobs, out, command="convemerge reproduce convrfm --scale quick")
    report = run_jobs(jobs, workers=1, threads=1, log=None)
    return out, jobs, report


def test_tiny_run_and_report_section(tiny_run):
    from convemerge.report.records import fmt_ms, load_runs
    from convemerge.report.section_convrfm import NAMES, convrfm_section, method_results

    out, jobs, report = tiny_run
    assert report.ok, report.failed
    assert len(jobs) == 2 * 6
    rec = load_runs(out)["convrfm"]
    res = method_results(rec)
    assert set(res) == {("noise-row", 40, m) for m in NAMES
                        if not m.startswith("convrfm-") and not m.endswith("-authors")}  # no sweep variants here
    rfm = [json.loads(Path(j.out, "summary.json").read_text())["test_accuracy"]
           for j in jobs if j.kind == "callable" and j.config["method"] == "rfm"]
    cnn = [json.loads(Path(j.out, "summary.json").read_text())["test_acc_at_best"] for j in jobs if j.kind == "train"]
    section = convrfm_section(rec)
    table = section.blocks[1]
    row = table.rows[0]
    assert row[:2] == ["noise-row", "40"]
    assert row[table.headers.index(NAMES["rfm"])] == fmt_ms(rfm)
    assert row[table.headers.index(NAMES["cnn"])] == fmt_ms(cnn)
    assert NAMES["convrfm-agop2"] not in table.headers  # sweep columns only where the sweep ran
    pngs = [b.png for b in section.blocks if hasattr(b, "png")]
    assert pngs and all(p.startswith(b"\x89PNG") for p in pngs)


def test_explicit_dataset_reaches_every_job(tmp_path):
    recipe = get_recipe("convrfm", "paper").with_overrides(datasets=("noise-row",), seeds=1)
    jobs = recipe.jobs(tmp_path)
    assert {j.dataset for j in jobs} == {"noise-row"}
    assert len(jobs) == len(recipe_mod.PLAN["paper"]["ns"]) * (1 + len(recipe_mod.METHODS))


def test_kernel_job_pictures_the_unused_metric_where_validation_kept_the_identity(tmp_path, monkeypatch):
    from convemerge.kernels import ConvRFMClassifier
    from convemerge.report.section_convrfm import _eigenfilters

    monkeypatch.setattr(ConvRFMClassifier, "_score", lambda self, rec: (-rec["iteration"],))  # keeps round 0
    kernel_job(str(tmp_path), method="convrfm", dataset="noise-row", n_train=60, seed=3, n_test=50,
               options={"n_iter": 1, "depth": 2, "dtype": "float64", "validation_fraction": 0.25})
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["best_iter"] == 0 and s["eigenfilters_metric"] == "M_last" and s["eigenfilters_round"] == 1
    tensors = read_kernel_matrices(tmp_path)
    torch.testing.assert_close(tensors["M"], torch.eye(9, dtype=tensors["M"].dtype))  # what was used
    assert not torch.allclose(tensors["M_last"], tensors["M"])  # what was learned
    entry = {"dir": tmp_path, "image_shape": s["image_shape"], "patch_size": 3, "metric_key": "M_last"}
    assert _eigenfilters(entry, "convrfm").startswith(b"\x89PNG")
