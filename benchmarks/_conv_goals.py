"""The ConvRFM speed goals (``bench_rfm.py --conv-goals``): stage times of one round, rates against a ceiling."""

from __future__ import annotations

import time

import torch

from convemerge.kernels import ConvolutionalKernel, DeepConvRFMClassifier, solve_regularized


def _images(dataset: str, n: int, data_dir, seed: int = 0):
    """(float32 images (n, C, H, W), one-hot targets, source): the real set when found, else random images."""
    try:
        from convemerge.experiments.convrfm.kernel_fit import load_image_arrays

        X, y = load_image_arrays(dataset, "train", n, seed, data_dir)
        X, y, source = X[:n], y[:n], dataset
    except Exception:
        shape = (1, 42, 42) if dataset == "digit-in-noise" else (1, 28, 28)
        g = torch.Generator().manual_seed(seed)
        X, y, source = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g), "random"
    return X, torch.nn.functional.one_hot(y, 10).to(X.dtype), source


def ceiling(seconds: float = 1.0) -> float:
    """Element-wise multiplies per second over 2**20 float32 numbers, all torch threads (the memory-bound
    ceiling every pass of an unfused recursion pays)."""
    a, b, o = torch.rand(2**20), torch.rand(2**20), torch.empty(2**20)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mul(a, b, out=o)
        reps += 1
    return reps * 2**20 / (time.perf_counter() - t0)


