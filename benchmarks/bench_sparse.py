"""CPU inference of a sparse-exported S-FC against the same net run dense (S-FC, α = 8, 28×28×1, eval mode).

The first layer (784 → 1568, 80 % of the weights) is sparsified at 95 % and 99 % zeros — what β-LASSO leaves —
and, in a second setting, the second layer too. The first layer is also timed alone (nn.Linear vs SparseLinear):
with only it sparse, the dense second layer (1568 → 192, 20 % of the weights) bounds the whole net's gain. Both nets come from one model: the dense one as trained, the
sparse one through ``export_model_sparse`` + ``load_sparse`` (linear layers at ≤ 10 % density as CSR). Timings
are interleaved (dense, sparse, dense, …) and summarised by their medians. Goal: ≥ 3× at ≥ 95 % zeros.

    python benchmarks/bench_sparse.py               # 30 rounds per setting
    python benchmarks/bench_sparse.py --quick       # 7 rounds
    python benchmarks/bench_sparse.py --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from convemerge.models import create_model
from convemerge.train.export import SparseLinear, export_model_sparse, load_sparse
from _machine import describe_machine

ALPHA, SIDE, CLASSES = 8, 28, 10
GEOMETRY = {"image_size": SIDE, "in_chans": 1, "num_classes": CLASSES}


def sparsified(zeros: float, layers: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("s-fc", alpha=ALPHA, **GEOMETRY).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wl in model.weight_layers()[:layers]:
            wl.module.weight.mul_((torch.rand(wl.module.weight.shape, generator=g) >= zeros).float())
    return model


@torch.inference_mode()
def timed(fn, x, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn(x)
    return (time.perf_counter() - start) / reps


def compare(dense, sparse, x, rounds: int) -> tuple[float, float, float]:
    """Median seconds per call of each (interleaved rounds) and the largest output difference."""
    with torch.inference_mode():
        diff = float((dense(x) - sparse(x)).abs().max())
    reps = max(1, 2048 // x.shape[0])
    timed(dense, x, reps), timed(sparse, x, reps)  # warm-up
    td, ts = [], []
    for _ in range(rounds):
        td.append(timed(dense, x, reps))
        ts.append(timed(sparse, x, reps))
    return statistics.median(td), statistics.median(ts), diff


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 7 if args.quick else 30
    print(f"machine: {describe_machine()}")
    print(f"S-FC alpha={ALPHA} side={SIDE}: {sum(p.numel() for p in sparsified(0, 0).parameters()):,} parameters")
    print(f"{'setting':<34}{'batch':>6}{'dense ms':>10}{'sparse ms':>11}{'speed-up':>10}{'max |diff|':>12}")
    # the first layer alone (784 -> 1568): what the sparse kernel gains before the dense layers dilute it
    print(f"{'layer 1 alone':<34}")
    for zeros in (0.95, 0.99):
        model = sparsified(zeros, 1)
        dense_layer = model.weight_layers()[0].module
        with _quiet():
            sparse_layer = SparseLinear(dense_layer.weight.detach().to_sparse_csr(), dense_layer.bias)
        for batch in (1, 64, 512):
            x = torch.randn(batch, SIDE * SIDE)
            md, ms, diff = compare(dense_layer, sparse_layer, x, rounds)
            print(f"{f'  {zeros:.0%} zeros':<34}{batch:>6}{md * 1e3:>10.3f}{ms * 1e3:>11.3f}{md / ms:>9.2f}x"
                  f"{diff:>12.2e}")
    print(f"{'whole S-FC':<34}")
    with tempfile.TemporaryDirectory() as tmp:
        for zeros, layers in ((0.95, 1), (0.99, 1), (0.95, 2), (0.99, 2)):
            dense = sparsified(zeros, layers)
            path = export_model_sparse(dense, Path(tmp) / f"net{zeros}{layers}", config={"model": "s-fc",
                                       "alpha": ALPHA}, geometry=GEOMETRY)
            sparse = load_sparse(path)
            for batch in (1, 64, 512):
                x = torch.randn(batch, 1, SIDE, SIDE)
                md, ms, diff = compare(dense, sparse, x, rounds)
                name = f"  {zeros:.0%} zeros in layer{'s 1-2' if layers == 2 else ' 1'}"
                print(f"{name:<34}{batch:>6}{md * 1e3:>10.3f}{ms * 1e3:>11.3f}{md / ms:>9.2f}x{diff:>12.2e}")


if __name__ == "__main__":
    main()
