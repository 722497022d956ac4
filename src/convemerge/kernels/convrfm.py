"""ConvRFM and Deep ConvRFM: convolutional kernel machines that learn a patch metric from their patch-AGOP.

Each round fits kernel ridge regression with a convolutional kernel (default: the CNTK of a depth-D vanilla
conv net) whose patch inner products use the metric M (c·q·q square), computes the patch-AGOP of the fitted
predictor over all training images (each patch treated as an independent input) and sets
``M = normalize(AGOP**agop_power)`` (Frobenius by default: ‖M‖_F = ‖I‖_F). Rounds and ridge are chosen on a
validation split of the training data and the model is refitted on all of it (see ``_estimator``).

Images may be passed as (n, C, H, W) arrays/tensors, or flattened (n, C·H·W) together with
``image_shape=(C, H, W)``; flattened input without ``image_shape`` is read as a 1×1×d image (a 1-D signal).

Example
-------
>>> import torch
>>> from convemerge.kernels import ConvRFMClassifier
>>> X = torch.randn(60, 1, 8, 8); y = (X[:, 0, 4, :].sum(1) > 0).long()
>>> clf = ConvRFMClassifier(depth=2, n_iter=1, random_state=0).fit(X, y)
>>> clf.M_.shape
torch.Size([9, 9])
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from convemerge.errors import ConfigError

from ._estimator import KernelClassifierMixin, KernelFeatureLearner, validation_split
from ._utils import psd_power, to_tensor
from .cntk import KINDS
from .cntk_fast import PADDINGS
from .conv import ConvolutionalKernel

_COMMON_DOC = """
    kernel: ``"cntk"`` (default), ``"cnngp"`` or ``"patch-laplace"`` (patch-averaged Laplace, cheaper).
    depth: conv layers D of the CNTK/CNN-GP. patch_size: q (odd). pool: k×k average pooling before the
        readout (None: flatten). bandwidth: L of patch-laplace.
    padding: ``"same"`` (default: zero padding, every layer H×W) or ``"valid"`` (the authors' choice: no padding,
        each conv layer loses q−1 rows and columns; not with pooling).
    normalize_kernel: divide the kernel by its largest entry on the training images before the solve (the
        authors' choice; the same as multiplying the ridge by that entry). Default False.
    reg, n_iter, agop_power (default 0.5: M = AGOP^{1/2}; the authors use 2, i.e. T = AGOP and metric TᵀT, or 1
        with their ``-sqrtM``), centering, normalize (default "frobenius"),
    solver, solver_options, agop_sample_size (None: the AGOP is averaged over ALL training images),
    validation_fraction, random_state, device, dtype, block_elements, verbose: as for the RFM estimators.
    image_shape: (C, H, W) of flattened input.
"""


class _ImageInput:
    """Accept (n, C, H, W) or flattened input; resolve the image shape at fit."""

    def _reshape_input(self, X, reset: bool):
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        ndim = getattr(X, "ndim", None)
        shape = tuple(int(s) for s in X.shape[1:]) if ndim == 4 else None
        if reset:
            self._input_shape = shape
        elif shape is not None and shape != tuple(self.image_shape_):
            raise ConfigError(f"images of shape {shape} do not match the fitted shape {tuple(self.image_shape_)}")
        return X.reshape(len(X), -1) if ndim == 4 else X

    def _resolve_shape(self, d: int) -> tuple[int, int, int]:
        shape = getattr(self, "_input_shape", None)
        if shape is None:
            shape = tuple(int(s) for s in self.image_shape) if self.image_shape is not None else (1, 1, d)
        if len(shape) != 3 or math.prod(shape) != d:
            raise ConfigError(f"image_shape={shape} does not match {d} input features; give (C, H, W) with C·H·W = {d}")
        return shape

    def _check_conv_params(self):
        if self.kernel not in KINDS:
            raise ConfigError(f"kernel={self.kernel!r} is not one of {KINDS}")
        if not (int(self.patch_size) >= 1 and int(self.patch_size) % 2 == 1):
            raise ConfigError(f"patch_size={self.patch_size!r} must be a positive odd integer")
        if int(self.depth) < 1:
            raise ConfigError(f"depth={self.depth!r} must be >= 1")
        if self.pool is not None and int(self.pool) < 1:
            raise ConfigError(f"pool={self.pool!r} must be None or >= 1")
        if not float(self.bandwidth) > 0:
            raise ConfigError(f"bandwidth={self.bandwidth!r} must be > 0")
        if self.padding not in PADDINGS:
            raise ConfigError(f"padding={self.padding!r} is not one of {PADDINGS}")
        if self.padding == "valid" and self.pool not in (None, 1):
            raise ConfigError("padding='valid' is not supported with pooling; use padding='same' or pool=None")


class ConvRFMClassifier(_ImageInput, KernelClassifierMixin, ClassifierMixin, KernelFeatureLearner):
    __doc__ = ("Convolutional Recursive Feature Machine (classifier).\n\n    Parameters\n" + _COMMON_DOC +
               "\n    Fitted: ``M_`` (c·q·q square), ``last_metric_`` (the last round's M, whichever round validation "
               "chose), ``coef_``, ``X_fit_`` (flattened), ``image_shape_``, ``history_``, ``best_iter_``, ``reg_``, "
               "``classes_``.\n")

    def __init__(self, kernel="cntk", depth=3, patch_size=3, pool=None, bandwidth=10.0, reg=1e-3, n_iter=5,
                 agop_power=0.5, centering=False, normalize="frobenius", solver="solve", solver_options=None,
                 agop_sample_size=None, validation_fraction=0.1, image_shape=None, random_state=None, device=None,
                 dtype="float64", block_elements=None, verbose=0, padding="same", normalize_kernel=False):
        self.padding = padding
        self.normalize_kernel = normalize_kernel
        self.kernel = kernel
        self.depth = depth
        self.patch_size = patch_size
        self.pool = pool
        self.bandwidth = bandwidth
        self.reg = reg
        self.n_iter = n_iter
        self.agop_power = agop_power
        self.centering = centering
        self.normalize = normalize
        self.solver = solver
        self.solver_options = solver_options
        self.agop_sample_size = agop_sample_size
        self.validation_fraction = validation_fraction
        self.image_shape = image_shape
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.block_elements = block_elements
        self.verbose = verbose

    def _check_extra_params(self):
        self._check_conv_params()

    def _metric_dim(self, d: int) -> int:
        self.image_shape_ = self._resolve_shape(d)
        return self.image_shape_[0] * int(self.patch_size) ** 2

    def _make_kernel(self, M):
        return ConvolutionalKernel(self.image_shape_, kind=self.kernel, patch_size=int(self.patch_size),
                                   depth=int(self.depth), pool=self.pool, M=M, bandwidth=float(self.bandwidth),
                                   block_elements=self._block, padding=self.padding)


def random_filters(M: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
    """Rows ``W = G M^{1/2}`` with ``G`` i.i.d. N(0, 1/width), so that ``E[WᵀW] = M``: shape (width, d)."""
    G = torch.randn(width, M.shape[0], generator=generator, dtype=torch.float64) / math.sqrt(width)
    return G.to(device=M.device, dtype=M.dtype) @ psd_power(M, 0.5)


def featurize(X: torch.Tensor, filters: torch.Tensor, image_shape, patch_size: int,
              block: int = 32, *, relu: bool = True, padding: str = "same") -> torch.Tensor:
    """``relu(conv(x, W))`` (or the linear ``conv(x, W)`` with ``relu=False``) for flattened images X:
    (n, C·H·W) → (n, width·H'·W'); 'same' padding keeps H×W, 'valid' gives (H−q+1)×(W−q+1).

    Every conv call sees exactly ``block`` images (the last block is zero-padded): convolution backends pick
    their algorithm by shape, so this makes an image's features independent of how many images come with it
    (predictions on a subset then equal the same rows of predictions on the whole set).
    """
    C, H, W = image_shape
    weight = filters.reshape(len(filters), C, patch_size, patch_size)
    conv_pad = patch_size // 2 if padding == "same" else 0
    Ho, Wo = (H, W) if padding == "same" else (H - patch_size + 1, W - patch_size + 1)
    parts = []
    for s in range(0, len(X), block):
        x = X[s : s + block]
        pad = block - len(x)
        if pad:
            x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
        f = F.conv2d(x.reshape(-1, C, H, W), weight, padding=conv_pad)
        f = (F.relu(f) if relu else f).flatten(1)
        parts.append(f[: block - pad])
    return torch.cat(parts) if parts else X.new_empty(0, len(filters) * Ho * Wo)


class DeepConvRFMClassifier(_ImageInput, KernelClassifierMixin, ClassifierMixin, KernelFeatureLearner):
    __doc__ = ("Deep ConvRFM: layer-wise ConvRFM.\n\n"
               "    Level ℓ = 0..depth−1 learns a patch metric M_ℓ with ConvRFM rounds on its input, using a conv\n"
               "    kernel of depth ``depth − ℓ``; the input of level ℓ+1 is ``relu(conv(input, W_ℓ))`` with fixed\n"
               "    random filters ``W_ℓ = G M_ℓ^{1/2}`` (``width`` of them, G Gaussian with variance 1/width, so\n"
               "    ``W_ℓᵀW_ℓ ≈ M_ℓ``). ``features='linear'`` drops the ReLU (the authors' featurisation: W = G·T with\n"
               "    TᵀT = M); with ``padding='valid'`` the conv is VALID too, so level ℓ sees (H−ℓ(q−1))×(W−ℓ(q−1))\n"
               "    images. The last level's kernel machine is the predictor. Every level chooses its\n"
               "    round on the same validation split; the final kernel ridge regression is refitted on all\n"
               "    training data. Memory: the level inputs hold n·width·H·W numbers.\n\n    Parameters\n"
               "    depth: levels (and conv depth of the level-0 kernel). width: random filters per level.\n"
               + _COMMON_DOC +
               "\n    Fitted: ``Ms_`` (one metric per level), ``last_metrics_`` (each level's last-round metric), ``filters_``\n"
               "    (depth−1 arrays (width, c·q·q)), ``M_``\n"
               "    (the last metric), ``coef_``, ``history_`` (records carry a ``level`` key), ``best_iters_``,\n"
               "    ``train_metrics_``.\n")

    def __init__(self, depth=2, width=64, kernel="cntk", patch_size=3, pool=None, bandwidth=10.0, reg=1e-3,
                 n_iter=3, agop_power=0.5, centering=False, normalize="frobenius", solver="solve",
                 solver_options=None, agop_sample_size=None, validation_fraction=0.1, image_shape=None,
                 random_state=None, device=None, dtype="float64", block_elements=None, verbose=0, padding="same",
                 normalize_kernel=False, features="relu"):
        self.padding = padding
        self.normalize_kernel = normalize_kernel
        self.features = features
        self.depth = depth
        self.width = width
        self.kernel = kernel
        self.patch_size = patch_size
        self.pool = pool
        self.bandwidth = bandwidth
        self.reg = reg
        self.n_iter = n_iter
        self.agop_power = agop_power
        self.centering = centering
        self.normalize = normalize
        self.solver = solver
        self.solver_options = solver_options
        self.agop_sample_size = agop_sample_size
        self.validation_fraction = validation_fraction
        self.image_shape = image_shape
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.block_elements = block_elements
        self.verbose = verbose

    def _check_extra_params(self):
        self._check_conv_params()
        if int(self.width) < 1:
            raise ConfigError(f"width={self.width!r} must be >= 1")
        if self.features not in ("relu", "linear"):
            raise ConfigError(f"features={self.features!r} is not 'relu' or 'linear'")

    def _level_shape(self, level: int):
        C, H, W = self.image_shape_
        shrink = level * (int(self.patch_size) - 1) if self.padding == "valid" else 0
        return (C, H, W) if level == 0 else (int(self.width), H - shrink, W - shrink)

    def _make_kernel(self, M):
        return self._kernel_at(M, self._level)  # the level being fitted

    def _kernel_at(self, M, level: int):
        return ConvolutionalKernel(self._level_shape(level), kind=self.kernel, patch_size=int(self.patch_size),
                                   depth=int(self.depth) - level, pool=self.pool, M=M,
                                   bandwidth=float(self.bandwidth), block_elements=self._block,
                                   padding=self.padding)

    def _features(self, X: torch.Tensor, upto: int) -> torch.Tensor:
        for level in range(upto):
            X = self._featurize(X, level)
        return X

    def _featurize(self, X: torch.Tensor, level: int) -> torch.Tensor:
        return featurize(X, self.filters_[level], self._level_shape(level), int(self.patch_size),
                         relu=self.features == "relu", padding=self.padding)

    def _fit_tensors(self, X, Y, labels, rng, gen):
        self.image_shape_ = self._resolve_shape(X.shape[1])
        last = self._level_shape(int(self.depth) - 1)
        if min(last[1:]) < 1 or (self.padding == "valid" and self.kernel != "patch-laplace"
                                 and min(last[1:]) - int(self.patch_size) + 1 < 1):
            raise ConfigError(f"padding='valid' with depth={self.depth} and patch_size={self.patch_size} leaves no "
                              f"positions in {tuple(self.image_shape_)} images; lower the depth or use padding='same'")
        split = validation_split(len(X), self.validation_fraction, labels, rng)
        q2 = int(self.patch_size) ** 2
        self.Ms_, self.filters_, self.best_iters_, history = [], [], [], []
        self.last_metrics_ = []
        feats = X
        for level in range(int(self.depth)):
            self._level = level
            dim = self._level_shape(level)[0] * q2
            M, coef, rec, hist, last = self._choose(feats, Y, split, gen, dim)
            for h in hist:
                h["level"] = level
            history += hist
            self.Ms_.append(M)
            self.last_metrics_.append(last)
            self.best_iters_.append(int(rec["iteration"]))
            if level + 1 < int(self.depth):
                self.filters_.append(random_filters(M, int(self.width), gen))
                feats = self._featurize(feats, level)
        coef = self._refit(M, coef, rec, feats, Y, split, gen)
        self.M_ = M
        self.coef_ = coef
        self.X_fit_ = X
        self.history_ = history
        self.best_iter_ = self.best_iters_[-1]
        self.reg_ = float(rec["reg"])

    def _raw_predict(self, X) -> torch.Tensor:
        check_is_fitted(self, "coef_")
        Xt = self._transform_input(X)
        last = int(self.depth) - 1  # read only: predicting leaves the fitted estimator as it was
        kernel = self._kernel_at(self.M_, last)
        return kernel.predict(self._features(Xt, last), self._features(self.X_fit_, last),
                              self.coef_)
