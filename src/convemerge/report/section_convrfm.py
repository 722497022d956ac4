"""The ``convrfm`` experiment: RFM vs ConvRFM vs Deep ConvRFM vs the fixed kernels (Laplace, CNTK) vs the trained
vanilla CNN, per dataset and training-set size; the rounds validation chose; the learned metrics' eigenfilters.

Reads each kernel job's ``summary.json`` (:func:`convemerge.experiments.convrfm.jobs.kernel_job`) and the CNN runs'
summaries, and embeds the eigenfilter pictures the jobs wrote; nothing is recomputed.
"""

from __future__ import annotations

import math
from collections import defaultdict

from convemerge.experiments.selection import mean_std
from convemerge.report.document import Figure, Section, Table, Text, figure_png, new_figure
from convemerge.report.paper import label
from convemerge.report.records import ExperimentRecords, fmt_ms
from convemerge.report.sections import provenance, register_section

__all__ = ["convrfm_section", "method_results"]

ORDER = ("laplace", "rfm", "cntk", "convrfm", "convrfm-agop1", "convrfm-agop2", "convrfm-authors", "deep-convrfm",
         "deep-convrfm-authors", "cnn")
NAMES = {"laplace": "Laplace (M = I)", "rfm": "RFM", "cntk": "CNTK (M = I)", "convrfm": "ConvRFM",
         "convrfm-agop1": "ConvRFM (M = AGOP)", "convrfm-agop2": "ConvRFM (M = AGOP²)",
         "convrfm-authors": "ConvRFM (authors: M = AGOP², valid, K/max K)",
         "deep-convrfm": "Deep ConvRFM", "deep-convrfm-authors": "Deep ConvRFM (authors: linear W = G·T, valid)",
         "cnn": "CNN (trained)"}


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def method_results(rec: ExperimentRecords) -> dict[tuple[str, int, str], list[dict]]:
    """(dataset, n, method) -> one entry per finished job/run: seed, run id, val/test accuracy (fractions), the
    chosen round, fit seconds and the job folder."""
    out: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for job in rec.jobs:
        s = rec.summaries.get(job["run_id"])
        if not s:
            continue
        tags = rec.arms.get(job["arm"], {}).get("tags", {})
        if job.get("kind") == "callable" and str(job.get("target", "")).endswith(":kernel_job"):
            cfg = job.get("config") or {}
            key = (job.get("dataset"), int(cfg.get("n_train", tags.get("n", 0))),
                   cfg.get("variant") or cfg.get("method"))
            out[key].append({"seed": job.get("seed"), "run": job["run_id"], "val": _num(s.get("val_accuracy")),
                             "test": _num(s.get("test_accuracy")), "round": s.get("best_iter"),
                             "rounds": s.get("best_iters"), "seconds": _num(s.get("fit_seconds")),
                             "picture": s.get("eigenfilters"), "dir": rec.run_dir(job["run_id"]),
                             "image_shape": s.get("image_shape"), "metric_key": s.get("eigenfilters_metric"),
                             "picture_round": s.get("eigenfilters_round"),
                             "patch_size": (s.get("params") or {}).get("patch_size")})
        elif job.get("kind", "train") == "train" and tags.get("method") == "cnn":
            if s.get("status") != "completed":
                continue
            out[(job.get("dataset"), int(tags.get("n", 0)), "cnn")].append(
                {"seed": job.get("seed"), "run": job["run_id"], "val": _num(s.get("best_val_acc")),
                 "test": _num(s.get("test_acc_at_best")), "round": s.get("best_epoch"), "rounds": None,
                 "seconds": _num(s.get("wall_time")), "picture": None, "dir": rec.run_dir(job["run_id"])})
    for entries in out.values():
        entries.sort(key=lambda e: (e["seed"] is None, e["seed"]))
    return out


def _accuracy_table(res, keys) -> Table:
    body = []
    shown = [m for m in ORDER if m in ORDER[:4] + ("deep-convrfm", "cnn") or any(res.get((d, n, m)) for d, n in keys)]
    for d, n in keys:
        row = [label(d), str(n)]
        for m in shown:
            row.append(fmt_ms([e["test"] for e in res.get((d, n, m), [])]))
        body.append(row)
    return Table(["dataset", "n", *[NAMES[m] for m in shown]], body,
                 "Test accuracy % (mean ± std over seeds) of the selected round / epoch; every method sees the same "
                 "n labelled images per seed and the same test images.")


def _detail_table(res, keys) -> Table:
    body = []
    for d, n in keys:
        for m in ORDER:
            es = res.get((d, n, m), [])
            if not es:
                continue
            rounds = ", ".join(str(e["rounds"] if e["rounds"] else e["round"]) for e in es)
            body.append([label(d), str(n), NAMES[m], fmt_ms([e["val"] for e in es]), fmt_ms([e["test"] for e in es]),
                         rounds, fmt_ms([e["seconds"] for e in es], 1.0, 1), ", ".join(e["run"] for e in es)])
    return Table(["dataset", "n", "method", "val acc %", "test acc %", "chosen round per seed (CNN: epoch)",
                  "seconds", "run ids"], body,
                 "Per method: validation accuracy of the chosen round, test accuracy, the round (epoch for the CNN) "
                 "validation chose for each seed — round 0 is the kernel with M = I, i.e. no feature learning — "
                 "fit time, and run ids.")


