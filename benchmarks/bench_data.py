"""Data-path speed, measured side by side in one process; prints ratios and the machine.

    python benchmarks/bench_data.py [--data-dir DIR] [--n 10000] [--batch 256] [--device cpu]

1. Batched crop+flip (one gather for the batch) vs the per-sample Python loop it replaces.
2. An ImageLoader epoch with augmentation vs without (cost of augmentation on the device).
3. Loading a verified data set the first time in a process (hashing) vs again (digests cached).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from convemerge.data import ImageLoader, load_dataset, random_crop_flip
from convemerge.data import digests
from convemerge.data.registry import clear_stats_cache


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def best_of(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def loop_crop_flip(x, offsets, flips, pad=4):
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    h, w = x.shape[2:]
    for i in range(x.shape[0]):
        oy, ox = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, oy:oy + h, ox:ox + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-bin (else random CIFAR-sized data)")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}")

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, generator=g).to(args.device)
    off = torch.randint(0, 9, (args.batch, 2), generator=g).to(args.device)
    flip = (torch.rand(args.batch, generator=g) < 0.5).to(args.device)
    assert torch.equal(random_crop_flip(x, off, flip), loop_crop_flip(x, off, flip))
    t_vec = best_of(lambda: random_crop_flip(x, off, flip))
    t_loop = best_of(lambda: loop_crop_flip(x, off, flip))
    print(f"crop+flip of {args.batch} images: batched {t_vec * 1e3:.2f} ms, per-sample loop {t_loop * 1e3:.2f} ms, "
          f"loop/batched = {t_loop / t_vec:.1f}x")

    if args.data_dir:
        data = load_dataset("cifar10", "train", args.data_dir, download=False).subset(slice(0, args.n))
    else:
        from convemerge.data import ImageData
        data = ImageData("random", "train", torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8),
                         torch.randint(0, 10, (args.n,)), [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3, True)

    def epoch(augment):
        for _ in ImageLoader(data, args.batch, shuffle=True, augment=augment, device=args.device,
                             generator=torch.Generator().manual_seed(0)):
            pass
    t_plain, t_aug = best_of(lambda: epoch(False)), best_of(lambda: epoch(True))
    print(f"ImageLoader epoch of {len(data)} images: plain {t_plain * 1e3:.1f} ms "
          f"({len(data) / t_plain:,.0f} img/s), augmented {t_aug * 1e3:.1f} ms, augmented/plain = "
          f"{t_aug / t_plain:.2f}x")

    if args.data_dir:
        def load():
            clear_stats_cache()
            load_dataset("mnist", "train", args.data_dir, download=False)
        digests.clear_cache()
        t_first = best_of(lambda: (digests.clear_cache(), load()), repeats=2)
        t_cached = best_of(load, repeats=2)
        t_noverify = best_of(lambda: (clear_stats_cache(),
                                      load_dataset("mnist", "train", args.data_dir, download=False, verify=False)),
                             repeats=2)
        print(f"load mnist train: first in process {t_first * 1e3:.0f} ms, digests cached {t_cached * 1e3:.0f} ms, "
              f"verify=False {t_noverify * 1e3:.0f} ms; first/cached = {t_first / t_cached:.2f}x")


if __name__ == "__main__":
    main()
