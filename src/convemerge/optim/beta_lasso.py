"""β-LASSO (Neyshabur 2020, Algorithm 1): SGD with an L1 subgradient, then a hard threshold at β·λ.

Every step, for each parameter θ that has a gradient g::

    θ ← θ − lr · (g + λ · sign θ)        # sign(0) = 0
    θ ← θ ⊙ 1[|θ| ≥ β · λ]               # NOT scaled by lr

``l1_sign="post"`` takes the L1 step's sign from the weight *after* the gradient step instead,
``θ ← θ − lr·g; θ ← θ − lr·λ·sign θ`` — the student reproduction's optimizer (gojkoc54/convolutions_from_scratch,
``src/optim.py``). The two differ only for a weight the gradient step moves across or away from zero: there the
"post" form pulls it back toward zero, and a zeroed weight regrows by lr·(|g| − λ) instead of lr·|g|.

After a step the thresholded entries are exact zeros, so ``(p == 0)`` counts them. No momentum (the paper uses
none). ``lr``, ``lam`` and ``beta`` are per parameter group, so LR schedulers and the first-layer-λ groups of
:func:`convemerge.optim.beta_lasso_param_groups` work unchanged.

Parameters whose ``grad`` is ``None`` are skipped entirely — neither the L1 step nor the threshold touches them —
like every ``torch.optim`` optimizer, so frozen or unused parameters stay exactly as they are.

Two code paths give identical results on CPU (``torch.equal`` to :class:`BetaLassoReference`; only the sign of
an exact zero may differ): a per-tensor loop and a ``torch._foreach_*`` path over tensors grouped by device and
dtype. The threshold is one ``hardshrink`` pass per tensor (see :func:`_strict_threshold`) instead of the
three passes ``abs``, ``>=`` and a mask multiply would take.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer

from convemerge.errors import ConfigError

try:  # torch's own rule for foreach-by-default (private; fall back to "every tensor on CUDA")
    from torch.optim.optimizer import _default_to_fused_or_foreach
except ImportError:  # pragma: no cover - depends on the torch version

    def _default_to_fused_or_foreach(params, differentiable, use_fused=False):  # type: ignore[no-redef]
        return False, all(p.device.type == "cuda" for p in params)


__all__ = ["BetaLasso"]

_HYPERPARAMETERS = ("lr", "lam", "beta")
_INT_VIEW = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def _check_hyperparameter(name: str, value: Any, where: str) -> None:
    """ConfigError (a ValueError) unless ``value`` is a finite number ≥ 0."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"BetaLasso {name}{where} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"BetaLasso {name}{where} must be finite and >= 0, got {value!r}")


