"""Description length of a trained network and the two Occam-style generalisation bounds (Fig. 2).

A network with ``n`` weights stored at ``b`` bits each takes ``n·b`` bits written out densely. Written as a sparse,
shared code it takes ``k·b`` bits for a codebook of its ``k`` distinct non-zero values, ``log2(k·n)`` bits per
non-zero weight (its position among the ``n`` slots and its codebook entry) and ``2·log2(n)`` bits for the two
counts that frame the code (number of non-zeros, codebook size). The paper's bounds follow (δ = 0.05 by default)::

    L_D <= L_S + sqrt((n·b + log2(2/δ)) / 2m)                        # dense
    L_D <= L_S + sqrt((k·b + |d(g)| + log2(2n/δ)) / 2m)               # sparse / shared

Logarithms are base 2 throughout, as the description lengths are in bits. With natural logarithms the Occam bound
reads ``sqrt((|d|·ln 2 + ln(2/δ)) / 2m)``; the base-2 form is larger term by term, so it is a valid (slightly looser)
bound and matches the paper's formula literally.

Quantisation (the paper leaves it open): symmetric uniform mid-tread quantisation of each tensor to ``b`` bits,
``q(w) = Δ·round(w/Δ)`` with ``Δ = max|w| / (2^(b-1) - 1)``. Zero maps to exactly zero (so pruned weights stay
pruned); at most ``2^b - 1`` distinct values per tensor. ``k`` counts the distinct non-zero values over all
quantised weight tensors of the net (the union of their codebooks, since each tensor has its own step Δ).

Example::

    >>> import torch
    >>> w = [torch.tensor([0.0, 1.0, -1.0, 0.5])]
    >>> dl = description_length(w, bits=8)
    >>> dl.n, dl.nonzero, dl.distinct
    (4, 3, 3)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from convemerge.errors import ConfigError

__all__ = [
    "DescriptionLength",
    "quantize",
    "description_length",
    "dense_bound",
    "sparse_bound",
    "model_description_length",
    "min_params_to_fit",
]


def quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric uniform mid-tread quantisation of ``w`` to ``bits`` bits (zero stays zero; see the module doc)."""
    if bits < 2:
        raise ConfigError(f"bits must be >= 2 for a signed quantiser, got {bits}; use e.g. --bits 8")
    w = w.detach().to(torch.float64)
    peak = w.abs().max() if w.numel() else torch.tensor(0.0, dtype=torch.float64)
    if peak == 0:
        return torch.zeros_like(w)
    step = peak / (2 ** (bits - 1) - 1)
    return torch.round(w / step) * step


@dataclass(frozen=True)
class DescriptionLength:
    """Bits to describe a net densely and as a sparse shared code, with the counts that enter them."""

    n: int  # number of weights
    nonzero: int  # ||w||_0 after quantisation
    distinct: int  # k: distinct non-zero quantised values
    bits: int  # b
    dense_bits: float  # n·b
    sparse_bits: float  # k·b + ||w||_0·log2(k·n) + 2·log2(n)
    index_bits: float  # |d(g)| = ||w||_0·log2(k·n) + 2·log2(n)

    def to_dict(self) -> dict:
        return asdict(self)


def description_length(weights: Iterable[torch.Tensor], bits: int = 8) -> DescriptionLength:
    """Dense and sparse/shared description lengths (bits) of a list of weight tensors quantised to ``bits`` bits."""
    quantised = [quantize(w, bits).reshape(-1) for w in weights]
    n = sum(q.numel() for q in quantised)
    if n == 0:
        raise ConfigError("no weights to describe: pass at least one non-empty weight tensor")
    flat = torch.cat(quantised)
    nz = flat[flat != 0]
    nonzero = int(nz.numel())
    k = int(torch.unique(nz).numel())
    # log2(k·n) is undefined for k = 0 (an all-zero net); it then has no per-weight entries to index.
    index_bits = (nonzero * math.log2(k * n) if nonzero else 0.0) + 2 * math.log2(n)
    return DescriptionLength(
        n=n, nonzero=nonzero, distinct=k, bits=bits, dense_bits=float(n * bits),
        sparse_bits=float(k * bits + index_bits), index_bits=float(index_bits),
    )


def _check(train_error: float, m: int, delta: float) -> None:
    if not 0.0 <= train_error <= 1.0:
        raise ConfigError(f"train_error must be a fraction in [0, 1], got {train_error}")
    if m <= 0:
        raise ConfigError(f"m (number of training samples) must be positive, got {m}")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must lie in (0, 1), got {delta}")


def dense_bound(train_error: float, n: int, bits: int, m: int, delta: float = 0.05) -> float:
    """``L_S + sqrt((n·b + log2(2/δ)) / 2m)``: test-error bound of a net with ``n`` weights of ``b`` bits."""
    _check(train_error, m, delta)
    return train_error + math.sqrt((n * bits + math.log2(2 / delta)) / (2 * m))


def sparse_bound(train_error: float, dl: DescriptionLength, m: int, delta: float = 0.05) -> float:
    """``L_S + sqrt((k·b + |d(g)| + log2(2n/δ)) / 2m)``: the bound for a sparse, shared code ``dl``."""
    _check(train_error, m, delta)
    return train_error + math.sqrt(
        (dl.distinct * dl.bits + dl.index_bits + math.log2(2 * dl.n / delta)) / (2 * m)
    )


def model_description_length(model, bits: int = 8) -> DescriptionLength:
    """Description length of a model's conv / local / linear weights (``model.weight_layers()``, or the Conv /
    Linear weights of a plain module; biases and normalisation parameters are excluded, as in the parameter
    counts)."""
    from convemerge.analysis.sparsity import weight_tensors

    return description_length(list(weight_tensors(model).values()), bits=bits)


def min_params_to_fit(points: Sequence[dict], target_train_acc: float) -> dict:
    """For one family's α sweep, the smallest parameter count whose training accuracy reaches the target, and
    the family's best test accuracy (over the whole sweep).

    ``points``: dicts with ``params``, ``train_acc`` and ``test_acc``. Returns ``{"min_params": int | None,
    "best_test_acc": float | None, "alpha": ... of the smallest fitting point, if given}``; ``min_params`` is None
    when no point reaches the target.
    """
    fitting = [p for p in points if p["train_acc"] >= target_train_acc]
    smallest = min(fitting, key=lambda p: p["params"]) if fitting else None
    best = max((p["test_acc"] for p in points), default=None)
    return {
        "min_params": None if smallest is None else int(smallest["params"]),
        "alpha": None if smallest is None else smallest.get("alpha"),
        "best_test_acc": best,
    }
