"""Resume: a run killed (SIGKILL) in the middle of an epoch and resumed ends with the same bytes as a run that
was never interrupted; an interrupted in-process run likewise; divergence stops cleanly and keeps the last
good checkpoint."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import convemerge.train.loop as loop
from convemerge.errors import ConfigError, DivergenceError
from convemerge.train import TrainConfig, find_checkpoint, read_metrics, train

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("epoch_time", "wall_time")


def _config(out: Path, **kw) -> TrainConfig:
    base = dict(model="s-fc", alpha=2, dataset="digits", epochs=3, batch_size=32, lr=0.05, momentum=0.9,
                nesterov=True, warmup_epochs=0.5, augment=True, model_options={"dropout": 0.2}, num_threads=1,
                seed=7, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _same_run(a: Path, b: Path) -> None:
    """Final weights and optimizer state byte-identical; metrics identical except timings."""
    for name in ("model.safetensors", "optimizer.safetensors", "optimizer.json"):
        assert (a / "checkpoints/last" / name).read_bytes() == (b / "checkpoints/last" / name).read_bytes(), name
    ha, hb = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb] == list(range(1, len(ha) + 1))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rs]  # noqa: E731
    assert strip(ha) == strip(hb)


def _env(sleep: float | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if sleep:
        env[loop.STEP_SLEEP_ENV] = str(sleep)
    return env


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    # noise-row: synthetic, so the subprocesses skip the slow imports a packaged data set needs; 29 steps/epoch
    kw = dict(dataset="noise-row", batch_size=16, epochs=2)
    straight = train(_config(tmp_path / "straight", **kw), verbose=False)
    assert straight.summary["status"] == "completed"

    killed = tmp_path / "killed"
    cfg_file = tmp_path / "cfg.yaml"
    _config(killed, **kw).to_yaml(cfg_file)
    cmd = [sys.executable, "-m", "convemerge", "train", "--config", str(cfg_file), "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(0.03), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 60
    try:
        while not any(r["epoch"] == 1 for r in read_metrics(killed / "metrics.jsonl")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.02)
        time.sleep(0.3)  # ~10 of the epoch's 29 steps (0.03 s each) into epoch 2
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [r["epoch"] for r in read_metrics(killed / "metrics.jsonl")] == [1]
    assert json.loads((find_checkpoint(killed / "checkpoints/last") / "state.json").read_text())["epoch"] == 1

    done = subprocess.run([*cmd[:4], "--out", str(killed), "--resume", "--no-progress"], env=_env(None),
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout and "after epoch 1" in done.stdout
    _same_run(straight.run_dir, killed)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best_val_acc"] == straight.best_val_acc


@pytest.mark.parametrize("optimizer", ["beta-lasso", "adam"])
def test_interrupted_in_process_then_resumed_is_bit_identical(tmp_path, monkeypatch, optimizer):
    kw = dict(optimizer=optimizer, lr=0.05 if optimizer == "beta-lasso" else 1e-3, lam=1e-4, lam_first=5e-4,
              beta=5.0, epochs=2, nesterov=False)
    straight = train(_config(tmp_path / "straight", **kw), verbose=False)

    real_step, calls = loop.train_step, {"n": 0}

    def interrupting_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 41 + 10:  # 10 steps into epoch 2 (41 steps per epoch)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", interrupting_step)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "cut", **kw), verbose=False)
    assert json.loads((tmp_path / "cut/summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(loop, "train_step", real_step)
    torch.manual_seed(12345)  # the global RNG state before resuming must not matter
    resumed = train(_config(tmp_path / "cut", **kw), resume=True, verbose=False)
    _same_run(straight.run_dir, resumed.run_dir)
    if optimizer == "beta-lasso":
        assert straight.history[-1]["nonzero"]["layer1"] < 64 * 32  # the L1 step + threshold did sparsify


def test_resume_guards(tmp_path):
    cfg = _config(tmp_path / "r", epochs=1)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(cfg, resume=True, verbose=False)
    (tmp_path / "r").mkdir()
    (tmp_path / "r/config.yaml").write_text("model: s-fc\n")  # a run that never finished an epoch: restartable
    first = train(cfg, verbose=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, verbose=False)
    with pytest.raises(ConfigError, match="lr: run has 0.05, given 0.1"):
        train(cfg.replace(lr=0.1), resume=True, verbose=False)
    again = train(cfg.replace(num_threads=2), resume=True, verbose=False)  # runtime-only change: allowed
    assert again.history == first.history  # already complete: nothing more to do


def test_huge_lr_diverges_cleanly(tmp_path):
    cfg = _config(tmp_path / "div", lr=1e12, warmup_epochs=0.0, epochs=2)
    with pytest.raises(DivergenceError) as info:
        train(cfg, verbose=False)
    msg = str(info.value)
    assert "diverged at epoch 1, step" in msg and "\n" not in msg
    summary = json.loads((tmp_path / "div/summary.json").read_text())
    assert summary["status"] == "diverged" and summary["error"] == msg
    assert find_checkpoint(tmp_path / "div/checkpoints/last") is None


def test_divergence_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_step, calls = loop.train_step, {"n": 0}

    def poisoned_step(*args, **kwargs):
        loss, correct = real_step(*args, **kwargs)
        calls["n"] += 1
        return (loss * math.nan if calls["n"] == 41 + 5 else loss), correct

    monkeypatch.setattr(loop, "train_step", poisoned_step)
    cfg = _config(tmp_path / "div", epochs=3)
    with pytest.raises(DivergenceError, match=r"epoch 2, step 5/41 \(global step 46\).*checkpoint .* is intact"):
        train(cfg, verbose=False)
    last = find_checkpoint(tmp_path / "div/checkpoints/last")
    assert json.loads((last / "state.json").read_text())["epoch"] == 1
    from safetensors.torch import load_file

    assert all(torch.isfinite(t.float()).all() for t in load_file(str(last / "model.safetensors")).values())
    assert [r["epoch"] for r in read_metrics(tmp_path / "div/metrics.jsonl")] == [1]
