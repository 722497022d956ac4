"""scikit-learn API conformance of ConvRFM and Deep ConvRFM (flattened input read as 1×1×d signals)."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from convemerge.kernels import ConvRFMClassifier, DeepConvRFMClassifier


@parametrize_with_checks([ConvRFMClassifier(depth=2, n_iter=1, random_state=0),
                          ConvRFMClassifier(kernel="patch-laplace", n_iter=1, random_state=0),
                          DeepConvRFMClassifier(depth=2, width=4, n_iter=1, random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
