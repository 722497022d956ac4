"""API surprises that are no longer surprises: BetaLasso that is SGD says so, create_model names what is
missing, predicting leaves an estimator as it was, and the geometry hint does not read error text."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from convemerge.errors import ChecksumError, ConfigError, GeometryError
from convemerge.models import create_model
from convemerge.optim import BetaLasso, create_optimizer


def test_beta_lasso_with_lam_zero_everywhere_warns_that_it_is_sgd():
    with pytest.warns(UserWarning, match="plain SGD"):
        BetaLasso([nn.Parameter(torch.zeros(2))], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BetaLasso([nn.Parameter(torch.zeros(2))], lr=0.1, lam=1e-3, beta=50.0)


def test_create_model_without_geometry_is_one_line_naming_the_missing_arguments():
    with pytest.raises(ConfigError) as info:
        create_model("s-fc")
    msg = str(info.value)
    assert "image_size" in msg and "in_chans" in msg and "num_classes" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="num_classes") as info:
        create_model("s-fc", image_size=8, in_chans=1)
    assert "image_size" not in str(info.value).split("(")[0]


def test_impossible_geometry_is_a_geometry_error():
    with pytest.raises(GeometryError, match="divisible by 16"):
        create_model("d-conv", alpha=1, image_size=28, in_chans=1, num_classes=10)


def test_checksum_error_carries_its_detail():
    assert ChecksumError("x: long message; advice", detail="expected a, got b").detail == "expected a, got b"


def test_create_optimizer_rejects_unknown_names():
    with pytest.raises(ConfigError, match="sgd, adam, beta-lasso"):
        create_optimizer("lbfgs", nn.Linear(2, 2), lr=0.1)


def test_deep_convrfm_predict_has_no_side_effects():
    from convemerge.kernels import DeepConvRFMClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 1, 6, 6))
    y = (X[:, 0, 2, 2] > 0).astype(int)
    est = DeepConvRFMClassifier(depth=2, width=4, n_iter=1, kernel="patch-laplace", random_state=0).fit(X, y)
    est._level = 0  # whatever a caller left there, predict must neither depend on nor change it
    before = {k: copy.copy(v) for k, v in vars(est).items()}
    pred = est.predict(X[:5])
    assert vars(est).keys() == before.keys() and est._level == 0
    est._level = 1
    assert np.array_equal(est.predict(X[:5]), pred)
