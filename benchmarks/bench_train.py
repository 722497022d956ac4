"""How close does the training engine get to the machine's matmul speed? (S-FC, CPU, fp32)

Side by side in one process:
  1. torch.mm throughput at exactly the matrix shapes of S-FC's forward and backward passes (the ceiling);
  2. one epoch (or --steps steps) of the real engine — ImageLoader batches, forward, backward, optimizer step —
     for SGD and for β-LASSO, with S-FC's FLOPs counted analytically (≈ 3 × 2 × Σ in·out per sample);
  3. the per-epoch extras the loop adds: validation + test passes, non-zero counts, first-layer locality.
Prints achieved FLOP/s as a fraction of (1) — goal ≥ 60% — and the machine.

    python benchmarks/bench_train.py            # Fashion-MNIST-sized epoch: 54,000 samples, batch 512
    python benchmarks/bench_train.py --quick    # 20 steps
"""

from __future__ import annotations

import argparse
import time

import torch
from _machine import describe_machine


def linear_shapes(model) -> list[tuple[int, int]]:
    """(in, out) of each linear weight layer of the model."""
    return [(layer.module.in_features, layer.module.out_features) for layer in model.weight_layers()]


def mm_throughput(shapes: list[tuple[int, int]], batch: int, repeats: int) -> float:
    """FLOP/s of torch.mm over the forward and backward products of these linear layers at this batch.

    Forward x(B,in)·Wᵀ; backward dX = dY(B,out)·W (skipped for the first layer, as autograd does: its input needs
    no gradient) and dW = dYᵀ(out,B)·x. Same shapes and count as the real pass, without the rest of the model.
    """
    ops = []
    for i, (fin, fout) in enumerate(shapes):
        x, w, dy = torch.randn(batch, fin), torch.randn(fout, fin), torch.randn(batch, fout)
        ops.append((x, w.t()))
        ops.append((dy.t(), x))
        if i > 0:
            ops.append((dy, w))
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in ops)
    for a, b in ops:  # warm-up
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a, b in ops:
            torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return flops / best


def model_flops_per_sample(shapes: list[tuple[int, int]]) -> float:
    """Forward 2·in·out per layer, backward twice that (dX and dW): ≈ 3 × 2 × Σ in·out (counted exactly,
    i.e. without the first layer's dX, which autograd skips)."""
    fwd = sum(2 * i * o for i, o in shapes)
    return fwd + fwd + (fwd - 2 * shapes[0][0] * shapes[0][1])


def time_training(model_name: str, alpha: int, optimizer: str, n: int, batch: int, steps: int | None) -> dict:
    from convemerge.data import ImageData, ImageLoader
    from convemerge.models import create_model
    from convemerge.train.config import TrainConfig
    from convemerge.train.engine import make_loss, train_step
    from convemerge.train.setup import build_optimizer, resolve_precision

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    data = ImageData("bench", "train", images, labels, [str(i) for i in range(10)], (0.29,), (0.35,), False)
    torch.manual_seed(0)
    model = create_model(model_name, alpha=alpha, image_size=28, in_chans=1, num_classes=10)
    cfg = TrainConfig(model=model_name, alpha=alpha, optimizer=optimizer, lr=0.05, lam=1e-6, lam_first=2e-5, beta=50)
    opt = build_optimizer(cfg, model)
    loader = ImageLoader(data, batch, shuffle=True, generator=torch.Generator().manual_seed(1))
    loss_fn = make_loss("ce", 10)
    precision = resolve_precision("off", torch.device("cpu"))
    model.train()
    it = iter(loader)
    for _ in range(2):  # warm-up steps (allocator, first-touch of the weights)
        x, y = next(it)
        train_step(model, x, y, loss_fn, opt, precision, None)
    total = steps if steps is not None else len(loader)
    done, samples = 0, 0
    t0 = time.perf_counter()
    while done < total:
        for x, y in loader:
            train_step(model, x, y, loss_fn, opt, precision, None)
            done += 1
            samples += y.numel()
            if done == total:
                break
    seconds = time.perf_counter() - t0
    return {"model": model, "seconds": seconds, "samples": samples, "steps": done}


def time_extras(model, n_eval: int, batch: int) -> dict:
    from convemerge.data import ImageData, ImageLoader
    from convemerge.train.engine import evaluate, make_loss, model_measurements
    from convemerge.train.setup import resolve_precision

    images = torch.randint(0, 256, (n_eval, 1, 28, 28), dtype=torch.uint8)
    data = ImageData("bench", "test", images, torch.randint(0, 10, (n_eval,)), [str(i) for i in range(10)],
                     (0.29,), (0.35,), False)
    t0 = time.perf_counter()
    evaluate(model, ImageLoader(data, batch), make_loss("ce", 10), resolve_precision("off", torch.device("cpu")))
    t1 = time.perf_counter()
    model_measurements(model)
    t2 = time.perf_counter()
    return {"eval": t1 - t0, "measure": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 steps instead of a full epoch")
    ap.add_argument("--alpha", type=int, default=8, help="S-FC width α (default 8: 784 -> 1568 -> 192 -> 10)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=None, help="time this many steps instead of an epoch")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 20 if args.quick and args.steps is None else args.steps
    n_train = 54_000  # Fashion-MNIST's 60,000 less a 10% validation hold-out

    from convemerge.models import create_model

    probe = create_model("s-fc", alpha=args.alpha, image_size=28, in_chans=1, num_classes=10)
    shapes = linear_shapes(probe)
    del probe
    print(f"machine: {describe_machine()}")
    print(f"S-FC α={args.alpha} on 1x28x28: linear layers {shapes}; batch {args.batch_size}; "
          f"{'%d steps' % steps if steps else 'one epoch of %d samples' % n_train}")
    ceiling = mm_throughput(shapes, args.batch_size, repeats=3 if args.quick else 10)
    per_sample = model_flops_per_sample(shapes)
    print(f"torch.mm at these shapes (fwd+bwd products): {ceiling / 1e9:8.1f} GFLOP/s  (the ceiling)")
    results = {}
    for opt in ("sgd", "beta-lasso"):
        r = time_training("s-fc", args.alpha, opt, n_train, args.batch_size, steps)
        achieved = per_sample * r["samples"] / r["seconds"]
        results[opt] = r
        per_epoch = r["seconds"] / r["samples"] * n_train
        print(f"engine {opt:10s}: {r['steps']:4d} steps in {r['seconds']:6.2f}s -> {achieved / 1e9:8.1f} GFLOP/s "
              f"= {achieved / ceiling:6.1%} of torch.mm   (epoch of {n_train}: {per_epoch:6.1f}s)")
    ratio = results["beta-lasso"]["seconds"] / results["sgd"]["seconds"]
    print(f"beta-lasso / sgd step time: {ratio:.2f}x")
    extras = time_extras(results["sgd"]["model"], 6_000 + 10_000 if not args.quick else 2_000, 1024)
    print(f"per-epoch extras: val+test eval {extras['eval']:.2f}s, non-zero counts + first-layer PR "
          f"{extras['measure']:.3f}s")


if __name__ == "__main__":
    main()
