"""Recursive Feature Machines: kernel ridge regression whose Mahalanobis metric is the predictor's AGOP.

Example
-------
>>> import numpy as np
>>> from convemerge.kernels import RFMClassifier
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 10)); y = (X[:, 0] > 0).astype(int)
>>> clf = RFMClassifier(n_iter=2, random_state=0).fit(X, y)
>>> clf.M_.shape, len(clf.history_)
(torch.Size([10, 10]), 3)
"""

from __future__ import annotations

from sklearn.base import ClassifierMixin, RegressorMixin

from convemerge.errors import ConfigError

from ._estimator import KernelClassifierMixin, KernelFeatureLearner, KernelRegressorMixin
from .mahalanobis import make_mahalanobis_kernel


class _BaseRFM(KernelFeatureLearner):
    """Parameters (shared by :class:`RFMClassifier` and :class:`RFMRegressor`)

    bandwidth: the kernel length scale L (default 10).
    reg: the ridge λ (default 1e-3), or ``"auto"`` to choose it with the round from ``REG_GRID`` on validation.
    n_iter: number of AGOP updates; rounds 0..n_iter are fitted and the best is chosen on validation.
    kernel: ``"laplace"`` (exp(−‖x−z‖_M/L)) or ``"gaussian"`` (exp(−‖x−z‖²_M/(2L²))).
    diag: learn only the diagonal of M.
    agop_power: M = AGOP**power (1.0, or 0.5 for the square root).
    centering: subtract the mean gradient of each output before the outer product (gradient covariance).
    normalize: how M is rescaled after each update — ``"max"`` (top eigenvalue 1), ``"frobenius"``
        (‖M‖_F = √d), ``"trace"`` (tr M = d) or ``"none"``; each makes M as large as the identity it replaces.
    solver: ``"auto"`` (default: Cholesky, in place once two n×n matrices no longer fit in memory, EigenPro
        beyond; see :mod:`.solvers`), ``"solve"`` (LU), ``"cholesky"`` or ``"eigenpro"`` (EigenPro 2, for large n;
        ``solver_options``: epochs, subsample_size, n_components, batch_size, damping, tol, eval_size).
    agop_sample_size: number of training points the AGOP is averaged over (None: all).
    validation_fraction: share of the training data held out to choose the round (0 or None: last round).
    random_state, device (None: CUDA when available), dtype (default ``"float64"``; ``"float32"`` has the same
        test accuracy on MNIST at about half the time — pass it for speed; see docs/kernels.md, Precision),
    block_elements: memory budget of one block, in tensor elements (None: 2**25).
    verbose: print each round's metrics and timings as it finishes.

    Fitted attributes: ``M_`` (d×d, or (d,) when diag), ``last_metric_`` (the last round's M at the chosen ridge,
    whichever round validation chose), ``coef_`` (dual weights, n×outputs), ``X_fit_``,
    ``history_`` (one dict per (reg, round): train/val MSE (and accuracy), seconds in kernel/solve/AGOP),
    ``best_iter_``, ``reg_``, ``train_metrics_`` (of the refitted model on all training data), ``refit_time_``,
    ``n_features_in_`` (and ``classes_`` for the classifier).
    """

    def __init__(self, bandwidth=10.0, reg=1e-3, n_iter=5, kernel="laplace", diag=False, agop_power=1.0,
                 centering=False, normalize="max", solver="auto", solver_options=None, agop_sample_size=None,
                 validation_fraction=0.1, random_state=None, device=None, dtype="float64", block_elements=None,
                 verbose=0):
        self.bandwidth = bandwidth
        self.reg = reg
        self.n_iter = n_iter
        self.kernel = kernel
        self.diag = diag
        self.agop_power = agop_power
        self.centering = centering
        self.normalize = normalize
        self.solver = solver
        self.solver_options = solver_options
        self.agop_sample_size = agop_sample_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.block_elements = block_elements
        self.verbose = verbose

    def _check_extra_params(self):
        if self.kernel not in ("laplace", "gaussian"):
            raise ConfigError(f"kernel={self.kernel!r} is not 'laplace' or 'gaussian'")
        if not float(self.bandwidth) > 0:
            raise ConfigError(f"bandwidth={self.bandwidth!r} must be > 0")

    def _make_kernel(self, M):
        return make_mahalanobis_kernel(self.kernel, M, float(self.bandwidth), block_elements=self._block)


class RFMClassifier(KernelClassifierMixin, ClassifierMixin, _BaseRFM):
    __doc__ = "Recursive Feature Machine classifier (one-hot kernel ridge regression).\n\n" + _BaseRFM.__doc__


class RFMRegressor(KernelRegressorMixin, RegressorMixin, _BaseRFM):
    __doc__ = "Recursive Feature Machine regressor (single or multi-output).\n\n" + _BaseRFM.__doc__

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
