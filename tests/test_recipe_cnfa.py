"""The `cnfa` recipe: its expansion (analysis jobs after their training runs, train-split images, Fig. 4's S-FC runs
shared at quick scale), the runner's dependency waves, the report section on fabricated records, and a tiny real
recipe end to end (train -> CNFA job -> report)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from convemerge.errors import ConfigError
from convemerge.experiments import Arm, CallableSpec, Job, Recipe, get_recipe, list_experiments
from convemerge.experiments.cnfa.recipe import AUTHORS_ARM, CONTROL_ARM, CONV_ARMS, SFC_ARMS
from convemerge.experiments.reproduce import write_manifest
from convemerge.experiments.runner import is_finished, run_jobs

JOB = "convemerge.experiments.cnfa_jobs:cnfa_job"  # the name before the move: it stays in the run ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- expansion
# runs per seed: authors' arm on every dataset, the control on CIFAR-10 (quick: mnist-5k), S-FC × 2 on the
# single-channel datasets
@pytest.mark.parametrize("scale,n_runs,n_seeds", [("quick", 4, 2), ("cpu", 3 + 1 + 4, 3), ("paper", 3 + 1 + 4, 3)])
def test_expansion_pairs_every_run_with_one_analysis(scale, n_runs, n_seeds, tmp_path):
    from convemerge.train.config import TrainConfig

    assert "cnfa" in list_experiments(scale)
    recipe = get_recipe("cnfa", scale)
    jobs = recipe.jobs(tmp_path)
    train = {j.run_id: j for j in jobs if j.kind == "train"}
    calls = [j for j in jobs if j.kind == "callable"]
    assert len(train) == len(calls) == n_runs * n_seeds
    for j in train.values():
        TrainConfig.from_dict({**j.config, "out": j.out})
        if j.arm in CONV_ARMS:  # the authors' verification net and training, at the scale's width and budget
            c, opts = j.config, j.config["model_options"]
            assert c["model"] == "vanilla-cnn" and c["optimizer"] == "adam" and c["schedule"] == "constant"
            assert c["lr"] == 1e-3 and c["n_train"] == 2000 and c["batch_size"] == 128 and c["augment"] is False
            assert c["stop_train_loss"] == 1e-5 and c["val_fraction"] == 0.0 and c["weight_decay"] == 0.0
            assert opts["kernel_size"] == 3 and opts["bias"] is False
            assert opts.get("init_std") == (0.005 if j.arm == AUTHORS_ARM else None)
            if scale != "quick":
                assert opts["depth"] == 4
            if scale == "paper":
                assert opts["width"] == 64 and c["epochs"] == 1000
        else:
            assert j.config["model"] == "s-fc" and j.arm in SFC_ARMS
    for c in calls:
        run = train[c.config["run"]]
        assert c.after == (run.run_id,) and c.target == JOB
        assert (c.dataset, c.seed) == (run.dataset, run.seed) == (c.config["dataset"], c.config["seed"])
        assert c.config["split"] == "train" and c.arm == ("cnfa" if run.arm in CONV_ARMS else "nfa-sfc")
        if run.arm in CONV_ARMS and scale != "quick":  # the AGOP over every training image
            assert c.config["images"] == run.config["n_train"] == 2000
        assert Path(c.out).parent == Path(run.out).parent  # siblings: the job finds its run next to it
        assert Job.from_dict(c.to_dict()) == c
    assert len({c.run_id for c in calls}) == len(calls)
    if scale != "quick":
        datasets = {a: {j.dataset for j in train.values() if j.arm == a} for a in (AUTHORS_ARM, CONTROL_ARM)}
        assert datasets == {AUTHORS_ARM: {"cifar10", "mnist", "fashion-mnist"}, CONTROL_ARM: {"cifar10"}}


def test_quick_scale_shares_fig4s_sfc_runs_and_overrides_follow(tmp_path):
    cnfa = get_recipe("cnfa", "quick")
    fig4 = {j.run_id for j in get_recipe("fig4", "quick").jobs(tmp_path)}
    sfc = [j for j in cnfa.jobs(tmp_path) if j.kind == "train" and j.arm in SFC_ARMS]
    assert sfc and all(j.run_id in fig4 for j in sfc)
    # --seeds and --dataset: the analyses follow the runs
    small = cnfa.with_overrides(seeds=1, datasets=("digits",)).jobs(tmp_path)
    assert {(j.kind, j.dataset, j.seed) for j in small} == {("train", "digits", 0), ("callable", "digits", 0)}
    assert len(small) == 8  # 4 arms, one run and one analysis each


def test_per_run_must_name_an_arm():
    with pytest.raises(ConfigError, match="per_run"):
        Recipe(name="x", scale="quick", datasets=("d",), arms=(Arm("a", model="s-fc", optimizer="sgd"),),
               callables=(CallableSpec("c", JOB, per_run=("b",)),))


# ----------------------------------------------------------------------------- runner waves
def slow_run(out: str, **_) -> None:
    time.sleep(0.4)
    Path(out, "summary.json").write_text(json.dumps({"status": "completed", "done_at": time.time()}))


def needs_run(out: str, dep: str, **_) -> None:
    dep_summary = Path(out).parent / dep / "summary.json"
    Path(out, "summary.json").write_text(json.dumps({"status": "completed", "dep_done": dep_summary.exists(),
                                                     "started_at": time.time()}))


def boom(out: str, **_) -> None:
    raise ValueError("boom")


def _job(root: Path, rid: str, target: str, after: tuple[str, ...] = (), **config) -> Job:
    return Job("callable", "waves", rid, None, 0, {}, config, rid, str(root / "waves" / rid),
               target=f"test_recipe_cnfa:{target}", after=after)


@pytest.mark.parametrize("workers", [1, 2])
def test_runner_starts_a_job_after_its_dependencies(tmp_path, workers):
    jobs = [_job(tmp_path, "b", "needs_run", after=("a",), dep="a"), _job(tmp_path, "a", "slow_run"),
            _job(tmp_path, "c", "needs_run", after=("x",), dep="x"), _job(tmp_path, "x", "boom")]
    rep = run_jobs(jobs, workers=workers, log=None)
    assert sorted(rep.ran) == ["a", "b"] and set(rep.failed) == {"c", "x"}
    b = json.loads(Path(jobs[0].out, "summary.json").read_text())
    a = json.loads(Path(jobs[1].out, "summary.json").read_text())
    assert b["dep_done"] and b["started_at"] >= a["done_at"]
    assert "DependencyError" in rep.failed["c"] and not Path(jobs[2].out, "summary.json").exists()
    assert "needs run x" in Path(jobs[2].out, "error.txt").read_text()
    again = run_jobs(jobs[:2], workers=workers, log=None)  # finished: skipped, dependency or not
    assert sorted(again.skipped) == ["a", "b"]


def test_a_run_shared_with_another_experiment_is_linked_before_its_analysis(tmp_path):
    def job(exp, rid, target, after=(), **config):
        return Job("callable", exp, rid, None, 0, {}, config, rid, str(tmp_path / exp / rid),
                   target=f"test_recipe_cnfa:{target}", after=after)

    # "run" is listed by two experiments (run once, under fig4); cnfa's analysis reads it from cnfa/run
    jobs = [job("fig4", "run", "slow_run"), job("cnfa", "run", "slow_run"),
            job("cnfa", "ana", "needs_run", after=("run",), dep="run")]
    rep = run_jobs(jobs, log=None)
    assert sorted(rep.ran) == ["ana", "run"] and rep.linked == ["cnfa/run"]
    assert Path(tmp_path, "cnfa", "run").is_symlink()
    assert json.loads(Path(tmp_path, "cnfa", "ana", "summary.json").read_text())["dep_done"]


# ----------------------------------------------------------------------------- report section, fabricated
def _fake_table(p1: float, p2: float, init: float) -> list[dict]:
    def row(layer, kind, d, p, skipped=None):
        keys = ("pearson", "cosine", "agop_w0_pearson", "agop_w0_cosine", "w0_pearson", "w0_cosine", "init_pearson",
                "init_cosine", "delta_pearson", "delta_cosine", "moved")
        vals = dict.fromkeys(keys)
        if not skipped:
            vals.update(pearson=p, cosine=p + 0.01, agop_w0_pearson=p - 0.3, agop_w0_cosine=0.2, w0_pearson=0.5,
                        w0_cosine=0.6, init_pearson=init, init_cosine=init, delta_pearson=p - 0.1,
                        delta_cosine=0.3, moved=1.5)
        return {"layer": layer, "kind": kind, "in_dim": d, "out_dim": 64, "n_images": 100, "power": 1.0, **vals,
                "skipped": skipped}

    return [row("layer1", "conv", 9, p1), row("layer2", "conv", 576, p2),
            row("layer3", "linear", 50176, None, "input dimension 50176 > max_dim 8192")]


def test_report_section_on_fabricated_records(tmp_path):
    from convemerge.report import build_report

    recipe = get_recipe("cnfa", "quick")
    jobs = recipe.jobs(tmp_path)
    write_manifest(recipe, jobs, tmp_path, command="convemerge reproduce cnfa --scale quick")
    values = {0: (0.9, 0.6), 1: (0.7, 0.4)}
    for j in jobs:
        Path(j.out).mkdir(parents=True)
        if j.kind == "train":
            summary = {"status": "completed", "best_val_acc": None, "final": {"train_acc": 1.0, "train_loss": 9e-6}}
        elif j.arm == "cnfa":
            p1, p2 = values[j.seed]
            summary = {"status": "completed", "run": j.config["run"], "table": _fake_table(p1, p2, 0.5),
                       "tables_by_power": {"0.5": _fake_table(p1 + 0.05, p2 + 0.05, 0.6)},
                       "convergence": [{"n": n, "layer": "layer1", "pearson": p1, "pearson_vs_all": 1.0}
                                       for n in (10, 20, 100)],
                       "source": {"checkpoint": "last"},
                       "train": {"final_train_acc": 1.0, "final_train_loss": 9e-6, "final_test_acc": 0.4,
                                 "epochs_done": 30 + j.seed, "stopped_early": "train_loss 9e-06 < 1e-05",
                                 "best_val_acc": None, "test_acc_at_best": None, "best_epoch": None}}
        elif j.seed == 0:  # S-FC analyses: one diverged run, not analysed
            summary = {"status": "skipped", "run": j.config["run"], "reason": "training run status is 'diverged'"}
        else:
            continue  # unfinished
        Path(j.out, "summary.json").write_text(json.dumps(summary))
    files = build_report(tmp_path)
    md = files.markdown.read_text()
    section = md[md.index("## Convolutional neural feature ansatz"):]
    assert "6/8 analyses finished" in section and "diverged" in section
    # claim, AGOP_T vs W₀ᵀW₀, their difference, W₀ᵀW₀ vs W_TᵀW_T, ‖ΔW‖/‖W₀‖, at init, centred, three cosines
    assert ("| layer1 | conv | 9 | 0.800 ± 0.141 | 0.500 ± 0.141 | 0.300 ± 0.000 | 0.500 ± 0.000 | 1.500 ± 0.000 "
            "| 0.500 ± 0.000 | 0.700 ± 0.141 | 0.810 ± 0.141 | 0.200 ± 0.000 | 0.300 ± 0.000 |") in section
    assert "| layer2 | conv | 576 | 0.500 ± 0.141 |" in section
    assert "skipped: input dimension 50176" in section
    assert "| layer1 | 0.850 ± 0.141 | 0.550 ± 0.141 | 0.300 ± 0.000 |" in section  # the AGOP^0.5 table
    assert "30.5 ± 0.7 (2/2 stopped on the loss)" in section and "9.0e-06, 9.0e-06" in section
    for arm in ("authors-init", "default-init"):
        assert f"cnfa-mnist-5k-vanilla-cnn-{arm}-bars.png" in section
        assert f"cnfa-mnist-5k-vanilla-cnn-{arm}-convergence.png" in section
        assert (files.figures / f"cnfa-mnist-5k-vanilla-cnn-{arm}-bars.png").stat().st_size > 1000
    assert "Building this section failed" not in md


# ----------------------------------------------------------------------------- tiny real recipe
def test_tiny_recipe_trains_analyses_and_reports(tmp_path):
    from convemerge.report import build_report

    base = {"n_train": 200, "val_fraction": 0.1, "batch_size": 50, "device": "cpu", "epochs": 1}
    arms = (Arm("conv", model="vanilla-cnn", optimizer="adam",
                fixed={"model_options": {"depth": 2, "width": 16}, "lr": 3e-3}, tags={"part": "cnfa"}),
            Arm("sfc", model="s-fc", optimizer="beta-lasso", alpha=1, fixed={"lr": 0.05, "lam_first": 1e-4},
                tags={"part": "sfc"}))
    kwargs = {"images": 24, "split": "train", "extra_powers": [0.5]}
    recipe = Recipe(name="cnfa", scale="quick", datasets=("mnist-5k",), arms=arms, seeds=(0,), epochs=1, base=base,
                    callables=(CallableSpec("cnfa", JOB, kwargs=kwargs, per_run=("conv",)),
                               CallableSpec("nfa-sfc", JOB, kwargs=kwargs, per_run=("sfc",))))
    jobs = recipe.jobs(tmp_path)
    write_manifest(recipe, jobs, tmp_path, command="convemerge reproduce cnfa --scale quick")
    rep = run_jobs(list(reversed(jobs)), workers=1, threads=1, log=None)  # analyses listed first: waves sort it
    assert rep.ok, rep.failed
    assert all(is_finished(j.out) for j in jobs)
    conv_job = next(j for j in jobs if j.arm == "cnfa")
    summary = json.loads(Path(conv_job.out, "summary.json").read_text())
    rows = {r["layer"]: r for r in summary["table"]}
    assert summary["source"]["images"] == 24 and summary["source"]["split"] == "train"
    assert rows["layer1"]["init_pearson"] is not None and rows["layer3"]["skipped"]
    assert summary["tables_by_power"]["0.5"][0]["power"] == 0.5
    assert summary["train"]["best_val_acc"] is not None
    assert Path(conv_job.out, "filters", "layer1.png").is_file()
    sfc = json.loads(Path(next(j for j in jobs if j.arm == "nfa-sfc").out, "summary.json").read_text())
    assert [r["layer"] for r in sfc["table"]] == ["layer1", "layer2", "layer3"]
    assert sfc["table"][2]["pearson"] == pytest.approx(1.0, abs=1e-6)  # the readout: exact by construction
    md = build_report(tmp_path).markdown.read_text()
    assert "NFA of S-FC, SGD vs β-LASSO" in md and "filters-layer1-png.png" in md
