"""Packed runs equal the same runs done one by one: weights, metrics, checkpoints and run-directory layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from convemerge.errors import ConfigError
from convemerge.train import TrainConfig, read_metrics, train
from convemerge.train.packed import check_packable, train_packed

# Tolerance: a packed step runs the k forward/backward passes as batched kernels (vmap), which may sum in another
# order than the single-run kernels; on CPU the two have agreed to the bit in this test, and the bound allows
# float-rounding drift (1e-5 of a tensor's largest magnitude after 2 epochs). A mixed-up run (another run's data,
# seed or λ) misses by orders of magnitude.
SCALED_TOL = 1e-5
TIMING = ("epoch_time", "wall_time")


def _configs(root: Path, model: str) -> list[TrainConfig]:
    base = TrainConfig(model=model, alpha=2, dataset="digits", epochs=2, batch_size=128, optimizer="beta-lasso",
                       lr=0.05, beta=5.0, augment=True, num_threads=1)
    # per-run seed (init, split, data order, augmentation), λ, first-layer λ, β and lr
    return [base.replace(seed=0, lam=1e-4, out=str(root / "a")),
            base.replace(seed=1, lam=1e-4, lam_first=5e-4, out=str(root / "b")),
            base.replace(seed=1, lam=3e-4, beta=2.0, lr=0.03, out=str(root / "c"))]


# s-fc: one vmap-ed step for all runs; s-local (a custom autograd.Function): the runs stepped one after another
@pytest.fixture(scope="module", params=[("s-fc", True), ("s-local", False)], ids=["s-fc-vmap", "s-local-loop"])
def packed_and_alone(tmp_path_factory, request):
    model, vmapped = request.param
    root = tmp_path_factory.mktemp("packed")
    packed = train_packed(_configs(root / "packed", model), verbose=False)
    alone = [train(cfg, verbose=False) for cfg in _configs(root / "alone", model)]
    assert all(p.summary["packed"]["vmap"] is vmapped for p in packed)
    return packed, alone


def test_packed_runs_equal_runs_done_one_by_one(packed_and_alone):
    packed, alone = packed_and_alone
    for p, a in zip(packed, alone):
        wp = load_file(str(p.run_dir / "checkpoints/last/model.safetensors"))
        wa = load_file(str(a.run_dir / "checkpoints/last/model.safetensors"))
        assert wp.keys() == wa.keys()
        for k in wa:
            if wa[k].is_floating_point():
                assert float((wp[k] - wa[k]).abs().max()) <= SCALED_TOL * float(wa[k].abs().max()), (p.run_dir, k)
            else:
                assert torch.equal(wp[k], wa[k]), k
        hp, ha = read_metrics(p.run_dir / "metrics.jsonl"), read_metrics(a.run_dir / "metrics.jsonl")
        assert len(hp) == len(ha) == 2
        for rp, ra in zip(hp, ha):
            assert rp.keys() == ra.keys()
            for key in rp:
                if key in TIMING:
                    continue
                if isinstance(ra[key], float):
                    assert rp[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), key
                else:
                    assert rp[key] == ra[key], key
    # the runs really differ from each other (per-run seed, λ, β, lr), and β-LASSO thresholded
    first = [load_file(str(p.run_dir / "checkpoints/last/model.safetensors"))["layer1.weight"] for p in packed]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    assert all((w == 0).any() for w in first)


def test_packed_run_directories_look_like_single_runs(packed_and_alone):
    packed, alone = packed_and_alone
    for p, a in zip(packed, alone):
        files = lambda d: sorted(str(f.relative_to(d)) for f in d.rglob("*") if f.is_file())  # noqa: E731
        assert files(p.run_dir) == files(a.run_dir)
        assert (p.run_dir / "config.yaml").read_text().replace(str(p.run_dir), "") == \
            (a.run_dir / "config.yaml").read_text().replace(str(a.run_dir), "")
        summary = json.loads((p.run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["best_val_acc"] == a.summary["best_val_acc"]
        # a packed run resumes like any run (here: already complete, nothing to do)
    resumed = train(TrainConfig.from_yaml(packed[0].run_dir / "config.yaml"), resume=True, verbose=False)
    assert resumed.history == packed[0].history


def test_incompatible_runs_are_refused(tmp_path):
    a = TrainConfig(model="s-fc", alpha=1, dataset="digits", out=str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="alpha differs"):
        check_packable([a, a.replace(alpha=2, out=str(tmp_path / "b"))])
    with pytest.raises(ConfigError, match="distinct run directories"):
        check_packable([a, a.replace(seed=3)])
    with pytest.raises(ConfigError, match="dropout"):
        check_packable([a.replace(model_options={"dropout": 0.1})])


def test_cli_trains_a_grid(tmp_path):
    from typer.testing import CliRunner

    from convemerge.cli import app

    base = tmp_path / "base.yaml"
    TrainConfig(model="s-fc", alpha=1, dataset="digits", epochs=1, batch_size=256, optimizer="beta-lasso",
                num_threads=1).to_yaml(base)
    result = CliRunner().invoke(app, ["train-packed", "-c", str(base), "--seed", "0", "--seed", "1", "--lam", "1e-5",
                                      "--out-root", str(tmp_path / "grid")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "grid").iterdir()) == ["s0-lam1e-05-beta50", "s1-lam1e-05-beta50"]
    assert "2 packed runs" in result.output


def test_runner_opt_in_packs_compatible_jobs(tmp_path):
    import dataclasses

    from convemerge.experiments.packing import packable_groups, train_packs
    from convemerge.experiments.registry import get_recipe
    from convemerge.experiments.runner import run_jobs

    jobs = [j for j in get_recipe("table2", "quick").jobs(tmp_path) if j.kind == "train"]
    lasso = [dataclasses.replace(j, config={**j.config, "epochs": 1, "num_threads": 1})
             for j in jobs if j.arm == "s-fc/beta-lasso-b50"][:3]
    sgd = [dataclasses.replace(j, config={**j.config, "epochs": 1}) for j in jobs if j.arm == "s-conv/sgd"][:1]
    groups = packable_groups(lasso + sgd)
    assert [len(g) for g in groups] == [3]  # the lone S-CONV job has nothing to pack with
    trained = train_packs(lasso + sgd, log=None)
    assert trained == [j.run_id for j in lasso]
    report = run_jobs(lasso, analyse=False, log=None)
    assert sorted(report.skipped) == sorted(trained) and not report.ran  # the runner finds them finished
    assert packable_groups(lasso) == []  # and never packs a job twice


def test_reproduce_packs_by_default_only_on_cuda(monkeypatch):
    import torch

    from convemerge.experiments import get_recipe
    from convemerge.experiments.packing import runs_on_cuda

    jobs = get_recipe("table2", "quick").jobs("r")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not runs_on_cuda(jobs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runs_on_cuda(jobs) is any(j.config.get("device", "auto") != "cpu" for j in jobs if j.kind == "train")
    cpu = [j for j in jobs if j.kind == "train" and j.config.get("device") == "cpu"]
    assert cpu and not runs_on_cuda(cpu)  # quick scale pins device=cpu
    assert runs_on_cuda(get_recipe("table2", "paper").jobs("r")[:3])  # device auto on a CUDA machine
