"""The plain β-LASSO: Algorithm 1 written out line by line, one tensor at a time.

It exists to be obviously right; :class:`convemerge.optim.BetaLasso` is tested against it. Same constructor,
same parameter groups and the same ``state_dict`` layout (``foreach`` is accepted and stored but ignored), so a
state saved by either loads into the other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from convemerge.optim.beta_lasso import _BetaLassoBase

__all__ = ["BetaLassoReference"]


class BetaLassoReference(_BetaLassoBase):
    """Reference β-LASSO: per tensor, ``d = g + λ·sign θ``; ``θ ← θ − lr·d``; ``θ ← θ·1[|θ| ≥ β·λ]``
    (``l1_sign="post"``: ``θ ← θ − lr·g``; ``θ ← θ − lr·λ·sign θ``; the same threshold)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, lam, beta = float(group["lr"]), float(group["lam"]), float(group["beta"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("BetaLassoReference does not support sparse gradients")
                if group.get("l1_sign", "pre") == "post":  # the sign of the stepped weight
                    p.add_(p.grad, alpha=-lr)  # θ' = θ − lr·g
                    p.add_(lam * torch.sign(p), alpha=-lr)  # θ' − lr·λ·sign θ'
                else:
                    d = torch.add(p.grad, torch.sign(p), alpha=lam)  # g + λ·sign θ, sign(0) = 0
                    p.add_(d, alpha=-lr)  # θ − lr·d
                p.mul_(p.abs() >= beta * lam)  # keep |θ| ≥ βλ; the threshold is not multiplied by lr
        return loss
