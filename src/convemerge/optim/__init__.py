"""β-LASSO (fast path and plain reference), the parameter-group factories for it and the SGD baselines, and
``create_optimizer`` (the optimizers a run can use)."""

from convemerge.optim.beta_lasso import BetaLasso
from convemerge.optim.factory import OPTIMIZERS, create_optimizer
from convemerge.optim.param_groups import beta_lasso_param_groups, sgd_param_groups, split_parameters
from convemerge.optim.reference import BetaLassoReference

__all__ = ["OPTIMIZERS", "BetaLasso", "BetaLassoReference", "create_optimizer", "beta_lasso_param_groups", "sgd_param_groups", "split_parameters"]
