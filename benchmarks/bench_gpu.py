"""Paper scale on one GPU: is the training step fast enough for Table 2's 4000-epoch runs?

Everything is measured in this one process, side by side with the GPU's own bf16 matmul throughput:

  1. ``torch.mm`` bf16 throughput (8192², the reference "peak" of this GPU as PyTorch reaches it).
  2. S-FC α = 150 on CIFAR-10 shapes (45,000 training images generated on the device as uint8, batch 512,
     β-LASSO, bf16 autocast with fp32 weights, crop + flip + the AutoAugment policy + Cutout on the device): time
     per step and per epoch, achieved FLOP/s of the model's matmuls and its fraction of (1) (goal ≥ 60 %); the same
     step without augmentation, and with ``torch.compile`` when ``--compile`` is given.
  3. S-LOCAL α = 150: epoch time; its LocallyConnected2d layer against an nn.Conv2d of the same shape; S-CONV
     with channels-last memory format against the default layout.
  4. Packed α = 1 S-FC runs (``convemerge.train.packed``): runs per GPU-hour for k = 1, 4, 16 (400-epoch runs).
  5. The projected wall time of ``reproduce table2 --scale paper`` (its 1,035 runs of 4000 epochs) from the
     measured epoch times (S-CONV and 3-FC measured like S-FC; SVHN epochs scaled by its training-set size).

Timings: warm-up steps first, then a window of steps between two device synchronisations (no per-step sync).

    python benchmarks/bench_gpu.py                    # on a CUDA machine (~3-5 minutes on an H100/H200)
    python benchmarks/bench_gpu.py --compile          # also time torch.compile'd S-FC (adds a compile)
    python benchmarks/bench_gpu.py --dry-run          # CPU, tiny sizes: checks the script end to end
    python benchmarks/bench_gpu.py --json out.json    # also write the numbers as JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from types import SimpleNamespace

import torch
import torch.nn as nn

from _machine import describe_machine
from convemerge.data import ImageLoader
from convemerge.train import TrainConfig
from convemerge.data.autoaugment import load_policy
from convemerge.data.imagedata import ImageData
from convemerge.layers import LocallyConnected2d
from convemerge.models import create_model
from convemerge.optim import BetaLasso, beta_lasso_param_groups
from convemerge.train.engine import make_loss, train_step
from convemerge.train.setup import resolve_precision

CIFAR_TRAIN = 45_000  # CIFAR-10's 50,000 less the 10 % validation hold-out
SVHN_TRAIN = 65_931  # SVHN's 73,257 less 10 %


@dataclasses.dataclass
class Sizes:
    side: int = 32
    alpha: int = 150
    batch: int = 512
    n_train: int = CIFAR_TRAIN
    warmup: int = 5
    steps: int = 30
    mm: int = 8192
    packed: tuple[int, ...] = (1, 4, 16)


DRY = Sizes(side=8, alpha=2, batch=32, n_train=256, warmup=1, steps=2, mm=128, packed=(1, 2))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls after ``warmup`` (one synchronisation per window)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps


def mm_flops(device: torch.device, n: int) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sec = _timed(lambda: torch.mm(a, b), device, 3, 20)
    return 2 * n**3 / sec


def train_flops_per_sample(model: nn.Module, side: int) -> float:
    """Matmul FLOPs of one training sample: forward (2 per multiply-add) ×3 for forward + backward, less the first
    layer's input gradient (data needs none)."""
    per_layer = []

    def hook(mod, inp, out):
        w = mod.weight
        n = w.numel() * (out.shape[-1] * out.shape[-2] if isinstance(mod, nn.Conv2d) else 1)
        per_layer.append(2 * n)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d, LocallyConnected2d))]
    model = model.to("meta").eval()  # shapes only: nothing is computed
    model(torch.zeros(1, 3, side, side, device="meta"))
    for h in handles:
        h.remove()
    return 3 * sum(per_layer) - per_layer[0]


def synthetic_cifar(n: int, side: int, device: torch.device) -> ImageData:
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (n,), generator=g, device=device)
    return ImageData("synthetic-cifar", "train", images, labels, [str(i) for i in range(10)],
                     (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), True)


