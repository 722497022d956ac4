"""Description length and the Occam bounds against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from convemerge.analysis.mdl import (
    DescriptionLength,
    dense_bound,
    description_length,
    min_params_to_fit,
    model_description_length,
    quantize,
    sparse_bound,
)
from convemerge.errors import ConfigError


def test_quantize_grid_and_zero():
    w = torch.tensor([0.0, 1.0, -1.0, 0.5, 0.004])
    q = quantize(w, 8)
    step = 1.0 / 127
    # 0.5/step = 63.5 rounds half-to-even to 64; 0.004/step = 0.508 rounds to 1.
    assert torch.allclose(q, torch.tensor([0.0, 1.0, -1.0, 64 * step, step], dtype=torch.float64))
    assert q[0] == 0  # pruned weights stay pruned
    # at most 2^b - 1 levels
    assert torch.unique(quantize(torch.randn(10000), 3)).numel() <= 7


def test_description_length_by_hand():
    dl = description_length([torch.tensor([0.0, 1.0]), torch.tensor([[-1.0, 0.5]])], bits=8)
    # tensors quantised separately: [0, 1] -> step 1/127; [-1, 0.5] -> 0.5 -> 64/127. Distinct non-zero: 1, -1, 64/127.
    assert (dl.n, dl.nonzero, dl.distinct, dl.bits) == (4, 3, 3, 8)
    assert dl.dense_bits == 32
    assert dl.index_bits == pytest.approx(14.754887502163468)  # 3·log2(12) + 2·log2(4)
    assert dl.sparse_bits == pytest.approx(38.75488750216347)  # + 3·8


def test_all_zero_net():
    dl = description_length([torch.zeros(8)], bits=4)
    assert (dl.nonzero, dl.distinct) == (0, 0)
    assert dl.sparse_bits == pytest.approx(2 * math.log2(8))


def test_bounds_by_hand():
    dl = DescriptionLength(n=4, nonzero=3, distinct=3, bits=8, dense_bits=32, sparse_bits=38.75488750216347,
                           index_bits=14.754887502163468)
    assert dense_bound(0.1, n=4, bits=8, m=1000, delta=0.05) == pytest.approx(0.2366051391692263)
    assert sparse_bound(0.1, dl, m=1000, delta=0.05) == pytest.approx(0.2517840828233495)


def test_sparse_bound_beats_dense_for_sparse_net():
    w = torch.zeros(100_000)
    w[:100] = 0.25
    dl = description_length([w], bits=8)
    assert dl.distinct == 1 and dl.nonzero == 100
    assert sparse_bound(0.0, dl, m=50_000) < dense_bound(0.0, dl.n, 8, m=50_000)


@pytest.mark.parametrize("bad", [dict(train_error=1.5), dict(m=0), dict(delta=0.0)])
def test_bound_rejects_bad_values(bad):
    args = dict(train_error=0.1, n=10, bits=8, m=100, delta=0.05) | bad
    with pytest.raises(ConfigError):
        dense_bound(**args)


def test_model_description_length_plain_module():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    dl = model_description_length(net, bits=8)
    assert dl.n == 3 * 2 + 2 * 1  # biases excluded


def test_min_params_to_fit():
    pts = [
        dict(alpha=1, params=100, train_acc=0.90, test_acc=0.80),
        dict(alpha=2, params=400, train_acc=0.995, test_acc=0.85),
        dict(alpha=4, params=1600, train_acc=1.0, test_acc=0.84),
    ]
    assert min_params_to_fit(pts, 0.99) == {"min_params": 400, "alpha": 2, "best_test_acc": 0.85}
    assert min_params_to_fit(pts, 1.01)["min_params"] is None
