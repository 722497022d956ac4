"""Data-parallel training on CPU with the gloo backend and 2 processes: the same weights as one process with the
same global batch (within float tolerance), replicas bit-identical across ranks, every registered model under DDP,
and a 2-process torchrun run killed after a checkpoint resumes to the bytes of an uninterrupted 2-process run.

Every in-group check runs in one pair of spawned processes (one gloo group, one import of torch each); the kill
test launches the real ``torchrun ... -m convemerge train`` command line.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import convemerge.train.loop as loop
from convemerge.errors import ConfigError
from convemerge.train import TrainConfig, find_checkpoint, read_metrics, train
from convemerge.train.distributed import Distributed, SyncedBatchNorm

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("epoch_time", "wall_time")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == "win32",
                                reason="needs torch.distributed with gloo and fork")

# Tolerance of 2-process vs 1-process weights: the two differ only in the order of floating-point sums (DDP's
# gradient all-reduce, BatchNorm statistics over two shards), ~1e-7 relative per step in fp32, which training
# amplifies: after the 30 steps of the run below the largest difference of a tensor is up to ~6e-5 of its largest
# magnitude (BatchNorm running variance). Allowed: 5e-4 of the largest magnitude. (Unsynchronised BatchNorm or an
# unweighted uneven last batch miss by 1e-2 or more.)
SCALED_TOL = 5e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn, args, errors) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        fn(*args)
    except BaseException:  # noqa: BLE001 - reported to the parent
        errors.put(f"rank {rank}: {traceback.format_exc()}")
        raise SystemExit(1)


def _run_ranks(fn, *args, world: int = 2, timeout: float = 240) -> None:
    """Run ``fn(*args)`` in ``world`` spawned processes (fork could inherit a busy OpenMP pool and hang); fail
    with the first traceback."""
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, fn, args, errors)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
        p.join()
    if not errors.empty():
        pytest.fail(errors.get())
    assert not alive, "a rank hung"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


def _config(out: Path, **kw) -> TrainConfig:
    # noise-row: synthetic (no data files); 450 train samples, batch 32 -> 15 steps/epoch, the last batch of 2
    base = dict(model="s-fc", alpha=2, dataset="noise-row", epochs=2, batch_size=32, optimizer="beta-lasso",
                lr=0.05, lam=1e-4, lam_first=5e-4, beta=5.0, augment=True, num_threads=1, seed=3, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _rank_checks(root: str) -> None:
    """Everything that needs the 2-process group, in one group: the 2-process run, the replica check's failure,
    one DDP step of every registered model."""
    torch.distributed.init_process_group("gloo")
    train(_config(Path(root) / "two"), verbose=False)  # uses the group it finds, and leaves it open
    _perturbed_replica_is_caught()
    _one_step_each_model(str(Path(root) / "worst.json"))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process checks, and the 2-process run's one-process twin."""
    root = tmp_path_factory.mktemp("ddp")
    _run_ranks(_rank_checks, str(root))
    one = train(_config(root / "one"), verbose=False)
    return root / "two", one.run_dir


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints/last/model.safetensors"))


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    two, one = runs
    w2, w1 = _weights(two), _weights(one)
    assert w2.keys() == w1.keys()
    for k in w1:
        if w1[k].is_floating_point():
            scale = float(w1[k].abs().max())
            assert float((w2[k] - w1[k]).abs().max()) <= SCALED_TOL * scale, k
        else:
            assert torch.equal(w2[k], w1[k]), k
    # β-LASSO did threshold, and both runs zeroed the same weights of the first layer
    assert (w1["layer1.weight"] == 0).any()
    assert torch.equal(w1["layer1.weight"] == 0, w2["layer1.weight"] == 0)
    h2, h1 = read_metrics(two / "metrics.jsonl"), read_metrics(one / "metrics.jsonl")
    assert [r["epoch"] for r in h2] == [1, 2] and [r["step"] for r in h2] == [r["step"] for r in h1]
    for a, b in zip(h2, h1):
        assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"] and a["test_acc"] == b["test_acc"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["distributed"] == {"world_size": 2, "backend": "gloo", "replicas_identical": True}