def time_model(name: str, sz: Sizes, device: torch.device, *, augment: bool, policy: bool, compile: bool = False,
               optimizer: str = "beta-lasso", channels_last: bool = False) -> dict:
    """Seconds per training step (data + augmentation + forward + backward + optimizer) and per epoch."""
    torch.manual_seed(0)
    model = create_model(name, alpha=sz.alpha, image_size=sz.side, in_chans=3, num_classes=10).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    flops = train_flops_per_sample(create_model(name, alpha=sz.alpha, image_size=sz.side, in_chans=3,
                                                num_classes=10).to("meta"), sz.side)
    if optimizer == "beta-lasso":
        opt = BetaLasso(beta_lasso_param_groups(model, 1e-6, 2e-5), lr=0.1, lam=1e-6, beta=50.0)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step_model = torch.compile(model) if compile else model
    precision = resolve_precision("auto", device)
    loss_fn = make_loss("ce", 10)
    data = synthetic_cifar(sz.n_train, sz.side, device)
    loader = ImageLoader(data, sz.batch, shuffle=True, augment=augment, device=device,
                         policy=load_policy("autoaugment") if policy else None,
                         generator=torch.Generator().manual_seed(0), drop_last=True)
    batches = iter(())

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        train_step(step_model, x.contiguous(memory_format=fmt), y, loss_fn, opt, precision, None)

    sec = _timed(step, device, sz.warmup, sz.steps)
    steps_per_epoch = sz.n_train // sz.batch
    return {"model": name, "alpha": sz.alpha, "batch": sz.batch, "augment": augment, "policy": policy,
            "compile": compile, "channels_last": channels_last, "precision": precision.name, "step_s": sec, "epoch_s": sec * steps_per_epoch,
            "flop_per_s": flops * sz.batch / sec, "weights": sum(p.numel() for p in model.parameters())}


def local_vs_conv(sz: Sizes, device: torch.device) -> dict:
    """S-LOCAL's first layer (9×9, stride 2, padding 4, α channels) forward + backward against Conv2d."""
    x = torch.randn(sz.batch, 3, sz.side, sz.side, device=device)
    local = LocallyConnected2d(3, sz.alpha, sz.side, kernel_size=9, stride=2, padding=4).to(device)
    conv = nn.Conv2d(3, sz.alpha, 9, stride=2, padding=4).to(device)
    precision = resolve_precision("auto", device)

    def run(layer):
        def go():
            with precision.autocast(device):
                out = layer(x)
            out.float().square().mean().backward()
        return go

    t_local = _timed(run(local), device, sz.warmup, sz.steps)
    t_conv = _timed(run(conv), device, sz.warmup, sz.steps)
    return {"local_s": t_local, "conv_s": t_conv, "ratio": t_local / t_conv}


