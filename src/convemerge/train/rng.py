"""Capture and restore every random number generator a run uses, as JSON-able values.

Resuming bit-identically needs the exact generator states at the end of the last completed epoch: torch's
CPU generator (dropout, init), CUDA's (when present), the train loader's generator (permutation, crops,
flips), numpy's and python's global generators. Byte states are stored base64-encoded.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def capture_rng(loader_generator: torch.Generator | None) -> dict[str, Any]:
    """Every generator's state as a JSON-able dict."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": _b64(torch.get_rng_state()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "loader": _b64(loader_generator.get_state()) if loader_generator is not None else None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any], loader_generator: torch.Generator | None) -> None:
    """Put every generator back to a state from :func:`capture_rng`."""
    torch.set_rng_state(_unb64(state["torch"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if loader_generator is not None and state.get("loader") is not None:
        loader_generator.set_state(_unb64(state["loader"]))
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = [_unb64(s) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