def _paired(res, d, n, a, b) -> tuple[float | None, float | None, int]:
    """Mean and std over seeds of test(a) − test(b), paired by seed."""
    ta = {e["seed"]: e["test"] for e in res.get((d, n, a), []) if e["test"] is not None}
    tb = {e["seed"]: e["test"] for e in res.get((d, n, b), []) if e["test"] is not None}
    diffs = [ta[s] - tb[s] for s in sorted(set(ta) & set(tb))]
    m, s, k = mean_std(diffs)
    return m, s, k


def _verdict(res, keys) -> Text:
    lines = []
    for d, n in keys:
        parts = []
        for a, b in (("convrfm", "rfm"), ("convrfm", "cntk"), ("rfm", "laplace"), ("convrfm", "cnn"),
                     ("convrfm-agop1", "convrfm"), ("convrfm-agop2", "convrfm"), ("convrfm-authors", "convrfm"),
                     ("deep-convrfm", "convrfm"), ("deep-convrfm-authors", "deep-convrfm")):
            m, s, k = _paired(res, d, n, a, b)
            if m is None:
                continue
            spread = f" ± {100 * s:.2f}" if s is not None else ""
            parts.append(f"{NAMES[a]} − {NAMES[b]} = {100 * m:+.2f}{spread} pts ({k} seed(s))")
        if parts:
            lines.append(f"- {label(d)}, n = {n}: " + "; ".join(parts) + ".")
    return Text("**Differences in test accuracy** (mean ± std over seeds of the per-seed difference).\n"
                + "\n".join(lines) if lines else "No paired results yet.")


def _plot(res, d, ns):
    fig = new_figure(8.4, 3.4)  # room for the legend beside the axes: it names up to ten methods
    ax = fig.subplots()
    lows = []
    for i, m in enumerate(ORDER):
        pts = [(n, mean_std([e["test"] for e in res.get((d, n, m), [])])) for n in ns]
        pts = [(n, ms) for n, ms in pts if ms[0] is not None]
        if not pts:
            continue
        xs = [n for n, _ in pts]
        ys = [100 * ms[0] for _, ms in pts]
        err = [100 * (ms[1] or 0.0) for _, ms in pts]
        lows += ys
        if len(ns) > 1:
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, color=f"C{i}", label=NAMES[m])
        else:
            ax.bar([i], ys, yerr=err, color=f"C{i}", capsize=3, label=NAMES[m])
    if len(ns) > 1:
        ax.set(xscale="log", xlabel="n (labelled training images)")
    else:
        ax.set_xticks([])
        ax.set(xlabel=f"n = {ns[0]}")
        if lows:  # bars start near the lowest method, not at 0: the differences are the point
            ax.set_ylim(max(0.0, min(lows) - 10.0), min(100.0, max(lows) + 5.0))
    ax.set(ylabel="test accuracy %", title=label(d))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


@register_section("convrfm", order=80)
def convrfm_section(rec: ExperimentRecords) -> Section:
    s = Section("convrfm", "Kernel machines that learn features: RFM, ConvRFM, Deep ConvRFM")
    s.add(provenance(rec))
    res = method_results(rec)
    if not res:
        s.add(Text("No finished jobs yet."))
        return s
    keys = sorted({(d, n) for d, n, _ in res}, key=lambda k: (rec.datasets.index(k[0])
                                                             if k[0] in rec.datasets else 99, k[1]))
    s.add(_accuracy_table(res, keys))
    s.add(_verdict(res, keys))
    s.add(_detail_table(res, keys))
    for d in dict.fromkeys(k[0] for k in keys):
        ns = sorted(n for dd, n in keys if dd == d)
        s.add(Figure(figure_png(_plot(res, d, ns)), f"{label(d)}: test accuracy per method (mean ± std over seeds).",
                     f"convrfm-{d}-accuracy"))
        for m, what in (("convrfm", "ConvRFM: top eigenvectors of the learned patch metric M"),
                        ("deep-convrfm", "Deep ConvRFM: top eigenvectors of the first level's patch metric"),
                        ("rfm", "RFM: top eigenvectors of the learned M as images")):
            n = ns[-1]
            for e in res.get((d, n, m), []):
                png = _eigenfilters(e, m) if e["picture"] else None  # only where validation chose a learned M
                if png is not None:
                    unused = (f"; validation kept M = I, so this is round {e['picture_round']}'s metric, learned "
                              f"but not used" if str(e.get("metric_key") or "").endswith("_last") else "")
                    s.add(Figure(png, f"{label(d)}, n = {n}, seed {e['seed']} (run {e['run']}): {what}, titled by "
                                 f"eigenvalue; red +, blue −, zero white (round chosen: {e['rounds'] or e['round']}"
                                 f"{unused}).",
                                 f"convrfm-{d}-{m}-eigenfilters"))
                    break
    return s


def _eigenfilters(entry: dict, method: str) -> bytes | None:
    """The learned metric's top eigenvectors drawn from the job's saved kernel matrices (so the picture follows
    the current plotting code, not the one the job ran with)."""
    from convemerge.kernels.plots import plot_eigenpatches
    from convemerge.runs import read_kernel_matrices

    shape = entry.get("image_shape")
    tensors = read_kernel_matrices(entry["dir"]) if shape else None
    if tensors is None:
        return None
    M = tensors.get(entry.get("metric_key") or ("M_0" if method == "deep-convrfm" else "M"))
    if M is None:
        return None
    if method != "rfm":
        q = int(entry.get("patch_size") or 3)
        shape = (int(shape[0]), q, q)
    if M.shape[0] != math.prod(shape):
        return None
    return figure_png(plot_eigenpatches(M.double(), tuple(int(v) for v in shape), k=8))
