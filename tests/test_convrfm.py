"""ConvRFM / Deep ConvRFM behaviour, and the edge-detector helpers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from convemerge.errors import ConfigError
from convemerge.kernels import ConvolutionalKernel, ConvRFMClassifier, DeepConvRFMClassifier, solve_regularized
from convemerge.kernels._utils import normalize_metric, psd_power
from convemerge.kernels.convrfm import featurize, random_filters
from convemerge.kernels.edges import metric_eigenpatches, patch_norm_map
from convemerge.kernels.plots import plot_eigenpatches, plot_patch_norm_maps

D64 = torch.float64


def _row_task(n, H=8, W=12, seed=0):
    """Gaussian noise with one random row replaced by ±3·1/√W: label = the sign (a local, oriented signal)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 1, H, W, generator=g, dtype=D64)
    y = torch.randint(0, 2, (n,), generator=g)
    rows = torch.randint(0, H, (n,), generator=g)
    X[torch.arange(n), 0, rows, :] = (2 * y - 1).double()[:, None] * 3 / W**0.5
    return X, y


def test_image_and_flattened_inputs_agree():
    X, y = _row_task(40)
    a = ConvRFMClassifier(depth=2, n_iter=1, random_state=0).fit(X, y)
    b = ConvRFMClassifier(depth=2, n_iter=1, image_shape=(1, 8, 12), random_state=0).fit(X.flatten(1).numpy(), y)
    assert a.image_shape_ == b.image_shape_ == (1, 8, 12)
    torch.testing.assert_close(a.M_, b.M_)
    np.testing.assert_allclose(a.decision_function(X[:5]), b.decision_function(X[:5].flatten(1)))
    with pytest.raises(ConfigError):
        a.predict(torch.zeros(2, 1, 12, 8))
    with pytest.raises(ConfigError):
        ConvRFMClassifier(image_shape=(1, 5, 5)).fit(X.flatten(1), y)


@pytest.mark.parametrize("kind", ["cntk", "patch-laplace"])
def test_metric_update_is_normalised_patch_agop_power(kind):
    X, y = _row_task(30)
    est = ConvRFMClassifier(kernel=kind, depth=2, n_iter=1, validation_fraction=0, random_state=0).fit(X, y)
    Xf = X.flatten(1)
    Y = torch.nn.functional.one_hot(y).double()
    k0 = ConvolutionalKernel((1, 8, 12), kind=kind, depth=2)
    coef = solve_regularized(k0.matrix(Xf), Y, 1e-3)
    M = normalize_metric(psd_power(k0.agop(Xf, Xf, coef), 0.5), "frobenius")
    torch.testing.assert_close(est.M_, M)
    assert torch.linalg.matrix_norm(est.M_).item() == pytest.approx(3.0)  # ‖M‖_F = ‖I_9‖_F


def test_learns_an_anisotropic_metric_on_a_local_signal():
    X, y = _row_task(120)
    Xt, yt = _row_task(300, seed=1)
    est = ConvRFMClassifier(kernel="patch-laplace", n_iter=2, random_state=0).fit(X, y)
    vals = torch.linalg.eigvalsh(est.M_)
    assert vals[-1] > 2 * vals[-2]
    assert est.score(Xt, yt) > 0.7
    assert len(est.history_) == 3 and 0 <= est.best_iter_ <= 2


def test_random_filters_reproduce_the_metric():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(9, 9, generator=g, dtype=D64)
    M = A @ A.T / 9
    W = random_filters(M, 20000, torch.Generator().manual_seed(1))
    assert W.shape == (20000, 9)
    assert (torch.linalg.matrix_norm(W.T @ W - M) / torch.linalg.matrix_norm(M)).item() < 0.05
    x = torch.randn(3, 2 * 5 * 5, dtype=D64)
    f = featurize(x, torch.randn(4, 18, dtype=D64), (2, 5, 5), 3)
    assert f.shape == (3, 4 * 25) and (f >= 0).all()