def _perturbed_replica_is_caught() -> None:
    ctx = Distributed(torch.distributed.get_rank(), 2, 0, "gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ctx.check_replicas(model)  # identical: passes
    if ctx.rank == 1:
        with torch.no_grad():
            model[0].weight[0, 0] = torch.nextafter(model[0].weight[0, 0], torch.tensor(1.0))  # one ulp
    with pytest.raises(RuntimeError, match="replicas differ"):
        ctx.check_replicas(model)


def test_replica_check_catches_a_one_ulp_difference(runs):
    pass  # asserted inside the 2-process checks (a failure there fails the fixture)


# every registered model: one DDP step on two shards == one step on the whole batch in one process
SMALL = {
    "s-conv": dict(alpha=2, image_size=8), "s-local": dict(alpha=2, image_size=8), "s-fc": dict(alpha=2, image_size=8),
    "d-conv": dict(alpha=1, image_size=16), "d-local": dict(alpha=1, image_size=16), "d-fc": dict(alpha=1, image_size=16),
    "3-fc": dict(width=12, image_size=8), "resnet18": dict(alpha=2, image_size=8, kernel_size=3),
    "vanilla-cnn": dict(width=4, depth=2, image_size=8),
}


def _one_step_each_model(out: str) -> None:
    from convemerge.models import create_model, list_models
    from convemerge.optim import BetaLasso
    from convemerge.train.engine import train_step
    from convemerge.train.setup import Precision

    rank = torch.distributed.get_rank()
    ctx = Distributed(rank, 2, 0, "gloo")
    results = {}
    for name in list_models():
        kw = SMALL[name]
        side = kw["image_size"]
        torch.manual_seed(0)
        model = create_model(name, in_chans=2, num_classes=3, **kw)
        reference = create_model(name, in_chans=2, num_classes=3, **kw)
        reference.load_state_dict(model.state_dict())
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(7, 2, side, side, generator=g), torch.randint(0, 3, (7,), generator=g)  # uneven: 4 + 3
        loss_fn = lambda out, t: torch.nn.functional.cross_entropy(out, t)  # noqa: E731
        model, ddp = ctx.wrap(model, torch.device("cpu"))
        opt = BetaLasso(model.parameters(), lr=0.1, lam=1e-3, beta=1.0)
        part = ctx.shard(7)
        step = ctx.weighted_step(train_step, lambda: 7)
        step(ddp, x[part], y[part], loss_fn, opt, Precision(None, False), None)
        ctx.check_replicas(model)
        if rank == 0:
            ref_opt = BetaLasso(reference.parameters(), lr=0.1, lam=1e-3, beta=1.0)
            train_step(reference, x, y, loss_fn, ref_opt, Precision(None, False), None)
            worst = 0.0
            for (k, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
                if a.is_floating_point():
                    worst = max(worst, float((a - b).abs().max()))
                else:
                    assert torch.equal(a, b), (name, k)
            results[name] = worst
    if rank == 0:
        Path(out).write_text(json.dumps(results))


def test_every_registered_model_trains_under_ddp(runs):
    from convemerge.models import list_models

    worst = json.loads((runs[0].parent / "worst.json").read_text())
    assert sorted(worst) == sorted(list_models())
    assert all(v < 1e-5 for v in worst.values()), worst


def test_synced_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    synced = SyncedBatchNorm.convert(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))[0]
    synced.load_state_dict(bn.state_dict())
    x = torch.randn(5, 3, 4, 4)
    torch.testing.assert_close(synced(x), bn(x))
    torch.testing.assert_close(synced.running_var, bn.running_var)
    assert set(synced.state_dict()) == set(bn.state_dict())


def test_batch_size_must_divide_over_processes():
    ctx = Distributed(0, 3, 0, "gloo")
    with pytest.raises(ConfigError, match="batch_size=32 is not divisible by the 3 processes"):
        ctx.check_batch_size(32, 450)
    ctx.check_batch_size(33, 450)
    assert [Distributed(r, 3, 0, "gloo").shard(8) for r in range(3)] == [slice(0, 3), slice(3, 6), slice(6, 8)]


def _env(sleep: float | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(loop.STEP_SLEEP_ENV, None)
    if sleep:
        env[loop.STEP_SLEEP_ENV] = str(sleep)
    return env


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (torchrun starts each worker in a session of its own, so killing
    torchrun's process group would leave the workers running)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the workers and then torchrun: the whole job dies at once, as on a lost machine."""
    for child in _children(proc.pid):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait(10)


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "convemerge", "train", *args]


def test_killed_torchrun_run_resumes_to_the_uninterrupted_bytes(runs, tmp_path):
    two, _ = runs
    killed = tmp_path / "killed"
    cfg_file = tmp_path / "cfg.yaml"
    _config(killed).to_yaml(cfg_file)
    proc = subprocess.Popen(_torchrun("--config", str(cfg_file), "--no-progress"), env=_env(0.05),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    try:
        while find_checkpoint(killed / "checkpoints/last") is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.02)
        time.sleep(0.2)  # a few of epoch 2's 15 steps (0.05 s each)
        assert proc.poll() is None, "the run ended before it could be killed"
        _kill_tree(proc)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
    time.sleep(0.5)  # nothing may still be writing
    assert [r["epoch"] for r in read_metrics(killed / "metrics.jsonl")] == [1]
    assert json.loads((find_checkpoint(killed / "checkpoints/last") / "state.json").read_text())["epoch"] == 1

    done = subprocess.run(_torchrun("--out", str(killed), "--resume", "--no-progress"), env=_env(None),
                          capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("resuming") == 1 and "after epoch 1" in done.stdout  # rank 0 alone speaks
    for name in ("model.safetensors", "optimizer.safetensors", "optimizer.json"):
        assert (killed / "checkpoints/last" / name).read_bytes() == (two / "checkpoints/last" / name).read_bytes()
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rs]  # noqa: E731
    assert strip(read_metrics(killed / "metrics.jsonl")) == strip(read_metrics(two / "metrics.jsonl"))