def _scalar(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


@functools.lru_cache(maxsize=256)
def _strict_threshold(threshold: float, dtype: torch.dtype) -> float | None:
    """The ``lambd`` for which ``hardshrink(x, lambd)`` equals ``x * (x.abs() >= threshold)`` in ``dtype``.

    ``hardshrink`` zeroes ``|x| <= lambd``. torch compares a tensor with a Python number in the tensor's dtype, so
    ``|x| >= t`` means ``|x| >= t_d`` with ``t_d`` = t rounded to ``dtype``, which for x in ``dtype`` is
    ``|x| > prev(t_d)`` (the next representable value below t_d). Returns None when t_d = 0 (no-op threshold).
    """
    t_d = torch.tensor(threshold, dtype=dtype)
    if t_d.item() == 0.0:
        return None
    prev = (t_d.view(_INT_VIEW[dtype]) - 1).view(dtype)  # positive floats order like their bit patterns
    return prev.item()


class _BetaLassoBase(Optimizer):
    """Shared constructor, validation and state layout of :class:`BetaLasso` and ``BetaLassoReference``."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        lam: float = 0.0,
        beta: float = 0.0,
        *,
        foreach: bool | None = None,
        l1_sign: str = "pre",
    ) -> None:
        for name, value in (("lr", lr), ("lam", lam), ("beta", beta)):
            _check_hyperparameter(name, value, "")
        if foreach is not None and not isinstance(foreach, bool):
            raise ConfigError(f"BetaLasso foreach must be True, False or None, got {foreach!r}")
        _check_l1_sign(l1_sign, "")
        super().__init__(params, dict(lr=lr, lam=lam, beta=beta, foreach=foreach, l1_sign=l1_sign))
        if self.param_groups and all(_scalar(g["lam"]) == 0 for g in self.param_groups):
            # the defaults (λ = 0) silently made this plain SGD: say so, once, where it was built
            warnings.warn(f"{type(self).__name__} with lam=0 in every parameter group is plain SGD (no L1 step, no "
                          f"threshold); pass lam > 0 and beta, or use torch.optim.SGD", UserWarning, stacklevel=2)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group's own lr / lam / beta (defaults were validated in ``__init__``), then add it."""
        label = f" (parameter group {len(self.param_groups)})"
        for name in _HYPERPARAMETERS:
            if name in param_group:
                _check_hyperparameter(name, param_group[name], label)
        if param_group.get("foreach") is not None and not isinstance(param_group["foreach"], bool):
            raise ConfigError(f"BetaLasso foreach{label} must be True, False or None, got {param_group['foreach']!r}")
        if "l1_sign" in param_group:
            _check_l1_sign(param_group["l1_sign"], label)
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if not p.is_floating_point():  # also rejects complex: sign() and the threshold assume real values
                self.param_groups.pop()
                raise ConfigError(f"BetaLasso needs real floating-point parameters{label}, got dtype {p.dtype}")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("l1_sign", "pre")  # states saved before the option existed

    @staticmethod
    def _params_with_grad(group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            if p.grad is None:
                continue  # untouched: no L1 step and no threshold (documented above)
            if p.grad.is_sparse:
                raise ConfigError("BetaLasso does not support sparse gradients; use dense gradients instead")
            params.append(p)
            grads.append(p.grad)
        return params, grads


L1_SIGNS = ("pre", "post")


def _check_l1_sign(value: Any, label: str) -> None:
    if value not in L1_SIGNS:
        raise ConfigError(f"BetaLasso l1_sign{label} must be 'pre' (Algorithm 1: the sign before the step) or "
                          f"'post' (the sign after the gradient step), got {value!r}")


class BetaLasso(_BetaLassoBase):
    """β-LASSO: ``θ ← θ − lr·(g + λ·sign θ)`` then ``θ ← θ·1[|θ| ≥ β·λ]`` (threshold not scaled by lr).

    Args:
        params: parameters or parameter groups; groups may override ``lr``, ``lam`` and ``beta``.
        lr: learning rate η (≥ 0).
        lam: L1 strength λ (≥ 0); λ = 0 makes the step plain SGD and the threshold a no-op (with λ = 0 in
            every group the constructor warns: that is SGD, not β-LASSO).
        beta: threshold multiplier β (≥ 0); β = 0 is SGD plus the L1 subgradient.
        foreach: use the ``torch._foreach_*`` path; None picks it when every parameter is on a foreach-capable
            accelerator (as ``torch.optim`` does) and the per-tensor loop otherwise (CPU).
        l1_sign: ``"pre"`` (Algorithm 1: ``sign θ`` before the step) or ``"post"`` (the sign after the
            gradient step, as the student reproduction's optimizer; see the module docstring).

    Example:
        >>> import torch
        >>> from convemerge.optim import BetaLasso
        >>> w = torch.nn.Parameter(torch.tensor([0.5, 0.12]))
        >>> opt = BetaLasso([w], lr=0.1, lam=0.01, beta=5.0)   # threshold 0.05
        >>> w.sum().backward(); _ = opt.step()
        >>> w.detach()                                           # 0.12 − 0.1·1.01 = 0.019 < 0.05 → exact 0
        tensor([0.3990, 0.0000])
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One β-LASSO step over every parameter that has a gradient; returns ``closure()`` when given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            if not params:
                continue
            lr, lam, beta = _scalar(group["lr"]), _scalar(group["lam"]), _scalar(group["beta"])
            foreach = group["foreach"]
            if foreach is None:
                _, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
            post = group.get("l1_sign", "pre") == "post"
            if foreach:
                _multi_tensor_step(params, grads, lr=lr, lam=lam, beta=beta, post=post)
            else:
                _single_tensor_step(params, grads, lr=lr, lam=lam, beta=beta, post=post)
        return loss


def _single_tensor_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], *, lr: float, lam: float, beta: float, post: bool = False
) -> None:
    # One scratch tensor alive at a time: on CPU a second large temporary costs page faults on every step.
    for p, g in zip(params, grads):
        if post:
            p.add_(g, alpha=-lr)
            if lam != 0.0:
                d = torch.sign(p).mul_(lam)  # λ·sign θ' of the stepped weight, exact
                p.add_(d, alpha=-lr)
                del d
        elif lam != 0.0:
            d = torch.sign(p)
            torch.add(g, d, alpha=lam, out=d)  # d = g + λ·sign θ, the reference's exact expression
            p.add_(d, alpha=-lr)
            del d
        else:
            p.add_(g, alpha=-lr)  # λ·sign θ = 0: plain SGD, bit for bit
        lambd = _strict_threshold(beta * lam, p.dtype)
        if lambd is not None:
            torch.hardshrink(p, lambd, out=p)


def _multi_tensor_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], *, lr: float, lam: float, beta: float, post: bool = False
) -> None:
    grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads])  # type: ignore[list-item]
    for (device_params, device_grads), _ in grouped.values():
        dtype = device_params[0].dtype
        if post:
            torch._foreach_add_(device_params, device_grads, alpha=-lr)
            if lam != 0.0:
                d = torch._foreach_sign(device_params)
                torch._foreach_mul_(d, lam)
                torch._foreach_add_(device_params, d, alpha=-lr)
                del d
        elif lam != 0.0:
            d = torch._foreach_sign(device_params)
            if dtype in (torch.float32, torch.float64):
                # λ·sign θ is exact and addition commutes, so this equals g + λ·sign θ without a 2nd buffer.
                torch._foreach_mul_(d, lam)
                torch._foreach_add_(d, device_grads)
            else:
                # half / bfloat16: keep the reference's own expression; kernels may hold alpha in float while
                # mul_ rounds λ·sign θ to the dtype first (identical on CPU, not guaranteed elsewhere).
                d = torch._foreach_add(device_grads, d, alpha=lam)
            torch._foreach_add_(device_params, d, alpha=-lr)
            del d
        else:
            torch._foreach_add_(device_params, device_grads, alpha=-lr)
        lambd = _strict_threshold(beta * lam, dtype)
        if lambd is not None:
            # No foreach comparison op exists; hardshrink is a single fused read+write pass per tensor.
            for p in device_params:
                torch.hardshrink(p, lambd, out=p)