def test_deep_convrfm_levels():
    X, y = _row_task(50)
    est = DeepConvRFMClassifier(depth=2, width=6, n_iter=1, random_state=0).fit(X, y)
    assert [tuple(M.shape) for M in est.Ms_] == [(9, 9), (54, 54)]
    assert len(est.filters_) == 1 and est.filters_[0].shape == (6, 9)
    assert {h["level"] for h in est.history_} == {0, 1}
    assert est.predict(X[:4]).shape == (4,)
    assert est.score(X, y) > 0.9  # training accuracy of the refitted kernel machine


def test_eigenpatches_and_norm_maps():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(18, 18, generator=g, dtype=D64)
    M = A @ A.T
    vals, patches = metric_eigenpatches(M, (2, 3, 3), k=18)
    assert patches.shape == (18, 2, 3, 3) and (vals[:-1] >= vals[1:]).all()
    V = patches.reshape(18, 18)
    torch.testing.assert_close(V.T @ torch.diag(vals) @ V, M)  # the eigenpairs rebuild M
    img = torch.randn(2, 5, 6, generator=g, dtype=D64)
    maps = patch_norm_map(M, img, 3)
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
    for (py, px) in [(0, 0), (2, 3), (4, 5)]:
        p = padded[:, py : py + 3, px : px + 3].reshape(-1)
        assert maps[py, px].item() == pytest.approx(float(p @ M @ p) ** 0.5)
    with pytest.raises(ConfigError):
        metric_eigenpatches(M, (1, 3, 3))


def test_plots_render():
    M = torch.eye(9, dtype=D64)
    for fig in (plot_eigenpatches(M, (1, 3, 3), k=4), plot_patch_norm_maps(M, torch.randn(2, 1, 6, 6), 3)):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eigenpatch_signs_are_drawn_on_a_zero_centred_scale():
    """A near-constant top eigenvector (an averaging filter) must look constant, not like noise: one channel is
    drawn on a diverging scale symmetric about zero, never min–max stretched."""
    u = torch.full((9,), 1 / 3, dtype=D64) + 1e-3 * torch.arange(9, dtype=D64)
    u = u / u.norm()
    M = torch.eye(9, dtype=D64) + 2 * torch.outer(u, u)
    fig = plot_eigenpatches(M, (1, 3, 3), k=2)
    im = fig.axes[0].images[0]
    lo, hi = im.get_clim()
    data = im.get_array()
    assert lo == -hi and hi == pytest.approx(float(abs(data).max()))
    assert float(data.min()) / float(data.max()) > 0.9  # all of one sign and nearly equal: it reads as uniform


@pytest.mark.parametrize("cls", [ConvRFMClassifier, DeepConvRFMClassifier])
def test_last_metric_is_the_last_rounds_whichever_round_validation_chose(cls):
    """``last_metric_`` (Deep: ``last_metrics_``) is the metric of the last round at the chosen ridge: a fit whose
    rule keeps round 0 (M = I) still exposes the metric that a fit choosing the last round uses."""
    X, y = _row_task(48)
    opts = dict(kernel="patch-laplace", depth=2, n_iter=2, validation_fraction=0.25, random_state=0)
    if cls is DeepConvRFMClassifier:
        opts["width"] = 4

    class First(cls):
        def _score(self, rec):
            return (-rec["iteration"],)

    class Last(cls):
        def _score(self, rec):
            return (rec["iteration"],)

    first, last = First(**opts).fit(X, y), Last(**opts).fit(X, y)
    M_first = first.Ms_[0] if cls is DeepConvRFMClassifier else first.M_
    M_last = last.Ms_[0] if cls is DeepConvRFMClassifier else last.M_
    lm_first = first.last_metrics_[0] if cls is DeepConvRFMClassifier else first.last_metric_
    lm_last = last.last_metrics_[0] if cls is DeepConvRFMClassifier else last.last_metric_
    torch.testing.assert_close(M_first, torch.eye(9, dtype=D64))
    assert not torch.allclose(M_last, torch.eye(9, dtype=D64))
    torch.testing.assert_close(lm_first, M_last)
    torch.testing.assert_close(lm_last, M_last)
