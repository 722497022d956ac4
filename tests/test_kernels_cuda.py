"""device="cuda": the kernel machines on a GPU give the CPU's results (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convemerge.kernels import ConvolutionalKernel, ConvRFMClassifier, RFMClassifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_cntk_and_patch_agop_on_cuda_equal_cpu(padding):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(12, 2 * 8 * 7, generator=gen)
    coef = torch.randn(12, 3, generator=gen)
    cpu = ConvolutionalKernel((2, 8, 7), depth=3, padding=padding, fused=False)
    gpu = ConvolutionalKernel((2, 8, 7), depth=3, padding=padding)
    torch.testing.assert_close(gpu.matrix(X.cuda()).cpu(), cpu.matrix(X), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu.agop(X.cuda(), X.cuda(), coef.cuda()).cpu(), cpu.agop(X, X, coef),
                               rtol=1e-3, atol=1e-5)


def test_estimators_fit_on_cuda():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 1, 6, 6)).astype(np.float32)
    y = (X[:, 0, 2, :].sum(1) > 0).astype(int)
    for est in (RFMClassifier(n_iter=1, device="cuda", dtype="float32", random_state=0),
                ConvRFMClassifier(depth=2, n_iter=1, device="cuda", dtype="float32", random_state=0)):
        Xin = X.reshape(80, -1) if isinstance(est, RFMClassifier) else X
        est.fit(Xin, y)
        assert est.coef_.device.type == "cuda"
        ref = est.set_params(device="cpu").fit(Xin, y)
        assert ref.coef_.device.type == "cpu"
