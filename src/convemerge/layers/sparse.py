"""``SparseLinear``: a linear layer whose weight is a torch sparse CSR matrix (inference only).

Sparse exports of β-LASSO nets (:mod:`convemerge.train.export`) serve their sparsest linear layers with it.

>>> import torch
>>> dense = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
>>> layer = SparseLinear(dense.to_sparse_csr(), torch.zeros(2))
>>> layer(torch.tensor([[1.0, 3.0]])), layer.nnz
(tensor([[6., 0.]]), 1)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SparseLinear"]


class SparseLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` a torch sparse CSR matrix ``(out, in)``; inference only."""

    def __init__(self, weight_csr: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        if weight_csr.layout != torch.sparse_csr:
            raise ValueError("SparseLinear needs a sparse CSR weight")
        self.out_features, self.in_features = weight_csr.shape
        self.register_buffer("weight_csr", weight_csr)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @property
    def nnz(self) -> int:
        return int(self.weight_csr.values().numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        # (out, in) CSR @ (in, B) dense: the kernel torch optimises on CPU; x Wᵀ in the other order is slower
        y = torch.sparse.mm(self.weight_csr, x2.T.contiguous()).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}"
