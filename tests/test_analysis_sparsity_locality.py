"""analysis.sparsity and analysis.locality against exact counts and closed forms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convemerge.analysis.locality import (
    first_layer_locality,
    inverse_participation_ratio,
    median_participation_ratio,
    nonzero_per_unit,
    participation_ratio,
)
from convemerge.analysis.sparsity import nonzero_per_layer, nonzero_total, sparsity_table, weights_per_layer


def test_pr_closed_forms():
    f = torch.zeros(4, 2, 5, 5)
    f[0, 1, 2, 3] = -3.0  # one pixel -> 1
    f[1] = 0.7  # uniform over 50 -> 50
    f[2, 0, :2, :2] = torch.tensor([[1.0, -1.0], [1.0, 1.0]])  # uniform over 4 -> 4
    # f[3] all zero -> 0
    assert torch.allclose(participation_ratio(f), torch.tensor([1.0, 50.0, 4.0, 0.0]))
    assert torch.allclose(inverse_participation_ratio(f), torch.tensor([1.0, 1 / 50, 1 / 4, 0.0]))
    assert nonzero_per_unit(f).tolist() == [1, 50, 4, 0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=30),
       st.floats(1e-20, 1e20))
def test_pr_matches_float64_formula_and_is_scale_invariant(values, scale):
    x = (torch.tensor(values, dtype=torch.float64) * scale).float()
    if not (x != 0).any():
        return
    w = x.double() / x.double().abs().max()  # the float64 reference, rescaled so w**4 cannot underflow
    ref = float(w.square().sum() ** 2 / w.pow(4).sum())
    got = float(participation_ratio(x.unsqueeze(0))[0])
    assert got == pytest.approx(ref, rel=1e-4)
    assert 1.0 - 1e-5 <= got <= (x != 0).sum().item() + 1e-3


def test_pr_chunking_matches(monkeypatch):
    import convemerge.models.locality as loc  # where the implementation lives

    f = torch.randn(37, 3, 4, 4)
    whole = participation_ratio(f)
    monkeypatch.setattr(loc, "_CHUNK_ELEMENTS", 100)
    assert torch.equal(participation_ratio(f), whole)


def test_median_ignores_dead_units_and_respects_min_nonzero():
    f = torch.zeros(5, 1, 3, 3)
    f[0, 0, 0, 0] = 1  # PR 1, 1 nz
    f[1, 0, 0, :2] = 1  # PR 2, 2 nz
    f[2, 0, :, 0] = 1  # PR 3, 3 nz
    assert median_participation_ratio(f) == pytest.approx(2.0)
    assert median_participation_ratio(f, min_nonzero=3) == pytest.approx(3.0)
    assert math.isnan(median_participation_ratio(torch.zeros(2, 4)))


@dataclass(frozen=True)
class _WL:
    name: str
    module: nn.Module
    kind: str


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 4)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 3)

    def weight_layers(self):
        return [_WL("fc1", self.fc1, "linear"), _WL("fc2", self.fc2, "linear")]

    def first_layer_filters(self):
        return self.fc1.weight.detach().reshape(4, 1, 4, 4)


def test_nonzero_counts_exact():
    m = _Model()
    with torch.no_grad():
        m.fc1.weight.zero_()
        m.fc1.weight[0, :5] = 1.0
        m.fc1.weight[2, 3] = -2.0
        m.fc2.weight[0, 0] = 0.0
        m.fc1.bias.fill_(1.0)  # biases never count
    assert nonzero_per_layer(m) == {"fc1": 6, "fc2": 11}
    assert nonzero_total(m) == 17
    assert weights_per_layer(m) == {"fc1": 64, "fc2": 12}
    rows = sparsity_table(m)
    assert rows[-1] == {"layer": "total", "weights": 76, "nonzero": 17, "density": 17 / 76}
    loc = first_layer_locality(m)
    assert loc["units"] == 4 and loc["units_live"] == 2 and loc["filter_size"] == 16
    assert loc["pr_median"] == pytest.approx(1.0)  # PRs 5 and 1: torch's median is the lower middle value


def test_nonzero_fallback_for_plain_modules():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        net[0].weight[0].zero_()
    assert nonzero_per_layer(net) == {"0": 9, "3": 16}
