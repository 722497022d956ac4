"""RFM and ConvRFM cost, measured side by side in one process.

1. RFM fit (Laplace, 5 AGOP rounds): seconds in kernel matrices / linear solves / AGOP, and their shares;
   the three solvers on the same kernel system (ratios to LU).
2. ConvRFM rounds (CNTK and patch-Laplace): seconds per round split the same way, and peak memory of a round
   (CUDA: max allocated; CPU: peak resident set size sampled while the round runs).
3. ``--conv-goals``: the speed goals of a ConvRFM round — depth-3 CNTK, 3×3, patch-AGOP over all n images — on
   MNIST 28×28 and digit-in-noise 42×42 at n = 2,000, Deep ConvRFM with 2 levels at n = 2,000, and n = 5,000 on
   28×28 (time and memory growth). Each stage (kernel matrix, validation cross kernel, solve, patch-AGOP) is
   timed and reported as achieved map entries × layers per second ("entry-layers/s") of the recursion, against
   a ceiling measured in the same process (one element-wise multiply over 2**20 floats per thread-second); the
   round's before/after ratio (the previous map-recursion with autograd vs the chunked closed-form recursion, in
   torch operations and fused C) is measured side by side at a small n.

Data: MNIST when ``convemerge.data`` finds it (``--data-dir``), otherwise random data of the same shape.

    python benchmarks/bench_rfm.py            # n = 10,000 (RFM), 2,000 (ConvRFM)
    python benchmarks/bench_rfm.py --quick    # n = 2,000 / 300
    python benchmarks/bench_rfm.py --conv-goals --skip-rfm --threads 2 --data-dir <datasets>
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import torch

from convemerge.kernels import ConvRFMClassifier, LaplaceKernel, RFMClassifier, eigenpro_solve, solve_regularized
from _machine import describe_machine
from _conv_goals import bench_conv_goals


DATA_DIR = None


def data(n: int, seed: int = 0):
    """(images (n, 1, 28, 28) float32, labels, source)."""
    try:
        from convemerge.experiments.convrfm.kernel_fit import load_image_arrays

        X, y = load_image_arrays("mnist", "train", n, seed, DATA_DIR)
        return X, y, "MNIST"
    except Exception:  # no data layer or no files: random data of the same shape
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), "random"


class PeakMemory:
    """Peak memory while the block runs: CUDA max allocated, or the sampled peak resident set size (CPU)."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self.start, self._stop = device, 0, 0, threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = self.start = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())

    @property
    def label(self) -> str:
        return "max allocated (CUDA)" if self.device.type == "cuda" else "peak RSS of the process"


def split_times(history) -> dict[str, float]:
    return {k: sum(h[f"time_{k}"] for h in history) for k in ("kernel", "solve", "agop")}


def bench_rfm(n: int, dtype: str, device: torch.device) -> None:
    X, y, source = data(n)
    X = X.flatten(1)
    print(f"\n== RFM: n={n}, d={X.shape[1]} ({source}), Laplace L=10, 5 rounds, {dtype}, {device} ==")
    t0 = time.perf_counter()
    est = RFMClassifier(n_iter=5, dtype=dtype, device=device, random_state=0).fit(X, y)
    total = time.perf_counter() - t0
    parts = split_times(est.history_)
    parts["refit"] = est.refit_time_
    other = total - sum(parts.values())
    print(f"fit {total:.2f}s (rounds on {len(X) - len(X) // 10} points + refit on {len(X)})")
    for k, v in {**parts, "other": other}.items():
        print(f"  {k:7s} {v:8.2f}s  {100 * v / total:5.1f}%")
    # achieved rates of the two GEMM-shaped stages (flops of their matrix products, element-wise work not counted)
    m, d, c = len(X) - len(X) // 10, X.shape[1], len(set(y.tolist()))
    rounds = [h for h in est.history_ if h["time_agop"] > 0]
    if rounds:
        agop = sum(h["time_agop"] for h in rounds) / len(rounds)
        kern = sum(h["time_kernel"] for h in est.history_) / len(est.history_)
        # AGOP: the gradients' n²·c·d products, then M applied to and the outer products of the n·c gradients (2·n·c·d²)
        flops = 2 * m * c * d * (m + 2 * d)
        print(f"  per round: AGOP {agop:.2f}s = {flops / agop / 1e9:.0f} GFLOP/s of its matrix products; "
              f"kernel matrix {kern:.2f}s = {2 * m * m * d / kern / 1e9:.0f} GFLOP/s of its n²·d product")
    # the same kernel system with each solver
    dt = torch.float32 if dtype == "float32" else torch.float64
    Xt = torch.as_tensor(X, dtype=dt, device=device)
    Y = torch.nn.functional.one_hot(torch.as_tensor(y)).to(dt).to(device)
    k = LaplaceKernel(None, 10.0)
    K = k.matrix(Xt)
    times = {}
    for name in ("solve", "cholesky"):
        t0 = time.perf_counter()
        ref = solve_regularized(K, Y, 1e-3, name)
        times[name] = time.perf_counter() - t0
    del K
    t0 = time.perf_counter()
    alpha, info = eigenpro_solve(k, Xt, Y, 1e-3, epochs=5, generator=torch.Generator().manual_seed(0))
    times["eigenpro (5 epochs)"] = time.perf_counter() - t0
    rel = float((alpha - ref).norm() / ref.norm())
    print("solvers on K + 1e-3·I (ratio to LU solve):")
    for name, v in times.items():
        print(f"  {name:20s} {v:8.2f}s  ×{v / times['solve']:.2f}")
    print(f"  eigenpro: q={info.n_components}, batch={info.batch_size}, train MSE {info.train_mse[-1]:.2e}, "
          f"‖α−α*‖/‖α*‖={rel:.2e} (EigenPro never forms the n×n matrix; it is an iterative approximation)")


