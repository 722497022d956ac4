"""The CUDA-only branches, each against its CPU counterpart: on-device batching and augmentation, the
locally-connected layer's fold-based backward, β-LASSO's foreach path, bf16 autocast training with fp32 weights,
and 2-GPU nccl data-parallel training. Skipped (with the reason) where no GPU is present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convemerge.data import autoaugment as A

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (these are the CUDA-only code paths)")
REPO = Path(__file__).resolve().parents[1]


def test_policy_on_cuda_matches_cpu():
    policy = A.load_policy("autoaugment")
    x = torch.randint(0, 256, (256, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    u = A.draw(policy, 256, torch.Generator().manual_seed(1))
    cpu, gpu = A.apply_policy(x, policy, u), A.apply_policy(x.cuda(), policy, u).cpu()
    diff = (cpu.int() - gpu.int()).abs()
    assert float((diff == 0).float().mean()) > 0.999 and int(diff.max()) <= 1  # fp rounding at .5 only


def test_loader_on_cuda_yields_the_cpu_batches():
    from convemerge.data import ImageLoader, load_dataset

    data = load_dataset("digits")
    import dataclasses

    data = dataclasses.replace(data, augment=True)
    batches = [list(ImageLoader(data, 128, shuffle=True, augment=True, device=d,
                                generator=torch.Generator().manual_seed(3))) for d in ("cpu", "cuda")]
    for (xc, yc), (xg, yg) in zip(*batches):
        assert xg.device.type == "cuda" and xg.dtype == torch.float32
        torch.testing.assert_close(xg.cpu(), xc)
        assert torch.equal(yg.cpu(), yc)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_locally_connected_fold_backward_on_cuda_matches_cpu(dtype):
    from convemerge.layers.local import LocallyConnected2d

    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 8, 16, kernel_size=9, stride=2, padding=4)
    x = torch.randn(16, 3, 16, 16, requires_grad=True)
    out = layer(x)
    out.square().sum().backward()
    layer_g = LocallyConnected2d(3, 8, 16, kernel_size=9, stride=2, padding=4).cuda()
    layer_g.load_state_dict(layer.state_dict())
    xg = x.detach().cuda().requires_grad_()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        out_g = layer_g(xg)
    out_g.float().square().sum().backward()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(out_g.float().cpu(), out, **tol)
    torch.testing.assert_close(xg.grad.cpu(), x.grad, **tol)
    torch.testing.assert_close(layer_g.weight.grad.cpu(), layer.weight.grad, **tol)


def test_beta_lasso_foreach_on_cuda_matches_reference_on_cpu():
    from convemerge.optim import BetaLasso
    from convemerge.optim.reference import BetaLassoReference

    torch.manual_seed(0)
    ps = [torch.randn(300, 200) * 0.01, torch.randn(50) * 0.01]
    gs = [torch.randn_like(p) for p in ps]
    cpu = [torch.nn.Parameter(p.clone()) for p in ps]
    gpu = [torch.nn.Parameter(p.clone().cuda()) for p in ps]
    ref, fast = BetaLassoReference(cpu, lr=0.1, lam=1e-3, beta=5.0), BetaLasso(gpu, lr=0.1, lam=1e-3, beta=5.0)
    for _ in range(3):
        for p, q, g in zip(cpu, gpu, gs):
            p.grad, q.grad = g.clone(), g.clone().cuda()
        ref.step()
        fast.step()
    for p, q in zip(cpu, gpu):
        assert torch.equal(p.detach() == 0, q.detach().cpu() == 0)
        torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=0, atol=1e-7)


def test_bf16_training_keeps_fp32_weights_and_sparsifies(tmp_path):
    from convemerge.train import TrainConfig, train

    cfg = TrainConfig(model="s-local", alpha=2, dataset="digits", pad_to=8, epochs=2, batch_size=128, device="cuda",
                      amp="bf16", optimizer="beta-lasso", lam=1e-4, beta=5.0, augment_policy="autoaugment",
                      out=str(tmp_path / "run"))
    result = train(cfg, verbose=False)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in result.model.parameters())
    assert result.history[-1]["nonzero_total"] < sum(p.numel() for p in result.model.parameters())
    assert result.summary["status"] == "completed"


@pytest.mark.skipif(CUDA and torch.cuda.device_count() < 2, reason="needs 2 GPUs for nccl data parallelism")
def test_two_gpu_nccl_run_keeps_replicas_identical(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "convemerge",
           "train", "--model", "s-fc", "--alpha", "2", "--dataset", "digits", "--epochs", "2", "--batch-size", "128",
           "--optimizer", "beta-lasso", "--lam", "1e-4", "--beta", "5", "--device", "cuda", "--no-progress",
           "--out", str(out)]
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "backend": "nccl", "replicas_identical": True}
