"""The fitting loop shared by RFM, ConvRFM and Deep ConvRFM (scikit-learn conventions).

One round: fit kernel ridge regression with the current metric M, record train/validation metrics, then set
``M ← normalize(AGOP^power)``. Rounds 0..n_iter are recorded (round 0 uses M = I). The round — and, with
``reg="auto"``, the ridge from :data:`REG_GRID` — is chosen on a validation split carved from the training
data (stratified for classifiers); the test set is never seen. With the chosen M and ridge the model is then
refitted on **all** training data (M itself was learned on the training part of the split and is kept as is).
``validation_fraction=0`` (or a training set too small to split) disables the choice: the last round is used.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from convemerge.errors import ConfigError

from ._utils import DEFAULT_BLOCK_ELEMENTS, identity_metric, normalize_metric, psd_power, resolve_device, resolve_dtype, to_tensor
from .eigenpro import eigenpro_solve
from .solvers import check_solver, cholesky_in_place, choose_solver, solve_regularized

#: ridge values tried when ``reg="auto"``
REG_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
_EIGENPRO_OPTIONS = {"epochs", "subsample_size", "n_components", "batch_size", "damping", "tol", "eval_size"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def validation_split(n: int, fraction: float | None, labels: np.ndarray | None, rng: np.random.RandomState):
    """Indices ``(train, val)`` of a seeded hold-out (stratified when ``labels`` allow it), or None."""
    if not fraction:
        return None
    n_val = int(math.ceil(fraction * n))
    if n_val < 1 or n - n_val < 2:
        return None
    idx = np.arange(n)
    stratify = None
    if labels is not None:
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and min(n_val, n - n_val) >= len(counts):
            stratify = labels
    tr, va = train_test_split(idx, test_size=n_val, stratify=stratify, random_state=rng)
    return np.sort(tr), np.sort(va)


class KernelFeatureLearner(BaseEstimator):
    """Base class; subclasses define ``__init__`` (storing their parameters), ``_metric_dim`` and ``_make_kernel``."""

    _classifier = False
    _default_normalize = "max"

    # -- hooks ------------------------------------------------------------------------------------------------
    def _metric_dim(self, n_features: int) -> int:
        return n_features

    def _make_kernel(self, M: torch.Tensor | None):
        raise NotImplementedError

    def _check_extra_params(self) -> None:
        """Validate subclass-specific parameters (raise ConfigError)."""

    def _reshape_input(self, X, reset: bool):
        """Turn the user's X into a 2-D array-like (subclasses accept images)."""
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        return X

    @property
    def _diag_metric(self) -> bool:
        return bool(getattr(self, "diag", False))

    # -- parameter checks ------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not (isinstance(self.n_iter, (int, np.integer)) and self.n_iter >= 0):
            raise ConfigError(f"n_iter={self.n_iter!r} must be an integer >= 0")
        if isinstance(self.reg, str):
            if self.reg != "auto":
                raise ConfigError(f"reg={self.reg!r} must be a positive number or 'auto'")
        elif not (float(self.reg) >= 0):
            raise ConfigError(f"reg={self.reg!r} must be >= 0 or 'auto'")
        if not float(self.agop_power) > 0:
            raise ConfigError(f"agop_power={self.agop_power!r} must be > 0 (1.0 = AGOP, 0.5 = its square root)")
        vf = self.validation_fraction
        if vf is not None and not (0 <= float(vf) < 1):
            raise ConfigError(f"validation_fraction={vf!r} must lie in [0, 1)")
        if self.agop_sample_size is not None and int(self.agop_sample_size) < 1:
            raise ConfigError(f"agop_sample_size={self.agop_sample_size!r} must be None or >= 1")
        check_solver(self.solver)
        if getattr(self, "normalize_kernel", False) and self.solver == "eigenpro":
            raise ConfigError("normalize_kernel=True needs the kernel matrix; use solver='solve' or 'cholesky'")
        opts = self.solver_options or {}
        unknown = set(opts) - _EIGENPRO_OPTIONS
        if unknown:
            raise ConfigError(f"solver_options has unknown keys {sorted(unknown)}; known: {sorted(_EIGENPRO_OPTIONS)}")
        normalize = self.normalize if self.normalize is not None else "none"
        normalize_metric(torch.eye(1), normalize)  # validates the name
        self._check_extra_params()

    # -- data --------------------------------------------------------------------------------------------------
    def _setup(self):
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)
        self._block = int(self.block_elements or DEFAULT_BLOCK_ELEMENTS)

    def _validate_fit_data(self, X, y):
        X = self._reshape_input(X, reset=True)
        if self._classifier:
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
            check_classification_targets(y)
            self.classes_, y_idx = np.unique(y, return_inverse=True)
            Y = np.zeros((len(y_idx), len(self.classes_)))
            Y[np.arange(len(y_idx)), y_idx] = 1.0
            return X, Y, y_idx
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_ndim = y.ndim
        Y = y.reshape(len(y), -1)
        return X, Y, None

    def _transform_input(self, X) -> torch.Tensor:
        check_is_fitted(self, "coef_")
        X = self._reshape_input(X, reset=False)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return to_tensor(X, self.coef_.dtype, self.coef_.device)

    # -- the loop ------------------------------------------------------------------------------------------------
    def _solve(self, kernel, X, Y, reg, gen, timing):
        device = X.device
        solver = self.solver
        if solver == "auto":
            solver = choose_solver(len(X), X.dtype, device)
        if solver == "cholesky-inplace" and not getattr(self, "normalize_kernel", False):
            t0 = time.perf_counter()
            K = kernel.matrix(X)
            t1 = time.perf_counter()
            coef = cholesky_in_place(K, Y, reg)
            del K
            timing["kernel"] += t1 - t0
            timing["solve"] += time.perf_counter() - t1
            return coef, Y - reg * coef  # K α = Y − λα: the training predictions without K
        if solver == "cholesky-inplace":
            solver = "cholesky"
        if solver == "eigenpro":
            t0 = time.perf_counter()
            coef, _ = eigenpro_solve(kernel, X, Y, reg, generator=gen, **(self.solver_options or {}))
            _sync(device)
            timing["solve"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            pred = kernel.predict(X, X, coef)
            _sync(device)
            timing["kernel"] += time.perf_counter() - t0
            return coef, pred
        t0 = time.perf_counter()
        K = kernel.matrix(X)
        _sync(device)
        t1 = time.perf_counter()
        if getattr(self, "normalize_kernel", False):
            # K/max(K) with ridge λ has the solution max(K)·α of K with ridge λ·max(K): same predictions
            reg = reg * float(K.max())
        coef = solve_regularized(K, Y, reg, solver)
        _sync(device)
        timing["kernel"] += t1 - t0
        timing["solve"] += time.perf_counter() - t1
        return coef, K @ coef

    def _metrics(self, pred: torch.Tensor, Y: torch.Tensor, prefix: str) -> dict:
        out = {f"{prefix}_mse": float(((pred - Y) ** 2).mean())}
        if self._classifier:
            out[f"{prefix}_accuracy"] = float((pred.argmax(1) == Y.argmax(1)).double().mean())
        return out

    def _score(self, rec: dict) -> tuple:
        if self._classifier:
            return (rec["val_accuracy"], -rec["val_mse"])
        return (-rec["val_mse"],)

    def _update_metric(self, kernel, X, coef, gen) -> torch.Tensor:
        n = len(X)
        if self.agop_sample_size is not None and int(self.agop_sample_size) < n:
            idx = torch.randperm(n, generator=gen)[: int(self.agop_sample_size)].to(X.device)
            Xe = X[idx]
        else:
            Xe = X
        G = kernel.agop(Xe, X, coef, centering=bool(self.centering), diag=self._diag_metric)
        M = psd_power(G, float(self.agop_power))
        return normalize_metric(M, self.normalize if self.normalize is not None else "none")

    def _trajectory(self, Xtr, Ytr, Xva, Yva, reg, gen, dim):
        """Rounds 0..n_iter on the training part; returns a list of (M, record)."""
        M = identity_metric(dim, self._diag_metric, Xtr.dtype, Xtr.device)
        out = []
        for t in range(int(self.n_iter) + 1):
            timing = {"kernel": 0.0, "solve": 0.0, "agop": 0.0}
            kernel = self._make_kernel(M)
            coef, train_pred = self._solve(kernel, Xtr, Ytr, reg, gen, timing)
            rec = {"iteration": t, "reg": float(reg)}
            rec.update(self._metrics(train_pred, Ytr, "train"))
            if Xva is not None:
                t0 = time.perf_counter()
                rec.update(self._metrics(kernel.predict(Xva, Xtr, coef), Yva, "val"))
                _sync(Xtr.device)
                timing["kernel"] += time.perf_counter() - t0
            out.append((M, coef, rec))
            if t < int(self.n_iter):
                t0 = time.perf_counter()
                M = self._update_metric(kernel, Xtr, coef, gen)
                _sync(Xtr.device)
                timing["agop"] += time.perf_counter() - t0
            rec.update({f"time_{k}": v for k, v in timing.items()})
            if getattr(self, "verbose", 0):
                self._report(rec)
        return out

    def _report(self, rec: dict) -> None:
        level = getattr(self, "_level", None)  # set by Deep ConvRFM while it fits a level
        level = f" level {level}" if level is not None else ""
        metrics = "  ".join(f"{k}={v:.4g}" for k, v in rec.items() if k.endswith(("_accuracy", "_mse")))
        times = "  ".join(f"{k[5:]}={v:.1f}s" for k, v in rec.items() if k.startswith("time_"))
        print(f"[{type(self).__name__}{level}] reg={rec['reg']:g} round {rec['iteration']}: {metrics}  {times}",
              flush=True)

    def _split_tensors(self, X, Y, split):
        if split is None:
            return X, Y, None, None
        tr = torch.as_tensor(split[0], device=X.device)
        va = torch.as_tensor(split[1], device=X.device)
        return X[tr], Y[tr], X[va], Y[va]

    def _choose(self, X, Y, split, gen, dim):
        """Run the rounds (for every ridge of the grid) on the training part and choose on validation.

        Returns ``(M, coef, record, history, last)``; ``coef`` was fitted on the training part only and ``last`` is
        the metric of the last round at the chosen ridge (whichever round was chosen).
        """
        Xtr, Ytr, Xva, Yva = self._split_tensors(X, Y, split)
        regs = REG_GRID if isinstance(self.reg, str) else (float(self.reg),)
        history, best, best_score = [], None, None
        for reg in regs:
            trajectory = self._trajectory(Xtr, Ytr, Xva, Yva, reg, gen, dim)
            last = trajectory[-1][0]
            for M, coef, rec in trajectory:
                history.append(rec)
                if split is None:
                    best = (M, coef, rec, last)  # the last round (of the last reg; reg="auto" needs validation)
                    continue
                score = self._score(rec)
                if best_score is None or score > best_score:
                    best, best_score = (M, coef, rec, last), score
        M, coef, rec, last = best
        return M, coef, rec, history, last

    def _fit_tensors(self, X: torch.Tensor, Y: torch.Tensor, labels, rng, gen) -> None:
        """Run the rounds, choose on validation, refit on all of X; sets the fitted attributes."""
        dim = self._metric_dim(X.shape[1])
        split = validation_split(len(X), self.validation_fraction, labels, rng)
        M, coef, rec, history, last = self._choose(X, Y, split, gen, dim)
        t0 = time.perf_counter()
        coef = self._refit(M, coef, rec, X, Y, split, gen)
        self.refit_time_ = time.perf_counter() - t0
        self.M_ = M
        self.last_metric_ = last
        self.coef_ = coef
        self.X_fit_ = X
        self.history_ = history
        self.best_iter_ = int(rec["iteration"])
        self.reg_ = float(rec["reg"])

    def _refit(self, M, coef, rec, X, Y, split, gen):
        """Refit on all of X with the chosen M and ridge; records ``train_metrics_`` (on all of X)."""
        if split is None:
            self.train_metrics_ = {k[len("train_"):]: v for k, v in rec.items() if k.startswith("train_")}
            return coef
        timing = {"kernel": 0.0, "solve": 0.0, "agop": 0.0}
        coef, pred = self._solve(self._make_kernel(M), X, Y, rec["reg"], gen, timing)
        self.train_metrics_ = {k[len("train_"):]: v for k, v in self._metrics(pred, Y, "train").items()}
        return coef

    def _rng(self):
        rng = check_random_state(self.random_state)
        gen = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        return rng, gen

    def fit(self, X, y):
        """Fit on arrays ``X`` (n, d) and targets ``y``; returns self."""
        self._check_params()
        self._setup()
        X, Y, labels = self._validate_fit_data(X, y)
        rng, gen = self._rng()
        Xt = to_tensor(X, self._dtype, self._device)
        Yt = to_tensor(Y, self._dtype, self._device)
        self._fit_tensors(Xt, Yt, labels, rng, gen)
        return self

    def _raw_predict(self, X) -> torch.Tensor:
        Xt = self._transform_input(X)
        kernel = self._make_kernel(self.M_)
        return kernel.predict(Xt, self.X_fit_, self.coef_)


class KernelClassifierMixin:
    """decision_function / predict for one-hot kernel regression classifiers."""

    _classifier = True

    def decision_function(self, X) -> np.ndarray:
        """Scores (n, n_classes); for two classes the difference score[1] − score[0], shape (n,)."""
        s = self._raw_predict(X).cpu().numpy()
        if s.shape[1] == 2:
            return s[:, 1] - s[:, 0]
        if s.shape[1] == 1:
            return s[:, 0]
        return s

    def predict(self, X) -> np.ndarray:
        s = self._raw_predict(X)
        return self.classes_[s.argmax(1).cpu().numpy()]


class KernelRegressorMixin:
    _classifier = False

    def predict(self, X) -> np.ndarray:
        p = self._raw_predict(X).cpu().numpy()
        return p[:, 0] if self._y_ndim == 1 else p