def _round(kernel_args: dict, X: torch.Tensor, Y: torch.Tensor, mem_cls, device) -> dict:
    """One ConvRFM round on the first 90 % of X (validation on the rest), stage by stage."""
    n = len(X)
    n_tr = n - n // 10
    Xf = X.flatten(1).to(device)
    Y = Y.to(device=device, dtype=Xf.dtype)
    Xtr, Xva, Ytr = Xf[:n_tr], Xf[n_tr:], Y[:n_tr]
    k = ConvolutionalKernel(tuple(X.shape[1:]), **kernel_args)
    out = {}
    cpu0 = time.process_time()
    with mem_cls(torch.device(device)) as mem:
        t0 = time.perf_counter()
        K = k.matrix(Xtr)
        out["kernel"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        k.matrix(Xva, Xtr)
        out["cross"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        coef = solve_regularized(K.double(), Ytr.double(), 1e-3, "cholesky").to(K.dtype)
        out["solve"] = time.perf_counter() - t0
        del K
        t0 = time.perf_counter()
        k.agop(Xtr, Xtr, coef)
        out["agop"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - cpu0  # CPU seconds of all threads: robust to other jobs' load
    out["peak_mib"] = mem.peak / 2**20
    out["growth_mib"] = (mem.peak - mem.start) / 2**20
    P = k.map_shape[0] * k.map_shape[1]
    out["entries"] = {"kernel": n_tr * (n_tr + 1) / 2 * P * k.depth, "cross": (n - n_tr) * n_tr * P * k.depth,
                      "agop": n_tr * n_tr * P * k.depth}
    return out


def _print_round(name: str, r: dict, ceil: float, goal: float | None) -> None:
    total = sum(r[s] for s in ("kernel", "cross", "solve", "agop"))
    verdict = "" if goal is None else (f" (goal ≤ {goal:.0f} s: {'met' if total <= goal else 'MISSED'})")
    print(f"  {name}: round {total:.1f} s{verdict}, {r['cpu_s']:.0f} CPU-s; peak {r['peak_mib']:.0f} MiB "
          f"(+{r['growth_mib']:.0f} MiB)")
    for stage in ("kernel", "cross", "solve", "agop"):
        line = f"    {stage:6s} {r[stage]:8.2f} s  {100 * r[stage] / total:5.1f}%"
        if stage in r["entries"]:
            rate = r["entries"][stage] / r[stage]
            line += f"   {rate / 1e6:7.1f} M entry-layers/s = {rate / ceil:.3f} × the multiply ceiling"
        print(line)


def _before_after(X, Y, device) -> None:
    """The same small round with the previous map recursion (autograd adjoint), torch operations, fused C."""
    from convemerge.kernels import cntk_native

    class Previous(ConvolutionalKernel):
        _fast = False

    n = min(len(X), 120)
    Xf, Yn = X[:n].flatten(1).to(device), Y[:n].to(device)
    shape = tuple(X.shape[1:])
    rows = [("previous (maps + autograd)", Previous(shape, depth=3)),
            ("chunked, torch operations", ConvolutionalKernel(shape, depth=3, fused=False))]
    if cntk_native.available(Xf):
        rows.append(("chunked, fused C", ConvolutionalKernel(shape, depth=3)))
    print(f"  before/after at n = {n} (kernel matrix + patch-AGOP, same process):")
    base = None
    for name, k in rows:
        t0 = time.perf_counter()
        K = k.matrix(Xf)
        t1 = time.perf_counter()
        k.agop(Xf, Xf, Yn)
        t2 = time.perf_counter()
        base = base or (t1 - t0, t2 - t1)
        print(f"    {name:28s} kernel {t1 - t0:7.2f} s (×{base[0] / (t1 - t0):5.1f})   patch-AGOP {t2 - t1:7.2f} s "
              f"(×{base[1] / (t2 - t1):5.1f})")


def bench_conv_goals(n: int, n_growth: int | None, dtype: str, device, data_dir, mem_cls) -> None:
    ceil = ceiling()
    print(f"\n== ConvRFM speed goals ({dtype}, {device}); ceiling: {ceil / 1e6:.0f} M multiplies/s "
          f"({torch.get_num_threads()} threads) ==")
    dt = torch.float32 if dtype == "float32" else torch.float64
    X, Y, source = _images("mnist", max(n, n_growth or 0), data_dir)
    X, Y = X.to(dt), Y.to(dt)
    _before_after(X, Y, device)
    cntk3 = {"kind": "cntk", "depth": 3, "patch_size": 3}
    r = _round(cntk3, X[:n], Y[:n], mem_cls, device)
    _print_round(f"ConvRFM round, depth-3 CNTK, {source} 28×28, n = {n}", r, ceil, 60.0 if n == 2000 else None)
    Xd, Yd, sd = _images("digit-in-noise", n, data_dir)
    r = _round(cntk3, Xd.to(dt), Yd.to(dt), mem_cls, device)
    _print_round(f"ConvRFM round, depth-3 CNTK, {sd} 42×42, n = {n}", r, ceil, 180.0 if n == 2000 else None)
    est = DeepConvRFMClassifier(depth=2, width=64, n_iter=1, validation_fraction=0.1, dtype=dtype, device=device,
                                random_state=0)
    with mem_cls(torch.device(device)) as mem:
        t0 = time.perf_counter()
        est.fit(X[:n], Y[:n].argmax(1))
        total = time.perf_counter() - t0
    goal = " (goal ≤ 180 s: " + ("met)" if total <= 180 else "MISSED)") if n == 2000 else ""
    print(f"  Deep ConvRFM, 2 levels × 1 round (width 64), {source} 28×28, n = {n}: fit {total:.1f} s{goal}; "
          f"peak {mem.peak / 2**20:.0f} MiB")
    for h in est.history_:
        print(f"    level {h['level']} round {h['iteration']}: kernel {h['time_kernel']:.1f} s, solve "
              f"{h['time_solve']:.1f} s, patch-AGOP {h['time_agop']:.1f} s")
    if n_growth:
        r2 = _round(cntk3, X[:n_growth], Y[:n_growth], mem_cls, device)
        _print_round(f"ConvRFM round, depth-3 CNTK, {source} 28×28, n = {n_growth}", r2, ceil, None)
        r1 = _round(cntk3, X[:n], Y[:n], mem_cls, device)
        t1 = sum(r1[s] for s in ("kernel", "cross", "solve", "agop"))
        t2 = sum(r2[s] for s in ("kernel", "cross", "solve", "agop"))
        print(f"  growth n = {n} → {n_growth}: time ×{t2 / t1:.2f} (n² predicts ×{(n_growth / n) ** 2:.2f}); "
              f"memory growth during the round {r1['growth_mib']:.0f} → {r2['growth_mib']:.0f} MiB "
              f"(the n×n kernel matrix: {4 * (n_growth * 0.9) ** 2 / 2**20:.0f} MiB in float32)")