def packed_runs_per_hour(sz: Sizes, device: torch.device, epochs: int = 400) -> list[dict]:
    """k S-FC α = 1 β-LASSO runs stepped as one packed model (the packed trainer's own step)."""
    from convemerge.train.packed import _Pack

    out = []
    data = synthetic_cifar(sz.n_train, sz.side, device)
    precision = resolve_precision("auto", device)
    for k in sz.packed:
        runs = []
        for seed in range(k):
            torch.manual_seed(seed)
            model = create_model("s-fc", alpha=1, image_size=sz.side, in_chans=3, num_classes=10).to(device)
            cfg = TrainConfig(optimizer="beta-lasso", lam=1e-6, lam_first=2e-5, beta=50.0, lr=0.1)
            runs.append(SimpleNamespace(model=model, cfg=cfg, precision=precision, loss_fn=make_loss("ce", 10),
                                        data=SimpleNamespace(in_chans=3, image_size=(sz.side, sz.side))))
        pack = _Pack(runs, device, verbose=False)
        loaders = [ImageLoader(data, sz.batch, shuffle=True, augment=True, device=device,
                               generator=torch.Generator().manual_seed(s), drop_last=True) for s in range(k)]
        iters = [iter(())] * k

        def step():
            nonlocal iters
            try:
                batches = [next(it) for it in iters]
            except StopIteration:
                iters = [iter(loader) for loader in loaders]
                batches = [next(it) for it in iters]
            pack._step(torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches]))

        sec = _timed(step, device, sz.warmup, sz.steps)
        epoch = sec * (sz.n_train // sz.batch)
        out.append({"k": k, "vmap": pack.vmapped, "step_s": sec, "epoch_s": epoch,
                    "runs_per_gpu_hour": k * 3600 / (epoch * epochs)})
    return out


def project_table2(epoch_s: dict[str, float]) -> dict:
    """GPU-hours of ``reproduce table2 --scale paper``: every run's epochs × its model's measured CIFAR epoch time,
    SVHN scaled by its training-set size; evaluation passes not included."""
    from collections import Counter

    from convemerge.experiments.registry import get_recipe

    # the jobs are only counted: the runs folder named here is never written
    jobs = [j for j in get_recipe("table2", "paper").jobs("runs") if j.kind == "train"]
    counts = Counter((j.config["model"], j.config["dataset"], j.config["epochs"]) for j in jobs)
    seconds = sum(n * epochs * epoch_s[model] * (SVHN_TRAIN / CIFAR_TRAIN if dataset == "svhn" else 1.0)
                  for (model, dataset, epochs), n in counts.items())
    return {"runs": len(jobs), "gpu_hours": seconds / 3600,
            "by_model_runs": {m: sum(n for (mm, _, _), n in counts.items() if mm == m) for m in epoch_s}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script end to end")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd S-FC")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args()
    device = torch.device("cpu" if args.dry_run else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run to check the script on the CPU")
    sz = DRY if args.dry_run else Sizes()
    print(describe_machine(device))
    results: dict = {"machine": describe_machine(device), "dry_run": args.dry_run, "sizes": dataclasses.asdict(sz)}

    peak = mm_flops(device, sz.mm)
    results["mm_flop_per_s"] = peak
    print(f"torch.mm {'bf16' if device.type == 'cuda' else 'fp32'} {sz.mm}²: {peak / 1e12:.1f} TFLOP/s")

    sfc = [time_model("s-fc", sz, device, augment=True, policy=True),
           time_model("s-fc", sz, device, augment=False, policy=False)]
    if args.compile:
        sfc.append(time_model("s-fc", sz, device, augment=True, policy=True, compile=True))
    for r in sfc:
        r["fraction_of_mm"] = r["flop_per_s"] / peak
        print(f"S-FC α={sz.alpha} batch {sz.batch} β-LASSO {r['precision']} augment={r['augment']} "
              f"policy={r['policy']} compile={r['compile']}: {1e3 * r['step_s']:.2f} ms/step, "
              f"{r['epoch_s']:.2f} s/epoch, {r['flop_per_s'] / 1e12:.1f} TFLOP/s = "
              f"{100 * r['fraction_of_mm']:.0f}% of torch.mm")
    results["s_fc"] = sfc

    others = {m: time_model(m, sz, device, augment=True, policy=True, optimizer="sgd")
              for m in ("s-local", "s-conv", "3-fc")}
    for m, r in others.items():
        print(f"{m} α={sz.alpha} SGD: {1e3 * r['step_s']:.2f} ms/step, {r['epoch_s']:.2f} s/epoch")
    results["others"] = others
    # channels-last only matters for the convolution: measured, not assumed
    cl = time_model("s-conv", sz, device, augment=True, policy=True, optimizer="sgd", channels_last=True)
    print(f"s-conv channels-last: {1e3 * cl['step_s']:.2f} ms/step "
          f"({others['s-conv']['step_s'] / cl['step_s']:.2f}x the default layout's speed)")
    results["s_conv_channels_last"] = cl
    lc = local_vs_conv(sz, device)
    print(f"LocallyConnected2d vs Conv2d (α={sz.alpha}, batch {sz.batch}, fwd+bwd): {1e3 * lc['local_s']:.2f} ms "
          f"vs {1e3 * lc['conv_s']:.2f} ms = {lc['ratio']:.1f}x")
    results["local_vs_conv"] = lc

    packed = packed_runs_per_hour(sz, device)
    for r in packed:
        print(f"packed S-FC α=1 k={r['k']} ({'vmap' if r['vmap'] else 'loop'}): {1e3 * r['step_s']:.2f} ms/step, "
              f"{r['runs_per_gpu_hour']:.1f} 400-epoch runs per GPU-hour")
    results["packed"] = packed

    epoch_s = {"s-fc": sfc[0]["epoch_s"], **{m: r["epoch_s"] for m, r in others.items()}}
    proj = project_table2(epoch_s)
    print(f"reproduce table2 --scale paper: {proj['runs']} runs, projected {proj['gpu_hours']:.0f} GPU-hours "
          f"(epoch times as measured here{', tiny dry-run sizes' if args.dry_run else ''})")
    results["table2_projection"] = proj
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
