"""The one device resolver: ``auto`` (or None) means CUDA when available, else the CPU.

Errors a user can cause — an unknown device name, CUDA asked for on a machine without it — are one-line
ConfigErrors.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import torch

from convemerge.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` / None -> cuda when available, else cpu; ``"cuda"`` without CUDA and unknown names ->
    ConfigError; anything else torch accepts (``"cpu"``, ``"cuda:1"``, a ``torch.device``) as is."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={str(device)!r} was requested but CUDA is not available; use --device cpu or "
                          f"--device auto")
    return resolved
