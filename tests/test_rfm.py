"""RFM behaviour: the metric update is normalize(AGOP^power) of the fitted predictor, the round is chosen on
validation and refitted on all data, options (diag, gaussian, reg="auto", eigenpro, float32) work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convemerge.errors import ConfigError
from convemerge.kernels import LaplaceKernel, RFMClassifier, RFMRegressor, solve_regularized
from convemerge.kernels._utils import normalize_metric, psd_power


def _xor(n, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def test_learns_the_relevant_subspace_and_beats_the_plain_kernel():
    X, y = _xor(400)
    Xt, yt = _xor(1000, seed=1)
    rfm = RFMClassifier(n_iter=3, random_state=0).fit(X, y)
    plain = RFMClassifier(n_iter=0, random_state=0).fit(X, y)
    assert rfm.score(Xt, yt) > plain.score(Xt, yt) + 0.1
    vals, vecs = torch.linalg.eigh(rfm.M_)
    top2 = vecs[:, -2:]
    assert (top2[:2] ** 2).sum().item() > 1.8  # the top-2 eigenspace is (almost) span(e0, e1)


@pytest.mark.parametrize("power", [1.0, 0.5])
@pytest.mark.parametrize("centering", [False, True])
def test_metric_update_is_normalised_agop_power(power, centering):
    X, y = _xor(120, d=5)
    est = RFMClassifier(n_iter=1, agop_power=power, centering=centering, validation_fraction=0, dtype="float64",
                        random_state=0).fit(X, y)  # float64: the formula is checked to rounding
    Xt = torch.as_tensor(X)
    Y = torch.nn.functional.one_hot(torch.as_tensor(y)).double()
    k0 = LaplaceKernel(None, 10.0)
    coef0 = solve_regularized(k0.matrix(Xt), Y, 1e-3)
    G = k0.agop(Xt, Xt, coef0, centering=centering)
    M = normalize_metric(psd_power(G, power), "max")
    torch.testing.assert_close(est.M_, M)
    assert est.best_iter_ == 1 and len(est.history_) == 2


def test_round_chosen_on_validation_then_refitted_on_all_data():
    X, y = _xor(200)
    est = RFMClassifier(n_iter=3, random_state=0).fit(X, y)
    assert [h["iteration"] for h in est.history_] == [0, 1, 2, 3]
    best = max(est.history_, key=lambda h: (h["val_accuracy"], -h["val_mse"]))
    assert est.best_iter_ == best["iteration"]
    assert est.coef_.shape == (200, 2) and est.X_fit_.shape == (200, 8)  # refitted on all 200, not the 180
    assert all(h["time_kernel"] >= 0 and h["time_solve"] >= 0 and h["time_agop"] >= 0 for h in est.history_)
    # a second fit with the same random_state is identical
    again = RFMClassifier(n_iter=3, random_state=0).fit(X, y)
    torch.testing.assert_close(again.M_, est.M_)


def test_reg_auto_chooses_from_the_grid():
    from convemerge.kernels._estimator import REG_GRID

    X, y = _xor(150)
    est = RFMClassifier(n_iter=1, reg="auto", random_state=0).fit(X, y)
    assert est.reg_ in REG_GRID
    assert len(est.history_) == 2 * len(REG_GRID)


def test_diag_gaussian_float32_and_eigenpro():
    X, y = _xor(300)
    Xt, yt = _xor(500, seed=2)
    diag = RFMClassifier(n_iter=2, diag=True, kernel="gaussian", bandwidth=3.0, random_state=0).fit(X, y)
    assert diag.M_.shape == (8,) and diag.score(Xt, yt) > 0.8
    f32 = RFMClassifier(n_iter=2, dtype="float32", random_state=0).fit(X, y)
    assert f32.M_.dtype == torch.float32
    direct = RFMRegressor(n_iter=1, reg=0.1, validation_fraction=0, random_state=0).fit(X, X[:, 0] * X[:, 1])
    ep = RFMRegressor(n_iter=1, reg=0.1, validation_fraction=0, random_state=0, solver="eigenpro",
                      solver_options={"epochs": 30, "batch_size": 100}).fit(X, X[:, 0] * X[:, 1])
    p1, p2 = direct.predict(Xt), ep.predict(Xt)
    assert np.linalg.norm(p1 - p2) / np.linalg.norm(p1) < 0.05


def test_regressor_multi_output_shapes():
    X, _ = _xor(100)
    Y = np.stack([X[:, 0], X[:, 1] ** 2], 1)
    est = RFMRegressor(n_iter=1, random_state=0).fit(X, Y)
    assert est.predict(X[:7]).shape == (7, 2)
    assert RFMRegressor(n_iter=1, random_state=0).fit(X, Y[:, 0]).predict(X[:7]).shape == (7,)


@pytest.mark.parametrize("bad", [dict(kernel="cosine"), dict(reg="big"), dict(agop_power=0), dict(n_iter=-1),
                                 dict(validation_fraction=1.0), dict(normalize="l1"), dict(solver="qr"),
                                 dict(solver_options={"lr": 1}), dict(bandwidth=0), dict(dtype="float16")])
def test_bad_parameters_raise_config_error_at_fit(bad):
    est = RFMClassifier(**bad)  # __init__ only stores
    X, y = _xor(30)
    with pytest.raises(ConfigError):
        est.fit(X, y)
