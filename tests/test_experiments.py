"""Recipes, registry, grid expansion, run ids, model selection and the runner (with callable jobs: no training)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from convemerge.errors import ConfigError
from convemerge.experiments import Arm, CallableSpec, Recipe, get_recipe, list_experiments, run_id
from convemerge.experiments.recipe import grid_points
from convemerge.experiments.registry import DEFAULT_SCALES, SCALES, expand_experiments
from convemerge.experiments.runner import is_finished, run_jobs
from convemerge.experiments.selection import candidates_by_arm, mean_std, select, select_all

PAPER_EXPERIMENTS = ("table1", "table2", "fig2", "fig3", "fig4", "fig5")


# ----------------------------------------------------------------------------- callables used as jobs
def fake_job(out: str, score: float = 0.5, fail: bool = False, seed: int = 0, dataset: str = "x") -> None:
    """A stand-in for a training run: writes summary.json (and which process ran it)."""
    if fail:
        raise ValueError("asked to fail")
    Path(out, "summary.json").write_text(json.dumps(
        {"status": "finished", "best_val_acc": score + 0.01 * seed, "test_acc_at_best": score, "pid": os.getpid()}))


def silent_job(out: str, **_: object) -> None:
    """Returns without writing a summary: the runner must call that a failure."""


# ----------------------------------------------------------------------------- run ids and grids
def test_run_id_stable_and_ignores_execution_fields():
    cfg = {"model": "s-fc", "optimizer": "sgd", "dataset": "mnist", "seed": 1, "lr": 0.1, "model_options": {"a": 1}}
    rid = run_id(cfg)
    assert rid == run_id(dict(reversed(list(cfg.items()))))  # key order does not matter
    assert rid == run_id({**cfg, "device": "cuda", "num_threads": 4, "out": "elsewhere", "data_dir": "d"})
    assert rid != run_id({**cfg, "seed": 2}) and rid != run_id({**cfg, "lr": 0.01})
    assert rid.startswith("s-fc-sgd-mnist-s1-") and len(rid.rsplit("-", 1)[1]) == 10
    assert rid == "s-fc-sgd-mnist-s1-" + rid.rsplit("-", 1)[1]
    # a hash over a canonical JSON form: recompute independently
    import hashlib

    payload = json.dumps({"kind": "train", "target": None, "config": cfg}, sort_keys=True)
    assert rid.endswith(hashlib.sha256(payload.encode()).hexdigest()[:10])


def test_grid_points_product_and_bundles():
    pts = grid_points({"momentum": (0.0, 0.9), "weight_decay": (0.0, 1e-4, 5e-4)})
    assert len(pts) == 6 and pts[0] == {"momentum": 0.0, "weight_decay": 0.0}
    assert pts[1] == {"momentum": 0.0, "weight_decay": 1e-4}  # last axis varies fastest
    pts = grid_points({"variant": ({"beta": 0.0, "lam": 0.0}, {"beta": 50.0, "lam": 1e-5})})
    assert pts == [{"beta": 0.0, "lam": 0.0}, {"beta": 50.0, "lam": 1e-5}]
    assert grid_points({}) == [{}]
    with pytest.raises(ConfigError):
        grid_points({"lam": ()})


def _recipe(**kw) -> Recipe:
    arms = (Arm("a/sgd", model="s-fc", optimizer="sgd", alpha=2, grid={"weight_decay": (0.0, 5e-4)}),
            Arm("b/bl", model="s-fc", optimizer="beta-lasso", alpha=2, fixed={"beta": 50.0},
                grid={"lam_first": (1e-4, 5e-4), "lam": (1e-5,)}))
    return Recipe(**{"name": "demo", "scale": "quick", "datasets": ("mnist-5k",), "arms": arms, "seeds": (0, 1),
                     "epochs": 2, "base": {"batch_size": 64}} | kw)


def test_recipe_expansion(tmp_path):
    jobs = _recipe().jobs(tmp_path)
    assert len(jobs) == (2 + 2) * 2
    assert len({j.run_id for j in jobs}) == len(jobs)
    j = jobs[-1]
    assert j.config == {"batch_size": 64, "model": "s-fc", "optimizer": "beta-lasso", "dataset": "mnist-5k",
                        "epochs": 2, "alpha": 2, "beta": 50.0, "lam_first": 5e-4, "lam": 1e-5, "seed": 1}
    assert j.hparams == {"lam_first": 5e-4, "lam": 1e-5}
    assert Path(j.out) == tmp_path / "demo" / j.run_id
    # identical configs in two arms: listed under both, one run id and directory each
    dup = _recipe(arms=(Arm("x", "s-fc", "sgd"), Arm("y", "s-fc", "sgd"))).jobs(tmp_path)
    assert len(dup) == 4 and len({j.run_id for j in dup}) == 2 and len({j.out for j in dup}) == 2
    r = _recipe().with_overrides(seeds=3, datasets=("digits",))
    assert r.seeds == (0, 1, 2) and {j.dataset for j in r.jobs(tmp_path)} == {"digits"}
    with pytest.raises(ConfigError):
        _recipe(arms=(Arm("x", "s-fc", "sgd"), Arm("x", "s-conv", "sgd")))


def test_recipe_dataset_base_sits_between_base_and_the_arm(tmp_path):
    arms = (Arm("a", "s-fc", "sgd"), Arm("b", "s-fc", "sgd", fixed={"lr": 0.01}, per_dataset={"digits": {"lr": 0.5}}))
    r = _recipe(arms=arms, datasets=("mnist-5k", "digits"), seeds=(0,),
                base={"batch_size": 64, "lr": 0.1}, dataset_base={"digits": {"lr": 0.2, "augment": True}})
    cfg = {(j.arm, j.dataset): j.config for j in r.jobs(tmp_path)}
    assert cfg["a", "mnist-5k"]["lr"] == 0.1 and "augment" not in cfg["a", "mnist-5k"]
    assert cfg["a", "digits"]["lr"] == 0.2 and cfg["a", "digits"]["augment"] is True
    assert cfg["b", "mnist-5k"]["lr"] == 0.01 and cfg["b", "digits"]["lr"] == 0.5  # the arm's own fields win
    assert r.to_dict()["dataset_base"] == {"digits": {"lr": 0.2, "augment": True}}
    assert "dataset_base" not in _recipe().to_dict()  # manifests of recipes without it are unchanged
    # an empty dataset_base leaves every run id as it was
    assert [j.run_id for j in _recipe(dataset_base={}).jobs(tmp_path)] == [j.run_id for j in _recipe().jobs(tmp_path)]


def test_registry_lists_paper_experiments():
    for scale in DEFAULT_SCALES:
        assert set(PAPER_EXPERIMENTS) <= set(list_experiments(scale))
    # the seed scale (the student reproduction's setting) has Table 2 and the figures drawn from its runs only
    assert list_experiments("seed") == ["table2", "fig3", "fig4"] and "seed" in SCALES
    assert expand_experiments("all", "quick")[:6] == list(PAPER_EXPERIMENTS)
    with pytest.raises(ConfigError, match="no experiment"):
        get_recipe("table9", "quick")
    with pytest.raises(ConfigError, match="unknown scale"):
        get_recipe("table1", "huge")


@pytest.mark.parametrize("scale", SCALES)
def test_every_recipe_gives_valid_train_configs(scale, tmp_path):
    TrainConfig = pytest.importorskip("convemerge.train.config").TrainConfig
    for name in list_experiments(scale):
        recipe = get_recipe(name, scale)
        jobs = recipe.jobs(tmp_path)
        assert jobs, name
        for job in jobs:
            if job.kind == "train":
                TrainConfig.from_dict({**job.config, "out": job.out})  # unknown fields or bad values raise


def test_paper_scale_grids_are_the_papers():
    t2 = get_recipe("table2", "paper")
    lasso = t2.arm("s-fc/beta-lasso-b50")
    assert lasso.alpha == 150 and t2.epochs == 4000
    assert tuple(lasso.grid["lam_first"]) == (1e-6, 2e-6, 5e-6, 1e-5, 2e-5) == tuple(lasso.grid["lam"])
    sgd = t2.arm("s-fc/sgd")
    assert tuple(sgd.grid["momentum"]) == (0.0, 0.9)
    assert tuple(sgd.grid["weight_decay"]) == (0.0, 1e-4, 2e-4, 5e-4, 1e-3)
    t1 = get_recipe("table1", "paper")
    assert {a.tags["epochs"] for a in t1.arms} == {400, 4000}
    assert t1.arm("d-conv/sgd@400").alpha == 15 and t1.datasets == ("cifar10", "cifar100", "svhn")
    assert all(j.config["batch_size"] == 512 for j in t1.jobs("r")[:5])


def test_paper_scale_trains_cifar_with_fast_autoaugment(tmp_path):
    """The paper trains every CIFAR model with Fast AutoAugment; SVHN keeps its default; no other scale changes."""
    for name in PAPER_EXPERIMENTS:
        trains = [j for j in get_recipe(name, "paper").jobs(tmp_path) if j.kind == "train"]
        assert trains, name
        for j in trains:
            want = "fast-autoaugment" if j.dataset in ("cifar10", "cifar100") else None
            assert j.config.get("augment_policy") == want, (name, j.arm, j.dataset)
    assert any(j.dataset == "svhn" for j in get_recipe("table2", "paper").jobs(tmp_path))
    for scale in ("quick", "cpu", "seed"):
        for name in list_experiments(scale):
            recipe = get_recipe(name, scale)
            assert not recipe.dataset_base, (name, scale)
            assert all("augment_policy" not in j.config for j in recipe.jobs(tmp_path)), (name, scale)


# ----------------------------------------------------------------------------- selection
def test_mean_std():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5), 2)
    assert mean_std([0.5, None]) == (0.5, None, 1)
    assert mean_std([]) == (None, None, 0)


def _jobs(grid_vals, seeds=(0, 1, 2)):
    return [{"kind": "train", "arm": "a", "dataset": "d", "seed": s, "hparams": {"wd": w}, "run_id": f"w{w}-s{s}"}
            for w in grid_vals for s in seeds]


def test_selection_on_mean_validation_never_test():
    jobs = _jobs([0, 1, 2])
    val = {0: [0.90, 0.91, 0.92], 1: [0.95, 0.80, 0.96], 2: [0.93, 0.93, 0.93]}  # means .91, .9033, .93
    test = {0: [0.99, 0.99, 0.99], 1: [0.5, 0.5, 0.5], 2: [0.80, 0.82, 0.84]}
    summaries = {f"w{w}-s{s}": {"status": "finished", "best_val_acc": val[w][s], "test_acc_at_best": test[w][s]}
                 for w in val for s in range(3)}
    sel = select_all(jobs, summaries)[("a", "d")]
    assert sel.chosen.hparams == {"wd": 2}  # best mean validation, not best single seed (1) nor best test (0)
    m, s, n = sel.test
    assert (m, n) == (pytest.approx(0.82), 3) and s == pytest.approx(0.02)
    assert sel.chosen.run_ids == ["w2-s0", "w2-s1", "w2-s2"]


def test_selection_prefers_complete_and_breaks_ties_by_grid_order():
    jobs = _jobs([0, 1, 2])
    summaries = {f"w0-s{s}": {"status": "finished", "best_val_acc": 0.9, "test_acc_at_best": 0.8} for s in range(3)}
    summaries |= {f"w1-s{s}": {"status": "finished", "best_val_acc": 0.9, "test_acc_at_best": 0.7} for s in range(3)}
    summaries["w2-s0"] = {"status": "finished", "best_val_acc": 0.99, "test_acc_at_best": 0.9}  # 1 of 3 seeds
    summaries["w2-s1"] = {"status": "incomplete", "best_val_acc": 0.99, "test_acc_at_best": 0.9}
    cands = candidates_by_arm(jobs, summaries)[("a", "d")]
    assert [c.complete for c in cands] == [True, True, False] and cands[2].finished == 1
    assert select(cands).hparams == {"wd": 0}
    assert select(candidates_by_arm(jobs, {})[("a", "d")]) is None


# ----------------------------------------------------------------------------- runner
def _callable_recipe(name="cj", **kwargs) -> Recipe:
    specs = (CallableSpec("ok", "test_experiments:fake_job", kwargs={"score": 0.7, **kwargs}),)
    return Recipe(name=name, scale="quick", datasets=("x",), arms=(), seeds=(0, 1, 2), callables=specs)


def test_runner_parallel_skip_and_link(tmp_path):
    jobs = _callable_recipe().jobs(tmp_path)
    assert [j.kind for j in jobs] == ["callable"] * 3
    rep = run_jobs(jobs, workers=2, log=None)
    assert rep.ok and sorted(rep.ran) == sorted(j.run_id for j in jobs)
    assert all(is_finished(j.out) for j in jobs)
    pids = {json.loads(Path(j.out, "summary.json").read_text())["pid"] for j in jobs}
    assert os.getpid() not in pids  # ran in worker processes
    again = run_jobs(jobs, workers=2, log=None)
    assert again.ran == [] and sorted(again.skipped) == sorted(j.run_id for j in jobs)
    # the same jobs under another experiment name: linked to the finished runs, not re-run
    twin = _callable_recipe(name="cj2").jobs(tmp_path)
    assert [j.run_id for j in twin] == [j.run_id for j in jobs]
    rep = run_jobs(twin, log=None)
    assert rep.ran == [] and len(rep.linked) == 3
    assert Path(twin[0].out).is_symlink() and is_finished(twin[0].out)


def test_runner_records_failures_and_goes_on(tmp_path):
    bad = _callable_recipe(fail=True).jobs(tmp_path)[:1]
    good = _callable_recipe(name="g").jobs(tmp_path / "g")[:1]
    silent = Recipe(name="s", scale="quick", datasets=("x",), arms=(), seeds=(0,),
                    callables=(CallableSpec("s", "test_experiments:silent_job"),)).jobs(tmp_path)
    rep = run_jobs(bad + good + silent, log=None)
    assert rep.ran == [good[0].run_id]
    assert set(rep.failed) == {bad[0].run_id, silent[0].run_id}
    assert "asked to fail" in rep.failed[bad[0].run_id]
    assert "asked to fail" in Path(bad[0].out, "error.txt").read_text()
    assert "summary.json" in rep.failed[silent[0].run_id]


def test_runner_rejects_bad_workers(tmp_path):
    with pytest.raises(ConfigError):
        run_jobs([], workers=0)


def test_runner_skips_diverged_and_finished_train_runs(tmp_path):
    jobs = _recipe().jobs(tmp_path)[:2]
    for job, status in zip(jobs, ("diverged", "completed")):
        Path(job.out).mkdir(parents=True)
        Path(job.out, "summary.json").write_text(json.dumps({"status": status}))
    Path(jobs[1].out, "analysis.json").write_text("{}")
    rep = run_jobs(jobs, log=None)  # would fail loudly if it tried to train or analyse these
    assert rep.ok and rep.ran == [] and sorted(rep.skipped) == sorted(j.run_id for j in jobs)


def test_manifest_merges_runs_of_the_same_recipe_one_dataset_at_a_time(tmp_path):
    from convemerge.experiments.reproduce import read_manifest, write_manifest

    def recipe(lr):
        return Recipe(name="m", scale="quick", datasets=("mnist-5k", "digits"), seeds=(0, 1), epochs=1,
                      base={"lr": lr}, arms=(Arm("a", model="s-fc", optimizer="sgd", alpha=1),))

    full = recipe(0.1).jobs(tmp_path)
    for d in ("mnist-5k", "digits"):
        r = recipe(0.1).with_overrides(datasets=(d,))
        path = write_manifest(r, r.jobs(tmp_path), tmp_path, command=f"reproduce m --dataset {d}")
    m = read_manifest(path)
    assert sorted(j["run_id"] for j in m["jobs"]) == sorted(j.run_id for j in full)
    assert m["recipe"]["datasets"] == ["mnist-5k", "digits"] and m["command"] == "reproduce m --dataset digits"
    # a changed recipe (another learning rate) replaces the manifest: its old runs are not this recipe's
    r = recipe(0.2).with_overrides(datasets=("digits",))
    m = read_manifest(write_manifest(r, r.jobs(tmp_path), tmp_path, command="x"))
    assert sorted(j["run_id"] for j in m["jobs"]) == sorted(j.run_id for j in r.jobs(tmp_path))
    assert m["recipe"]["datasets"] == ["digits"]


# ----------------------------------------------------------------------------- jobs as callables, recipe analyses
def _recorded_analysis(run_dir: str) -> None:
    from convemerge.runs import write_analysis

    write_analysis(run_dir, {"checkpoint": "best", "epoch": 1, "train_error": 0.0, "m": 1, "weights": {},
                             "nonzero": {}, "mdl": {}, "seconds": 0.0, "by": "the recipe's analysis"})


def test_callable_jobs_are_named_by_module_and_function():
    from convemerge.experiments.cnfa.jobs import cnfa_job
    from convemerge.experiments.recipe import CallableSpec, job_name

    assert CallableSpec("c", cnfa_job).target == "convemerge.experiments.cnfa_jobs:cnfa_job"

    def moved(out):  # a job function that moved keeps the name its finished runs were made with
        return out

    moved.job_name = "old.module:old_job"
    assert job_name(moved) == "old.module:old_job" == CallableSpec("m", moved).target


def test_runner_runs_the_recipes_analyses_not_its_own(tmp_path):
    from dataclasses import replace

    from convemerge.runs import read_analysis

    recipe = replace(_recipe(), analyses=("test_experiments:_recorded_analysis",))
    jobs = recipe.jobs(tmp_path)[:1]
    Path(jobs[0].out).mkdir(parents=True)
    Path(jobs[0].out, "summary.json").write_text(json.dumps({"status": "completed"}))
    rep = run_jobs(jobs, log=None)  # a completed run without its analysis record: only the analysis runs
    assert rep.ok and read_analysis(jobs[0].out)["by"] == "the recipe's analysis"
    quiet = replace(_recipe(), analyses=())
    assert quiet.jobs(tmp_path)[0].analyses == () and jobs[0].run_id == quiet.jobs(tmp_path)[0].run_id


def test_killed_runner_takes_its_workers_down(tmp_path):
    """A runner killed outright (SIGKILL: no cleanup runs) must not leave workers training into run directories
    that a restarted runner would then share with them."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signals are Linux-only")
    (tmp_path / "holdjob.py").write_text(textwrap.dedent("""
        import os, time
        def hold(out, seconds):
            open(os.path.join(os.path.dirname(out), "pid"), "w").write(str(os.getpid()))
            time.sleep(seconds)
    """))
    script = textwrap.dedent(f"""
        from convemerge.experiments.recipe import Job
        from convemerge.experiments.runner import run_jobs
        jobs = [Job("callable", "e", "hold", None, None, {{}}, {{"seconds": 60 + i}}, f"hold-{{i}}",
                    {str(tmp_path / 'r')!r} + f"/hold-{{i}}", target="holdjob:hold") for i in range(2)]
        run_jobs(jobs, workers=2, log=None)  # two jobs, two workers: spawned processes, not in-process
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    pid_file = tmp_path / "r" / "pid"
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline and parent.poll() is None:
        time.sleep(0.2)
    assert pid_file.exists(), "the worker never started"
    worker = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    alive = True
    while alive and time.time() < deadline:
        try:
            os.kill(worker, 0)
            with open(f"/proc/{worker}/stat") as f:  # a zombie is dead
                alive = f.read().split()[2] != "Z"
        except (ProcessLookupError, FileNotFoundError):
            alive = False
        time.sleep(0.2)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the worker outlived its runner"


def test_moved_job_functions_keep_their_old_names_and_are_found_by_them():
    """cnfa_job and kernel_job moved into their experiments' folders: their run ids keep the old names, and the
    runner resolves both the old name (manifests written before the move) and the new one."""
    from convemerge.experiments.cnfa.jobs import cnfa_job
    from convemerge.experiments.convrfm.jobs import kernel_job
    from convemerge.experiments.recipe import job_name
    from convemerge.experiments.registry import resolve_job

    for fn, old in ((cnfa_job, "convemerge.experiments.cnfa_jobs:cnfa_job"),
                    (kernel_job, "convemerge.experiments.kernel_jobs:kernel_job")):
        assert job_name(fn) == old
        assert resolve_job(old) is fn and resolve_job(f"{fn.__module__}:{fn.__name__}") is fn
    assert resolve_job("convemerge.experiments.postprocess:analyse_run").__name__ == "analyse_run"
    for bad in ("convemerge.experiments.no_such_jobs:f", "convemerge.experiments.cnfa.jobs:no_such_job", "nocolon"):
        with pytest.raises(ConfigError):
            resolve_job(bad)


def test_every_experiment_folder_is_registered():
    import convemerge.experiments as experiments

    folders = {p.parent.name for p in Path(experiments.__file__).parent.glob("*/recipe.py")}
    assert folders == set(list_experiments()) == {"table1", "table2", "fig2", "fig3", "fig4", "fig5", "cnfa",
                                                  "convrfm"}
