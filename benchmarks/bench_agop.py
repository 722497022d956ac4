"""Closed-form patch-AGOP (Wᵀ·∂f/∂h, Gram accumulated in k_out space) vs brute-force autograd through an
unfolded network (each conv replaced by unfold → matmul on leaf patches, one backward per output).

Vanilla conv net: depth × [conv 3×3 (padding 1), ReLU], flatten, linear readout to 10 classes; n images of
28×28; the patch-AGOP of every conv layer. Each method runs in its own fresh (spawned) process so that
its peak memory (resident-set high-water mark above the level after warm-up, or CUDA peak allocation) is
its own.

    python benchmarks/bench_agop.py                 # depth 3, width 64, n = 100
    python benchmarks/bench_agop.py --n 20 --width 32
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from convemerge.analysis.agop import agops
from _machine import describe_machine


def vanilla_cnn(depth: int, width: int, in_chans: int, size: int, classes: int = 10) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_chans
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * size * size, classes))


def brute_force(model: nn.Sequential, x: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Σ_i Σ_p Σ_o ∇_{x_p} f_o ∇_{x_p} f_oᵀ / n by autograd w.r.t. unfolded patches (leaves).

    One layer at a time: a leaf at a later layer would cut the graph to the earlier ones.
    """
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return {name: _brute_force_layer(model, conv, x, batch_size) for name, conv in convs.items()}


def _brute_force_layer(model, conv, x, batch_size):
    store: dict[str, torch.Tensor] = {}

    def hook(mod, inputs, out):
        p = F.unfold(inputs[0], mod.kernel_size, padding=mod.padding, stride=mod.stride)
        p = p.detach().requires_grad_(True)
        store["p"] = p
        h = torch.einsum("od,bdl->bol", mod.weight.reshape(mod.out_channels, -1), p)
        return (h + mod.bias[None, :, None]).reshape(out.shape)

    handle = conv.register_forward_hook(hook)
    acc = 0.0
    try:
        for s in range(0, x.shape[0], batch_size):
            f = model(x[s : s + batch_size])
            for o in range(f.shape[1]):
                (g,) = torch.autograd.grad(f[:, o].sum(), store["p"], retain_graph=True)
                rows = g.permute(0, 2, 1).reshape(-1, g.shape[1])
                acc = acc + (rows.T @ rows).double()
            del f, g
            store.clear()
    finally:
        handle.remove()
    return acc / x.shape[0]


def closed_form(model, x, batch_size, batched=True):
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return {n: g.double() for n, g in agops(model, x, names, batch_size=batch_size, batched=batched).items()}


METHODS = {
    "brute force (unfolded autograd)": lambda m, x, b: brute_force(m, x, b),
    "closed form (batched over outputs)": lambda m, x, b: closed_form(m, x, b, True),
    "closed form (loop over outputs)": lambda m, x, b: closed_form(m, x, b, False),
    "closed form (batched, 1/5 batch)": lambda m, x, b: closed_form(m, x, max(1, b // 5), True),
}


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _child(method: str, args, conn) -> None:
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = torch.float64 if args.double else torch.float32
    model = vanilla_cnn(args.depth, args.width, 1, args.size).to(device, dtype).eval()
    x = torch.randn(args.n, 1, args.size, args.size, device=device, dtype=dtype)
    fn = METHODS[method]
    fn(model, x[:2], args.batch_size)  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _status_kb("VmRSS")
    t0 = time.perf_counter()
    result = fn(model, x, args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        hwm = _status_kb("VmHWM")
        peak_mb = None if hwm is None or base_rss is None else (hwm - base_rss) / 1024
    # numpy, not tensors: torch shares tensors through file descriptors that die with this process
    conn.send((seconds, peak_mb, {k: v.cpu().numpy() for k, v in result.items()}))
    conn.close()


def run(method: str, args):
    ctx = mp.get_context("spawn")  # fork after torch's thread pool started can deadlock
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(method, args, child))
    proc.start()
    child.close()  # so that recv() raises EOFError instead of waiting forever if the child fails
    try:
        out = parent.recv()
    except EOFError:
        raise SystemExit(f"benchmark process for {method!r} failed (see its traceback above)") from None
    proc.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--double", action="store_true", help="float64 model and images (exact comparison)")
    args = ap.parse_args()
    print(f"machine: {describe_machine(args.device)}")
    print(
        f"vanilla CNN depth {args.depth}, width {args.width}, 3x3, {args.size}x{args.size}, n = {args.n}, "
        f"10 outputs, batch {args.batch_size}, {'float64' if args.double else 'float32'} on {args.device}; "
        f"patch-AGOP of all {args.depth} conv layers"
    )
    results = {m: run(m, args) for m in METHODS}
    results = {m: (t, mem, {k: torch.from_numpy(v) for k, v in res.items()}) for m, (t, mem, res) in results.items()}
    ref_t, ref_mem, ref = results["brute force (unfolded autograd)"]
    print(f"{'method':38s} {'seconds':>9s} {'peak MB':>9s} {'time ratio':>11s} {'mem ratio':>10s} {'max rel err':>12s}")
    for m, (t, mem, res) in results.items():
        err = max(((res[k] - ref[k]).norm() / ref[k].norm()).item() for k in ref)
        mem_s = "n/a" if mem is None else f"{mem:9.1f}"
        ratio_m = "n/a" if mem is None or ref_mem is None or mem <= 0 else f"{ref_mem / mem:9.2f}x"
        print(f"{m:38s} {t:9.3f} {mem_s:>9s} {ref_t / t:10.2f}x {ratio_m:>10s} {err:12.2e}")
    print("ratios: brute force / method (higher = the method is faster / uses less memory)")


if __name__ == "__main__":
    main()
