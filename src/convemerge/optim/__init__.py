"""β-LASSO (fast path and plain reference) and the parameter-group factories for it and the SGD baselines."""

from convemerge.optim.beta_lasso import BetaLasso
from convemerge.optim.param_groups import beta_lasso_param_groups, sgd_param_groups, split_parameters
from convemerge.optim.reference import BetaLassoReference

__all__ = ["BetaLasso", "BetaLassoReference", "beta_lasso_param_groups", "sgd_param_groups", "split_parameters"]
