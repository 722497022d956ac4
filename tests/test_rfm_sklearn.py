"""scikit-learn API conformance of the RFM estimators: the generic checks, Pipeline and GridSearchCV."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from convemerge.kernels import RFMClassifier, RFMRegressor


@parametrize_with_checks([RFMClassifier(n_iter=1, random_state=0), RFMRegressor(n_iter=1, random_state=0),
                          RFMClassifier(n_iter=1, diag=True, kernel="gaussian", reg="auto", random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _xor(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def test_pipeline_and_grid_search():
    X, y = _xor(240, 0)
    pipe = make_pipeline(StandardScaler(), RFMClassifier(n_iter=2, random_state=0))
    grid = GridSearchCV(pipe, {"rfmclassifier__bandwidth": [3.0, 10.0]}, cv=2).fit(X, y)
    assert grid.best_params_["rfmclassifier__bandwidth"] in (3.0, 10.0)
    Xt, yt = _xor(200, 1)
    assert grid.score(Xt, yt) > 0.75
