"""Locality measures on constructed filters with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from convemerge.analysis.spatial import (
    locality_summary,
    peak_crops,
    peak_positions,
    select_units,
    weight_sharing_score,
    window_concentration,
)
from convemerge.errors import ConfigError


def _delta(h=28, w=28, at=(10, 17), value=2.0):
    f = torch.zeros(1, 1, h, w)
    f[0, 0, at[0], at[1]] = value
    return f


def _placed(pattern: torch.Tensor, at, h=28, w=28):
    """Embed a (C, p, p) pattern with its top-left corner at `at` in a zero (C, h, w) image."""
    c, p, _ = pattern.shape
    f = torch.zeros(c, h, w)
    f[:, at[0]:at[0] + p, at[1]:at[1] + p] = pattern
    return f


def test_delta_is_fully_concentrated():
    f = _delta()
    assert peak_positions(f).tolist() == [[10, 17]]
    assert window_concentration(f, k=1).item() == pytest.approx(1.0)
    assert window_concentration(f, k=9).item() == pytest.approx(1.0)


def test_uniform_filter_concentration_is_window_over_area():
    # a (nearly) uniform 3x3 patch peaked in its middle: k=3 captures all, k=1 one ninth
    patch = torch.ones(1, 3, 3)
    patch[0, 1, 1] = 1.001
    f = _placed(patch, (5, 5)).unsqueeze(0)
    assert window_concentration(f, k=3).item() == pytest.approx(1.0)
    assert window_concentration(f, k=1).item() == pytest.approx(1 / 9, rel=1e-2)
    # fully uniform image: ties go to the first pixel (0, 0), whose 9x9 window keeps a 5x5 corner inside
    u = torch.ones(1, 2, 28, 28)
    assert window_concentration(u, k=9).item() == pytest.approx(25 / 784)
    # and away from the border a window of k×k sees k² of H·W pixels
    u2 = torch.ones(1, 1, 28, 28)
    u2[0, 0, 14, 14] = 1.0001
    assert window_concentration(u2, k=9).item() == pytest.approx(81 / 784, rel=1e-3)


def test_concentration_against_loop_reference():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(6, 2, 11, 13, generator=g) * (torch.rand(6, 2, 11, 13, generator=g) > 0.7)
    k = 5
    got = window_concentration(f, k)
    e = f.pow(2).sum(1)
    for u in range(6):
        r, c = divmod(int(e[u].argmax()), 13)
        r0, r1, c0, c1 = max(0, r - 2), min(11, r + 3), max(0, c - 2), min(13, c + 3)
        assert got[u].item() == pytest.approx((e[u, r0:r1, c0:c1].sum() / e[u].sum()).item())


def test_crop_is_centred_on_peak_and_zero_padded():
    f = _delta(at=(0, 27)).squeeze(0)
    crop = peak_crops(f.unsqueeze(0), k=3)[0, 0]
    assert crop.tolist() == [[0, 0, 0], [0, 2, 0], [0, 0, 0]]


def test_shifted_copies_share_weights():
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(3, 5, 5, generator=g)
    pattern[:, 2, 2] = 4.0  # a clear peak in the middle
    units = torch.stack([_placed(pattern, at) for at in [(3, 3), (10, 14), (20, 8), (12, 20)]])
    units[2] *= -0.5  # a scaled, sign-flipped copy is still the same feature
    assert weight_sharing_score(units, k=9) == pytest.approx(1.0)
    assert weight_sharing_score(units, k=9, reduce="mean") == pytest.approx(1.0)


def test_unrelated_filters_share_little():
    g = torch.Generator().manual_seed(1)
    units = torch.randn(64, 1, 28, 28, generator=g)
    s = weight_sharing_score(units, k=9)
    assert 0.0 < s < 0.5
    # one shifted pair among unrelated units: the nearest score rises, the pairwise mean barely moves
    pattern = torch.randn(1, 5, 5, generator=g)
    pattern[0, 2, 2] = 5.0
    pair = torch.stack([_placed(pattern, (4, 4)), _placed(pattern, (15, 18))])
    mixed = torch.cat([pair, torch.randn(2, 1, 28, 28, generator=g)])
    assert weight_sharing_score(mixed, k=9) > 0.5


def test_sharing_needs_two_live_units_and_skips_dead():
    assert math.isnan(weight_sharing_score(_delta(), k=3))
    units = torch.cat([_delta(at=(3, 3)), _delta(at=(20, 9)), torch.zeros(1, 1, 28, 28)])
    assert weight_sharing_score(units, k=3) == pytest.approx(1.0)


def test_bad_window_rejected():
    with pytest.raises(ConfigError):
        window_concentration(_delta(), k=4)


def test_select_units_threshold_and_seed():
    f = torch.zeros(10, 1, 8, 8)
    for u in range(10):
        f[u, 0].view(-1)[: 3 * u] = 1.0  # unit u has 3u non-zeros
    idx, thr = select_units(f, count=3, min_nonzero=20, seed=0)
    assert thr == 20 and all(3 * int(i) >= 20 for i in idx) and len(idx) == 3
    assert torch.equal(idx, select_units(f, count=3, min_nonzero=20, seed=0)[0])
    idx, thr = select_units(f, count=5, min_nonzero=20, seed=0)  # only 3 units have >= 20
    assert thr == 15 and sorted(idx.tolist()) == [5, 6, 7, 8, 9]


def test_locality_summary_on_delta_and_uniform():
    pytest.importorskip("convemerge.analysis.locality")
    f = torch.cat([_delta(at=(5, 5)), _delta(at=(20, 20)), torch.zeros(1, 1, 28, 28)])
    s = locality_summary(f, k=9)
    assert s["units"] == 3 and s["dead"] == 1
    assert s["pr_mean"] == pytest.approx(1.0)
    assert s["concentration_mean"] == pytest.approx(1.0)
    assert s["sharing_nearest"] == pytest.approx(1.0)
    u = locality_summary(torch.ones(2, 1, 28, 28), k=9)
    assert u["pr_mean"] == pytest.approx(784.0)
