"""What does β-LASSO cost over plain SGD? (S-FC, α = 8, 28×28×1 inputs, batch 512, fp32)

Side by side in one process, timings interleaved (A B C A B C …) and summarised by their medians:
  1. a whole training step — forward, cross-entropy, backward, optimizer step — with BetaLasso (its default path
     and the foreach path) against ``torch.optim.SGD`` without momentum, on identical copies of one model and
     one batch. Goal: β-LASSO ≤ 1.05 × SGD.
  2. the optimizer step alone on fixed gradients: BetaLasso loop / foreach, BetaLassoReference, and SGD with
     and without foreach.

    python benchmarks/bench_optim.py              # 30 interleaved rounds
    python benchmarks/bench_optim.py --quick      # 9 rounds
    python benchmarks/bench_optim.py --threads 1  # steadier on a shared machine
    python benchmarks/bench_optim.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from convemerge.optim import BetaLasso, BetaLassoReference, beta_lasso_param_groups
from _machine import describe_machine

ALPHA, SIDE, IN_CHANS, CLASSES, BATCH = 8, 28, 1, 10, 512
LR, LAM, LAM_FIRST, BETA = 0.1, 1e-5, 2e-5, 50.0


def s_fc() -> tuple[nn.Module, str]:
    """The registry's S-FC when it is there, else the same layers built here."""
    try:
        from convemerge.models import create_model

        return create_model("s-fc", alpha=ALPHA, image_size=SIDE, in_chans=IN_CHANS, num_classes=CLASSES), "registry"
    except Exception:  # models package absent or mid-change: the benchmark only needs the shapes
        hidden = ALPHA * SIDE * SIDE // 4
        model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(IN_CHANS * SIDE * SIDE, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, 24 * ALPHA), nn.BatchNorm1d(24 * ALPHA), nn.ReLU(),
            nn.Linear(24 * ALPHA, CLASSES),
        )
        return model, "local definition"


def interleaved(cases: dict[str, Callable[[], None]], rounds: int, inner: int, sync: Callable[[], None]) -> dict:
    """Median seconds per call of each case. A round times every case once (``inner`` calls each); the order
    rotates from round to round so that no case always runs first (or right after the most expensive one)."""
    for fn in cases.values():  # warm-up: allocator, kernels, lazy init
        fn()
    sync()
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = cases[name]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / inner)
    return {name: statistics.median(v) for name, v in times.items()}


def report(title: str, medians: dict[str, float], baseline: str) -> None:
    print(f"\n{title}")
    for name, sec in medians.items():
        print(f"  {name:<28} {sec * 1e3:9.3f} ms   {sec / medians[baseline]:6.3f} × {baseline}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="9 rounds instead of 30")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rounds, inner = (9, 1) if args.quick else (30, 2)

    torch.manual_seed(0)
    base, source = s_fc()
    base = base.to(device)
    n_params = sum(p.numel() for p in base.parameters())
    print(f"machine: {describe_machine(device)}")
    print(f"model: S-FC α={ALPHA}, {SIDE}×{SIDE}×{IN_CHANS} ({source}), {n_params:,} parameters; batch {BATCH}; "
          f"β-LASSO lr={LR} λ={LAM} λ_first={LAM_FIRST} β={BETA}; {rounds} rounds × {inner}")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, IN_CHANS, SIDE, SIDE, generator=gen).to(device)
    y = torch.randint(0, CLASSES, (BATCH,), generator=gen).to(device)

    def bl(model, **kw):
        return BetaLasso(beta_lasso_param_groups(model, LAM, LAM_FIRST), lr=LR, beta=BETA, **kw)

    # 1. whole training step
    def train_case(make_opt):
        model = copy.deepcopy(base).train()
        opt = make_opt(model)

        def run():
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        return run

    full = interleaved(
        {
            "SGD": train_case(lambda m: torch.optim.SGD(m.parameters(), lr=LR)),
            "BetaLasso (default path)": train_case(bl),
            "BetaLasso (foreach)": train_case(lambda m: bl(m, foreach=True)),
        },
        rounds, inner, sync,
    )
    report("training step (forward + backward + step):", full, "SGD")

    # 2. optimizer step alone, on fixed gradients
    def step_case(make_opt):
        model = copy.deepcopy(base)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-3
        return make_opt(model).step

    alone = interleaved(
        {
            "SGD (foreach)": step_case(lambda m: torch.optim.SGD(m.parameters(), lr=LR, foreach=True)),
            "SGD (loop)": step_case(lambda m: torch.optim.SGD(m.parameters(), lr=LR, foreach=False)),
            "BetaLasso (foreach)": step_case(lambda m: bl(m, foreach=True)),
            "BetaLasso (loop)": step_case(lambda m: bl(m, foreach=False)),
            "BetaLassoReference": step_case(
                lambda m: BetaLassoReference(beta_lasso_param_groups(m, LAM, LAM_FIRST), lr=LR, beta=BETA)
            ),
        },
        rounds, 10, sync,
    )
    report("optimizer step alone:", alone, "SGD (foreach)")
    path = "foreach" if device.type == "cuda" else "loop"  # what foreach=None picks, for both optimizers
    step_bl, step_sgd = alone[f"BetaLasso ({path})"], alone[f"SGD ({path})"]
    print(
        f"\nratios ({path} paths): training step β-LASSO/SGD = {full['BetaLasso (default path)'] / full['SGD']:.3f} "
        f"(goal ≤ 1.05); step alone β-LASSO/SGD = {step_bl / step_sgd:.2f}, "
        f"β-LASSO/reference = {step_bl / alone['BetaLassoReference']:.3f}; "
        f"β-LASSO step = {step_bl / full['BetaLasso (default path)']:.1%} of its training step"
    )

if __name__ == "__main__":
    main()
