"""scikit-learn API conformance of ConvRFM and Deep ConvRFM (flattened input read as 1×1×d signals)."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from convemerge.kernels import ConvRFMClassifier, DeepConvRFMClassifier


# The deep instance uses the CNN-GP: the CNTK has a cusp at x = z (like the Laplace kernel), so at a training
# point its value moves by ~√eps when BLAS rounding differs with the batch size, and the 36-dimensional level-1
# metric products do take batch-size-dependent GEMM paths; check_methods_subset_invariance (rtol 1e-7) then
# measures BLAS, not the estimator. The CNN-GP is Lipschitz there.
@parametrize_with_checks([ConvRFMClassifier(depth=2, n_iter=1, random_state=0),
                          ConvRFMClassifier(kernel="patch-laplace", n_iter=1, random_state=0),
                          DeepConvRFMClassifier(depth=2, width=4, n_iter=1, kernel="cnngp", random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
