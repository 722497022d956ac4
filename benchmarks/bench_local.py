"""What does a locally connected layer cost? (S-LOCAL's first layer: 3×32×32 input, 9×9 filters, stride 2,
padding 4, α ∈ {8, 32} output channels, batch 128, fp32)

Side by side in one process, timings interleaved (A B C A B C …) and summarised by their medians. The local
layer runs in two modes: "chunked" (the default ``max_patch_bytes``: patches gathered a cache-sized chunk of
output positions at a time and gathered again in the backward pass) and "whole" (``max_patch_bytes=math.inf``: all
patches at once, kept for the backward pass).
  1. forward + backward of ``LocallyConnected2d`` against ``nn.Conv2d`` of the same shape (goal: ≤ 2×), with the
     input not requiring a gradient (a first layer fed with data, as in S-LOCAL) and requiring one (a hidden
     layer, as in D-LOCAL); the broadcast-multiply formulation of the public re-implementations is timed too.
  2. peak memory of one forward + backward: both modes against the broadcast formulation (goal: ≥ 10× less).
     CPU: the peak of the profiler's running total of bytes allocated during the step
     (``torch.profiler`` with ``profile_memory=True``, "Total Allocated" of its memory events) — "measured";
     the analytic size of the largest tensor each form materialises is printed beside it.
     CUDA: ``torch.cuda.max_memory_allocated`` over the step, minus what was allocated before.

    python benchmarks/bench_local.py              # α = 8, 32; batch 128; 15 interleaved rounds
    python benchmarks/bench_local.py --quick      # α = 8; batch 32; 5 rounds
    python benchmarks/bench_local.py --threads 1  # steadier on a shared machine
    python benchmarks/bench_local.py --threads 1 --cpu-time  # CPU time instead of wall-clock: steadier still
    python benchmarks/bench_local.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from convemerge.layers import LocallyConnected2d
from convemerge.layers.local import CPU_CHUNK_BYTES, DEFAULT_MAX_PATCH_BYTES
from _machine import describe_machine

IN_CHANS, SIDE, KERNEL, STRIDE, PADDING = 3, 32, 9, 2, 4


class BroadcastLocal(nn.Module):
    """The broadcast-multiply layer copied around public repositories (for comparison only): it forms the
    ``B × out × C × H' × W' × k²`` product of patches and weights before summing it."""

    def __init__(self, in_channels: int, out_channels: int, in_size: int, k: int, stride: int, padding: int):
        super().__init__()
        self.k, self.stride, self.padding = k, stride, padding
        out = (in_size + 2 * padding - k) // stride + 1
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, out, out, k * k) / k)
        self.bias = nn.Parameter(torch.zeros(1, out_channels, out, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.padding,) * 4)
        x = x.unfold(2, self.k, self.stride).unfold(3, self.k, self.stride)
        x = x.contiguous().view(*x.shape[:-2], -1)  # (B, C, H', W', k²)
        return (x.unsqueeze(1) * self.weight).sum([2, -1]) + self.bias


def step_fn(layer: nn.Module, x: torch.Tensor, *, clear: bool = True) -> Callable[[], None]:
    def step() -> None:
        if clear:
            layer.zero_grad(set_to_none=True)
            x.grad = None
        layer(x).square().mean().backward()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, device: torch.device,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = clock()
            fn()
            sync(device)
            times[name].append(clock() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def peak_bytes(layer: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """Peak of the bytes allocated during one forward + backward (beyond what existed before it)."""
    layer.zero_grad(set_to_none=True)  # so that the step frees nothing allocated before it
    fn = step_fn(layer, x, clear=False)
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as fh:
            events = json.load(fh)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max(totals, default=0)


MODES = {"chunked": None, "whole": math.inf}  # max_patch_bytes of each mode of the local layer


def run(alpha: int, batch: int, rounds: int, device: torch.device, broadcast_rounds: int,
        clock: Callable[[], float]) -> None:
    torch.manual_seed(0)
    ours = {mode: LocallyConnected2d(IN_CHANS, alpha, SIDE, KERNEL, STRIDE, PADDING, max_patch_bytes=budget).to(device)
            for mode, budget in MODES.items()}
    ours["whole"].load_state_dict(ours["chunked"].state_dict())
    conv = nn.Conv2d(IN_CHANS, alpha, KERNEL, stride=STRIDE, padding=PADDING).to(device)
    bcast = BroadcastLocal(IN_CHANS, alpha, SIDE, KERNEL, STRIDE, PADDING).to(device)
    n_side = (SIDE + 2 * PADDING - KERNEL) // STRIDE + 1
    with torch.no_grad():  # the same filters in every local form: check they compute the same thing
        w = ours["chunked"].weight.view(n_side, n_side, alpha, IN_CHANS, KERNEL * KERNEL)
        bcast.weight.copy_(w.permute(2, 3, 0, 1, 4)[None])
        bcast.bias.copy_(ours["chunked"].bias[None])
    x = torch.randn(batch, IN_CHANS, SIDE, SIDE, device=device)
    for layer in ours.values():
        torch.testing.assert_close(layer(x), bcast(x), rtol=1e-4, atol=1e-4)
    n_pos = n_side**2
    print(f"\nα = {alpha}, batch {batch}: local weight {tuple(ours['chunked'].weight.shape)}, "
          f"conv weight {tuple(conv.weight.shape)}")
    for needs_grad, label in ((False, "input without grad (first layer)"), (True, "input with grad (hidden layer)")):
        xi = x.clone().requires_grad_(needs_grad)
        fns = {mode: step_fn(layer, xi) for mode, layer in ours.items()} | {"conv": step_fn(conv, xi)}
        t = interleaved(fns, rounds, device, clock)
        tb = interleaved({"broadcast": step_fn(bcast, xi)}, broadcast_rounds, device, clock)["broadcast"]
        print(f"  fwd+bwd, {label}: chunked {t['chunked'] * 1e3:7.2f} ms | whole {t['whole'] * 1e3:7.2f} ms | "
              f"conv {t['conv'] * 1e3:7.2f} ms | broadcast {tb * 1e3:8.2f} ms")
        print(f"    local/conv: chunked {t['chunked'] / t['conv']:.2f}x, whole {t['whole'] / t['conv']:.2f}x "
              f"(goal <= 2x); broadcast/chunked = {tb / t['chunked']:.1f}x")
    how = "cuda.max_memory_allocated" if device.type == "cuda" else "profiler 'Total Allocated'"
    peak = {mode: peak_bytes(layer, x, device) for mode, layer in ours.items()}
    peak_bcast = peak_bytes(bcast, x, device)
    print(f"  peak memory of one fwd+bwd ({how}): chunked {peak['chunked'] / 2**20:7.1f} MiB | "
          f"whole {peak['whole'] / 2**20:7.1f} MiB | broadcast {peak_bcast / 2**20:8.1f} MiB")
    print(f"    broadcast/local: chunked {peak_bcast / max(peak['chunked'], 1):.1f}x, "
          f"whole {peak_bcast / max(peak['whole'], 1):.1f}x (goal >= 10x)")
    big_ours = batch * IN_CHANS * KERNEL**2 * n_pos  # the whole (L, C·k², B) patch buffer
    big_bcast = batch * alpha * IN_CHANS * n_pos * KERNEL**2  # the broadcast product
    print(f"  largest tensor (analytic, fp32): whole patches {big_ours * 4 / 2**20:8.1f} MiB | broadcast product "
          f"{big_bcast * 4 / 2**20:8.1f} MiB  ->  {big_bcast / big_ours:.0f}x (= α)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="α = 8, batch 32, 5 rounds")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 15, quick 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this process's CPU time (needs --threads 1): less noise from other work")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time and (args.device != "cpu" or torch.get_num_threads() != 1):
        ap.error("--cpu-time needs --device cpu and --threads 1")
    clock = time.process_time if args.cpu_time else time.perf_counter
    device = torch.device(args.device)
    alphas, batch = ((8,), 32) if args.quick else ((8, 32), 128)
    rounds = args.rounds or (5 if args.quick else 15)
    print("bench_local:", describe_machine(device))
    print(f"S-LOCAL first layer: {IN_CHANS}x{SIDE}x{SIDE} input, {KERNEL}x{KERNEL} kernel, stride {STRIDE}, "
          f"padding {PADDING}; medians of {rounds} interleaved rounds (broadcast: {max(3, rounds // 3)} rounds), "
          f"{'CPU' if args.cpu_time else 'wall-clock'} time")
    for alpha in alphas:
        run(alpha, batch, rounds, device, broadcast_rounds=max(3, rounds // 3), clock=clock)
    paper = 512 * 150 * IN_CHANS * 256 * KERNEL**2
    print(f"\nat paper scale (α = 150, batch 512) the broadcast product alone has {paper:.2e} elements "
          f"({paper * 4 / 2**30:.1f} GiB fp32); our whole patch buffer {512 * 243 * 256 * 4 / 2**20:.0f} MiB, "
          f"a chunk of it at most {CPU_CHUNK_BYTES / 2**20:g} MiB on CPU, {DEFAULT_MAX_PATCH_BYTES / 2**20:g} MiB "
          "elsewhere (by default)")


if __name__ == "__main__":
    main()
