"""Feature-learning kernel machines: Mahalanobis and convolutional kernels, their gradients and AGOPs,
kernel ridge solvers (direct and EigenPro 2), and scikit-learn estimators RFM*, ConvRFM*, DeepConvRFM*.
"""

from . import cntk_native
from .base import Kernel
from .conv import ConvolutionalKernel
from .convrfm import ConvRFMClassifier, DeepConvRFMClassifier
from .edges import metric_eigenpatches, patch_norm_map
from .eigenpro import eigenpro_solve
from .mahalanobis import GaussianKernel, LaplaceKernel, MahalanobisKernel
from .rfm import RFMClassifier, RFMRegressor
from .solvers import solve_regularized

__all__ = [
    "ConvRFMClassifier",
    "ConvolutionalKernel",
    "DeepConvRFMClassifier",
    "GaussianKernel",
    "Kernel",
    "LaplaceKernel",
    "MahalanobisKernel",
    "RFMClassifier",
    "RFMRegressor",
    "eigenpro_solve",
    "metric_eigenpatches",
    "patch_norm_map",
    "solve_regularized",
]
