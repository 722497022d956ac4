"""The one-line machine description every benchmark prints beside its numbers (benchmarks/RESULTS.md)."""

from __future__ import annotations

import os
import platform

import torch


def describe_machine(device: str | torch.device | None = None) -> str:
    """CPU model, logical cores, torch threads and version, Python, the GPU when ``device`` is CUDA, and the load
    average (other work on the machine makes every timing noisy)."""
    cpu = platform.processor() or platform.machine() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    text = (f"{cpu}; {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; "
            f"torch {torch.__version__}; python {platform.python_version()}")
    if device is not None and torch.device(device).type == "cuda":
        text += f"; {torch.cuda.get_device_name(torch.device(device))}"
    if hasattr(os, "getloadavg"):
        text += f"; load average {os.getloadavg()[0]:.1f}"
    return text
