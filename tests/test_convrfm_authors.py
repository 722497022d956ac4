"""ConvRFM / Deep ConvRFM as the authors build them: metric powers, VALID padding, the kernel normalised by its
largest training entry, and Deep ConvRFM's linear featurisation W = G·T."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convemerge.errors import ConfigError
from convemerge.kernels import ConvolutionalKernel, ConvRFMClassifier, DeepConvRFMClassifier, solve_regularized
from convemerge.kernels._utils import normalize_metric

from test_convrfm import D64, _row_task  # the local-signal toy task




@pytest.mark.parametrize("padding", ["same", "valid"])
def test_metric_is_the_agop_to_the_chosen_power(padding):
    """T = AGOP (power 2) gives the metric TᵀT = AGOP·AGOP; power 1 (-sqrtM) the AGOP itself; Frobenius-normalised."""
    X, y = _row_task(30)
    Xf = X.flatten(1)
    Y = torch.nn.functional.one_hot(y).double()
    k0 = ConvolutionalKernel((1, 8, 12), depth=2, padding=padding)
    G = k0.agop(Xf, Xf, solve_regularized(k0.matrix(Xf), Y, 1e-3))
    for power, by_hand in ((2.0, G @ G), (1.0, G)):
        est = ConvRFMClassifier(depth=2, n_iter=1, agop_power=power, padding=padding, validation_fraction=0,
                                random_state=0).fit(X, y)
        expected = by_hand * (3.0 / torch.linalg.matrix_norm(by_hand))  # ‖M‖_F = ‖I_9‖_F = 3
        torch.testing.assert_close(est.M_, expected, rtol=1e-8, atol=1e-10)
    assert not torch.allclose(normalize_metric(G @ G, "frobenius"), normalize_metric(G, "frobenius"), rtol=0.01)


def test_normalized_kernel_equals_dividing_by_the_largest_training_entry():
    X, y = _row_task(40)
    Xt, _ = _row_task(7, seed=1)
    est = ConvRFMClassifier(depth=2, n_iter=0, normalize_kernel=True, validation_fraction=0, reg=1e-2).fit(X, y)
    k = ConvolutionalKernel((1, 8, 12), depth=2)
    K = k.matrix(X.flatten(1))
    top = K.max()
    Y = torch.nn.functional.one_hot(y).double()
    alpha = torch.linalg.solve(K / top + 1e-2 * torch.eye(40, dtype=D64), Y)
    scores = (k.matrix(Xt.flatten(1), X.flatten(1)) / top) @ alpha
    np.testing.assert_allclose(est.decision_function(Xt), (scores[:, 1] - scores[:, 0]).numpy(), rtol=1e-8)
    plain = ConvRFMClassifier(depth=2, n_iter=0, validation_fraction=0, reg=1e-2).fit(X, y)
    assert not np.allclose(plain.decision_function(Xt), est.decision_function(Xt), rtol=1e-3)
    with pytest.raises(ConfigError, match="normalize_kernel"):
        ConvRFMClassifier(normalize_kernel=True, solver="eigenpro").fit(X, y)


def test_deep_convrfm_linear_valid_featurisation():
    X, y = _row_task(40, H=10, W=12)
    est = DeepConvRFMClassifier(depth=2, width=5, n_iter=1, features="linear", padding="valid",
                                random_state=0).fit(X, y)
    W = est.filters_[0]
    assert W.shape == (5, 9)
    feats = est._features(X.flatten(1), 1)
    by_hand = F.conv2d(X, W.reshape(5, 1, 3, 3)).flatten(1)  # linear: no ReLU, VALID: 8×10 positions
    torch.testing.assert_close(feats, by_hand)
    assert (feats < 0).any()
    assert est._level_shape(1) == (5, 8, 10)
    est._level = 1
    kernel = est._make_kernel(est.M_)
    assert kernel.depth == 1 and kernel.image_shape == (5, 8, 10) and kernel.padding == "valid"
    assert [tuple(M.shape) for M in est.Ms_] == [(9, 9), (45, 45)]
    assert est.predict(X[:3]).shape == (3,)
    with pytest.raises(ConfigError, match="features"):
        DeepConvRFMClassifier(features="tanh").fit(X, y)
    with pytest.raises(ConfigError, match="padding"):
        ConvRFMClassifier(padding="full").fit(X, y)
