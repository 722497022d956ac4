"""Reusable layers: ``LocallyConnected2d`` (unfold + position-batched matmul)."""

from convemerge.layers.local import LocallyConnected2d, locally_connected2d, output_size

__all__ = ["LocallyConnected2d", "locally_connected2d", "output_size"]
