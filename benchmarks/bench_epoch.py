"""Where does one training epoch of a small net go? (the `seed` scale: S-FC α = 1 on CIFAR-10, batch 512)

Side by side in one process, for one epoch of the real pieces the loop uses:
  1. the optimizer steps (loader batches + forward + backward + step), and the loader alone — cutting batches from
     the standardised split the training loop holds (``cache=True``) and standardising every batch as it is cut;
  2. the per-epoch extras: the validation pass, the test pass, non-zero counts + first-layer locality, a checkpoint.
Prints each as seconds and as a share of the epoch, with and without a test pass every epoch (``test_every``).

    python benchmarks/bench_epoch.py --data-dir ../shared/datasets            # CIFAR-10 files
    python benchmarks/bench_epoch.py --synthetic                              # random CIFAR-shaped uint8 data
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from _machine import describe_machine

from convemerge.data import ImageLoader
from convemerge.train import TrainConfig
from convemerge.train.checkpoint import save_checkpoint
from convemerge.train.engine import evaluate, make_loss, model_measurements, train_step
from convemerge.train.setup import build_model, build_optimizer, prepare_data, resolve_precision


def synthetic_like(data, g: torch.Generator):
    """The same split with random uint8 images (same shapes, labels and statistics fields)."""
    imgs = torch.randint(0, 256, data.images.shape, dtype=torch.uint8, generator=g)
    return dataclasses.replace(data, images=imgs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the CIFAR-10 files")
    ap.add_argument("--synthetic", action="store_true", help="random images of CIFAR-10's shapes (no files)")
    ap.add_argument("--model", default="s-fc")
    ap.add_argument("--alpha", type=int, default=1)
    ap.add_argument("--optimizer", default="beta-lasso")
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed (the median is printed)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(model=args.model, alpha=args.alpha, dataset="cifar10", data_dir=args.data_dir,
                      optimizer=args.optimizer, lam=2e-5, lam_first=2e-5, beta=50.0, momentum=0.0, batch_size=512,
                      augment=False, input_norm="half", loss="bce-onehot", device="cpu")
    cfg.validate()
    if args.synthetic:
        from convemerge.data.imagedata import ImageData

        g = torch.Generator().manual_seed(0)

        def fake(n):
            return ImageData("cifar10-like", "train", torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8,
                                                                    generator=g),
                             torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)], (0.5,) * 3,
                             (0.5,) * 3, False)

        train, val, test = fake(45_000), fake(5_000), fake(10_000)
        image_size, in_chans, classes = (32, 32), 3, 10
    else:
        data = prepare_data(cfg)
        train, val, test = data.train, data.val, data.test
        image_size, in_chans, classes = data.image_size, data.in_chans, data.num_classes
    model = build_model(cfg, type("D", (), {"image_size": image_size, "in_chans": in_chans,
                                            "num_classes": classes})())
    opt = build_optimizer(cfg, model)
    loss_fn = make_loss(cfg.loss, classes)
    prec = resolve_precision("off", torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    # as the training loop builds them (loop.CACHE_STANDARDISED_BYTES: CIFAR-10's splits are held standardised)
    loader = ImageLoader(train, 512, shuffle=True, generator=gen, cache=True)
    uncached = ImageLoader(train, 512, shuffle=True, generator=torch.Generator().manual_seed(0))
    val_l, test_l = ImageLoader(val, 1024, cache=True), ImageLoader(test, 1024, cache=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            for x, y in loader:
                train_step(model, x, y, loss_fn, opt, prec, None)
            t1 = time.perf_counter()
            for _x, _y in uncached:
                pass
            t1b = time.perf_counter()
            for _x, _y in loader:
                pass
            t2 = time.perf_counter()
            evaluate(model, iter(val_l), loss_fn, prec)
            t3 = time.perf_counter()
            evaluate(model, iter(test_l), loss_fn, prec)
            t4 = time.perf_counter()
            model_measurements(model)
            t5 = time.perf_counter()
            save_checkpoint(Path(tmp) / "last", model, opt, {"epoch": 0})
            t6 = time.perf_counter()
            rows.append({"steps": t1 - t0, "loader": t2 - t1b, "uncached": t1b - t1, "val": t3 - t2, "test": t4 - t3, "measure": t5 - t4,
                         "checkpoint": t6 - t5})
    med = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in rows[0]}
    print(describe_machine())
    print(f"{args.model} α={args.alpha} {args.optimizer}, {len(train)} train / {len(val)} val / {len(test)} test, "
          f"batch 512, {'synthetic' if args.synthetic else 'CIFAR-10'} (median of {args.epochs} epochs)")
    for test_every in (1, 10):
        extras = med["val"] + med["test"] / test_every + med["measure"] + med["checkpoint"]
        epoch = med["steps"] + extras
        print(f"test_every={test_every:>2}: epoch {epoch:.2f}s = steps {med['steps']:.2f}s "
              f"(of which loader {med['loader']:.2f}s, {100 * med['loader'] / epoch:.0f} %; standardising each batch "
              f"instead: {med['uncached']:.2f}s) + extras {extras:.2f}s "
              f"({100 * extras / epoch:.0f} %: val {med['val']:.2f}, test {med['test'] / test_every:.2f}, "
              f"measure {med['measure']:.3f}, checkpoint {med['checkpoint']:.3f})")


if __name__ == "__main__":
    main()
