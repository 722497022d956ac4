"""End to end with real training: a micro recipe (1 epoch, a few hundred images) -> runs -> analysis -> report,
resume of an interrupted run, sparse export of a trained net, and the CLI commands over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from convemerge.experiments import Arm, CallableSpec, Recipe
from convemerge.experiments.reproduce import write_manifest
from convemerge.experiments.runner import is_finished, run_jobs

pytest.importorskip("convemerge.train")
pytest.importorskip("convemerge.models")


def micro_recipe(name: str = "fig4") -> Recipe:
    base = {"n_train": 300, "val_fraction": 0.2, "batch_size": 64, "lr": 0.1, "device": "cpu", "epochs": 1}
    arms = (
        Arm("s-fc/sgd", model="s-fc", optimizer="sgd", alpha=1, fixed={"momentum": 0.9},
            grid={"weight_decay": (0.0, 5e-4)}, tags={"panel": "S-FC, SGD"}),
        Arm("s-fc/beta-lasso", model="s-fc", optimizer="beta-lasso", alpha=1,
            fixed={"beta": 50.0, "lam_first": 5e-4, "lam": 1e-4}, tags={"panel": "S-FC, β-LASSO"}),
    )
    counts = CallableSpec("reference-counts", "convemerge.experiments.postprocess:architecture_counts",
                          kwargs={"models": ["s-fc", "s-conv", "s-local"], "alpha": 1}, per_seed=False)
    return Recipe(name=name, scale="quick", datasets=("mnist-5k",), arms=arms, seeds=(0,), epochs=1, base=base,
                  callables=(counts,), notes={"min_nonzero": 20, "units": 16, "window": 9})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro")
    recipe = micro_recipe()
    jobs = recipe.jobs(out)
    write_manifest(recipe, jobs, out, command="convemerge reproduce micro --scale quick")
    report = run_jobs(jobs, workers=1, threads=1, command="convemerge reproduce micro", log=None)
    return out, recipe, jobs, report


def test_micro_recipe_trains_and_analyses(trained):
    out, _, jobs, report = trained
    assert report.ok, report.failed
    assert len(report.ran) == len(jobs) == 4
    for job in jobs:
        assert is_finished(job.out)
        if job.kind != "train":
            continue
        summary = json.loads(Path(job.out, "summary.json").read_text())
        assert summary["status"] == "completed" and summary["command"] == "convemerge reproduce micro"
        assert 0.0 <= summary["best_val_acc"] <= 1.0
        a = json.loads(Path(job.out, "analysis.json").read_text())
        assert a["m"] == 300  # the subsample the run trained on
        assert 0.0 <= a["train_error"] <= 1.0
        assert a["mdl"]["n"] == sum(a["weights"].values()) == 784 * 196 + 196 * 24 + 24 * 10
        assert a["locality"]["units"] == 196
        assert Path(job.out, "filters.safetensors").exists()
    lasso = next(j for j in jobs if j.arm == "s-fc/beta-lasso")
    a = json.loads(Path(lasso.out, "analysis.json").read_text())
    assert a["nonzero"]["layer1"] < a["weights"]["layer1"]  # β-LASSO zeroed first-layer weights


def test_rerun_skips_and_interrupted_run_resumes(trained):
    out, _, jobs, _ = trained
    again = run_jobs(jobs, log=None)
    assert again.ran == [] and len(again.skipped) == len(jobs)
    job = next(j for j in jobs if j.kind == "train")
    before = json.loads(Path(job.out, "summary.json").read_text())
    Path(job.out, "summary.json").unlink()  # as if killed before the summary was written
    rep = run_jobs([job], log=None)
    assert rep.ran == [job.run_id] and rep.ok
    after = json.loads(Path(job.out, "summary.json").read_text())
    assert after["best_val_acc"] == before["best_val_acc"]  # resumed from its checkpoint, not retrained


def test_report_from_real_runs(trained):
    from convemerge.report import build_report

    out, _, jobs, _ = trained
    files = build_report(out)
    html = files.html.read_text()
    assert "section failed" not in html and html.count("data:image/png;base64,") >= 1
    md = files.markdown.read_text()
    assert "S-FC, β-LASSO" in md and jobs[0].run_id in md


def test_sparse_export_of_a_trained_run(trained, tmp_path):
    from convemerge.train import load_run_model
    from convemerge.train.export import SparseLinear, export_sparse, load_sparse

    _, _, jobs, _ = trained
    run = next(j for j in jobs if j.arm == "s-fc/beta-lasso").out
    path = export_sparse(run, tmp_path / "net")
    dense, sparse = load_run_model(run), load_sparse(path, max_density=1.0)
    assert any(isinstance(m, SparseLinear) for m in sparse.modules())
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(dense(x), sparse(x), atol=1e-5, rtol=1e-4)


def test_cli_report_export_and_list(trained, tmp_path):
    from typer.testing import CliRunner

    from convemerge.cli import app

    out, _, jobs, _ = trained
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "report.html").exists() and "report:" in res.output
    run = next(j for j in jobs if j.arm == "s-fc/beta-lasso").out
    res = runner.invoke(app, ["export", run, "--sparse", "--out", str(tmp_path / "exp" / "net")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "exp" / "net.safetensors").exists() and (tmp_path / "exp" / "net.json").exists()
    res = runner.invoke(app, ["export", run])
    assert res.exit_code != 0 and "--sparse" in res.output
    res = runner.invoke(app, ["reproduce", "table2", "--scale", "quick", "--list", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0 and res.output.count("table2\t") == 28
    assert not (tmp_path / "r").exists()  # --list runs nothing


def test_cli_errors_are_one_line(tmp_path):
    from convemerge.cli import main

    assert main(["reproduce", "table9", "--scale", "quick", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "table1", "--scale", "huge", "--out", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_reproduce_data_dir_reaches_the_jobs(tmp_path, monkeypatch):
    import os

    from convemerge.cli import main

    monkeypatch.setenv("CONVEMERGE_DATA", "elsewhere")  # restored after the test
    assert main(["reproduce", "table2", "--scale", "quick", "--data-dir", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "r")]) == 2
    assert main(["reproduce", "table2", "--scale", "quick", "--data-dir", str(tmp_path), "--list",
                 "--out", str(tmp_path / "r")]) == 0
    assert os.environ["CONVEMERGE_DATA"] == str(tmp_path.resolve())


def test_failed_job_is_reported(tmp_path):
    bad = Recipe(name="bad", scale="quick", datasets=("mnist-5k",), seeds=(0,), epochs=1,
                 arms=(Arm("x", model="s-fc", optimizer="sgd", alpha=1,
                           fixed={"n_train": 10**6, "device": "cpu"}),))  # more samples than exist
    jobs = bad.jobs(tmp_path)
    rep = run_jobs(jobs, log=None)
    assert len(rep.failed) == 1 and "n_train" in rep.failed[jobs[0].run_id]
    assert "n_train" in Path(jobs[0].out, "error.txt").read_text() and not is_finished(jobs[0].out)


@pytest.mark.slow
def test_ray_local_cluster(tmp_path):
    """The same recipe as Ray tasks on a local Ray instance (needs the optional `ray` extra)."""
    pytest.importorskip("ray")
    recipe = Recipe(name="ray", scale="quick", datasets=("mnist-5k", "digits"), seeds=(0,), epochs=1,
                    base=micro_recipe().base, arms=(micro_recipe().arms[1],), callables=micro_recipe().callables)
    jobs = recipe.jobs(tmp_path)
    rep = run_jobs(jobs, workers=2, threads=1, ray_address="local", log=None)
    assert rep.ok, rep.failed
    assert sorted(rep.ran) == sorted(j.run_id for j in jobs) and len(jobs) == 4
    assert all(is_finished(j.out) for j in jobs)
    assert all(Path(j.out, "analysis.json").exists() for j in jobs if j.kind == "train")