def bench_convrfm(n: int, dtype: str, device: torch.device) -> None:
    X, y, source = data(n, seed=1)
    print(f"\n== ConvRFM: n={n} images 1×28×28 ({source}), q=3, one round = fit + patch-AGOP on all n, "
          f"{dtype}, {device} ==")
    rows = {}
    for kernel, depth in (("cntk", 3), ("cntk", 2), ("patch-laplace", 1)):
        est = ConvRFMClassifier(kernel=kernel, depth=depth, n_iter=1, validation_fraction=0, dtype=dtype,
                                device=device, random_state=0)
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            est.fit(X, y)
            total = time.perf_counter() - t0
        parts = split_times(est.history_)
        rows[(kernel, depth)] = (total, parts, mem.peak, mem.label)
        # history: round 0 (fit + AGOP) and round 1 (fit only): a round = kernel + solve + AGOP of round 0
        r0 = est.history_[0]
        round_s = r0["time_kernel"] + r0["time_solve"] + r0["time_agop"]
        print(f"  {kernel:13s} depth {depth}: round {round_s:7.2f}s (kernel {r0['time_kernel']:.2f}s, solve "
              f"{r0['time_solve']:.2f}s, patch-AGOP {r0['time_agop']:.2f}s); {mem.label} {mem.peak / 2**20:.0f} MiB"
              f" (+{(mem.peak - mem.start) / 2**20:.0f} MiB during the fit)")
    base = rows[("cntk", 3)]
    for key, (total, *_rest) in rows.items():
        print(f"  fit time ratio {key[0]} depth {key[1]} / cntk depth 3: ×{total / base[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small n (RFM 2,000; ConvRFM 300)")
    ap.add_argument("--n-rfm", type=int, default=None)
    ap.add_argument("--n-conv", type=int, default=None)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST files (else the usual search)")
    ap.add_argument("--skip-rfm", action="store_true")
    ap.add_argument("--skip-conv", action="store_true")
    ap.add_argument("--conv-goals", action="store_true", help="the ConvRFM speed goals (n = 2,000 / 5,000)")
    ap.add_argument("--goal-sizes", default="2000,5000", help="n of the goal rounds, then of the growth row")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global DATA_DIR
    DATA_DIR = args.data_dir
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"machine: {describe_machine()}")
    if not args.skip_rfm:
        bench_rfm(args.n_rfm or (2000 if args.quick else 10000), args.dtype, device)
    if not args.skip_conv and not args.conv_goals:
        bench_convrfm(args.n_conv or (300 if args.quick else 2000), args.dtype, device)
    if args.conv_goals:
        sizes = [int(v) for v in args.goal_sizes.split(",")]
        bench_conv_goals(sizes[0], sizes[1] if len(sizes) > 1 else None, args.dtype, device, DATA_DIR, PeakMemory)


if __name__ == "__main__":
    main()
