"""Reusable layers: ``LocallyConnected2d`` (unfold + position-batched matmul), ``SparseLinear`` (CSR weight)."""

from convemerge.layers.local import LocallyConnected2d, locally_connected2d, output_size
from convemerge.layers.sparse import SparseLinear

__all__ = ["LocallyConnected2d", "SparseLinear", "locally_connected2d", "output_size"]
