"""Figs. 2, 3 and 5: description length vs accuracy, non-zero weights per epoch, ResNet18 kernel sizes."""

from __future__ import annotations

from collections import defaultdict

from convemerge.analysis.mdl import min_params_to_fit
from convemerge.experiments.selection import mean_std
from convemerge.report.document import Figure, Section, Table, Text, figure_png, new_figure
from convemerge.report.paper import label
from convemerge.report.records import ExperimentRecords, fmt_count, fmt_ms
from convemerge.report.section_tables import MDL_COLUMNS
from convemerge.report.sections import provenance, register_section, selection_table


def _train_acc(summary: dict, analysis: dict) -> float | None:
    """Exact training accuracy of the selected weights when analysed, else the logged one at the best epoch."""
    if analysis.get("train_error") is not None:
        return 1.0 - analysis["train_error"]
    return (summary.get("final") or {}).get("train_acc")


def _arm_points(rec: ExperimentRecords, dataset: str) -> dict[str, list[dict]]:
    """family -> one point per α: params, mean train / test accuracy and their spreads, run ids."""
    fams: dict[str, list[dict]] = defaultdict(list)
    for name, arm in rec.arms.items():
        tags = arm.get("tags", {})
        ids = [j["run_id"] for j in rec.jobs_of(name, dataset) if rec.summaries.get(j["run_id"])]
        if not ids:
            continue
        params = rec.values(ids, lambda s, a: sum(a["weights"].values()) if a.get("weights") else None)
        train = rec.values(ids, _train_acc)
        test = rec.values(ids, lambda s, a: s.get("test_acc_at_best"))
        tm, ts, _ = mean_std(test)
        fams[tags.get("family", arm["model"])].append({
            "arm": name, "alpha": tags.get("alpha", arm.get("alpha")), "params": next((p for p in params if p), None),
            "train_acc": mean_std(train)[0], "test_acc": tm, "test_std": ts or 0.0, "run_ids": ids,
            "train_vals": train, "test_vals": test})
    for pts in fams.values():
        pts.sort(key=lambda p: (p["params"] or 0))
    return fams


def _train_acc_cell(rec: ExperimentRecords, cand) -> str:
    return fmt_ms([1 - a["train_error"] for a in (rec.analyses.get(i) or {} for i, v in zip(cand.run_ids, cand.val)
                                                  if v is not None) if a.get("train_error") is not None])


@register_section("fig2", order=30)
def fig2_section(rec: ExperimentRecords) -> Section:
    s = Section("fig2", "Fig. 2 — parameters, description length and generalisation")
    s.add(provenance(rec))
    target = float(rec.notes.get("fit_target", 0.99))
    for d in rec.datasets:
        fams = _arm_points(rec, d)
        if not fams:
            s.add(Text(f"No finished runs on {label(d)} yet."))
            continue
        fig = new_figure(10, 4)
        left, right = fig.subplots(1, 2)
        fits, colours = {}, {}
        for fam, pts in fams.items():
            pts = [p for p in pts if p["params"] and p["test_acc"] is not None]
            if not pts:
                continue
            bars = left.errorbar([p["params"] for p in pts], [100 * p["test_acc"] for p in pts],
                                 yerr=[100 * p["test_std"] for p in pts], marker="o", capsize=3, label=fam)
            colours[fam] = bars.lines[0].get_color()
            fits[fam] = min_params_to_fit([p for p in pts if p["train_acc"] is not None], target)
        left.set(xscale="log", xlabel="parameters", ylabel="test accuracy (%)", title=f"{label(d)}: α sweep")
        left.legend()
        for fam, f in fits.items():
            if f["min_params"] is not None and f["best_test_acc"] is not None:
                right.scatter(f["min_params"], 100 * f["best_test_acc"], s=40, color=colours[fam])
                right.annotate(fam, (f["min_params"], 100 * f["best_test_acc"]), textcoords="offset points",
                               xytext=(5, 5))
        right.set(xscale="log", xlabel=f"min. parameters reaching {target:.0%} train acc.",
                  ylabel="best test accuracy (%)", title="smaller description ↔ better generalisation")
        s.add(Figure(figure_png(fig), f"{label(d)}: left, test accuracy against parameter count per family "
                                      f"(mean ± std over seeds); right, the smallest model that fits the training "
                                      f"set against the family's best test accuracy.", f"fig2-{d}"))
        rows = [[fam, fmt_count(f["min_params"]), "—" if f["alpha"] is None else str(f["alpha"]),
                 "—" if f["best_test_acc"] is None else f"{100 * f['best_test_acc']:.2f}"]
                for fam, f in fits.items()]
        s.add(Table(["family", f"min. params to reach {target:.0%} train acc.", "at α", "best test acc. %"], rows,
                    f"{label(d)}: description length by parameter count (families that never reach the target "
                    f"show —)."))
    s.add(selection_table(rec, extra=[("train acc %", _train_acc_cell), *MDL_COLUMNS],
        caption="Every trained net: exact training accuracy of the selected weights and its description length "
                "(8-bit quantisation; dense n·b vs sparse/shared k·b + ‖w‖₀·log₂(kn) + 2·log₂ n bits) with both "
                "generalisation bounds (δ = 0.05)."))
    return s


# ----------------------------------------------------------------------------- Fig. 3
def _reference_counts(rec: ExperimentRecords, dataset: str) -> dict[str, list[int]]:
    for j in rec.jobs:
        if j.get("kind") == "callable" and j.get("dataset") == dataset:
            summ = rec.summaries.get(j["run_id"]) or {}
            if "counts" in summ:
                return {m: [row["weights"] for row in rows] for m, rows in summ["counts"].items()}
    return {}


@register_section("fig3", order=40)
def fig3_section(rec: ExperimentRecords) -> Section:
    s = Section("fig3", "Fig. 3 — non-zero weights per S-FC layer under β-LASSO")
    s.add(provenance(rec))
    arms = [n for n, a in rec.arms.items() if a["model"] == "s-fc"] or [None]
    for d, arm in ((d, a) for d in rec.datasets for a in arms):
        loss = (rec.arms[arm].get("tags", {}).get("loss") if arm else None)
        where = f"{label(d)}, {loss} loss" if loss else label(d)
        ids = [j["run_id"] for j in rec.jobs_of(arm, d) if rec.summaries.get(j["run_id"])] if arm else []
        histories = {rid: rec.metrics(rid) for rid in ids}
        histories = {k: v for k, v in histories.items() if v and v[0].get("nonzero")}
        if not histories:
            s.add(Text(f"No finished β-LASSO runs with a non-zero log on {where} yet."))
            continue
        ref = _reference_counts(rec, d)
        layers = list(next(iter(histories.values()))[0]["nonzero"])
        fig = new_figure(4 * len(layers), 3.6)
        axes = fig.subplots(1, len(layers), squeeze=False)[0]
        rows = []
        for i, (layer, ax) in enumerate(zip(layers, axes)):
            finals = []
            dense = ref.get("s-fc", [])
            for rid, hist in histories.items():
                ep = [r["epoch"] for r in hist]
                nz = [max(1, r["nonzero"][layer]) for r in hist]  # log scale: an all-zero layer plots at 1
                if i < len(dense):  # epoch 0: the initialisation, every weight non-zero
                    ep, nz = [0, *ep], [dense[i], *nz]
                ax.plot(ep, nz, color="C0", alpha=0.8, lw=1.5, label="S-FC β-LASSO" if not finals else None)
                finals.append(hist[-1]["nonzero"][layer])
            for model, colour in (("s-fc", "0.5"), ("s-conv", "C1"), ("s-local", "C2")):
                counts = ref.get(model, [])
                if i < len(counts):
                    style = ":" if model == "s-fc" else "--"
                    name = "S-FC (dense)" if model == "s-fc" else model.upper()
                    ax.axhline(counts[i], color=colour, ls=style, label=name)
            ax.set(yscale="log", xlabel="epoch", title=f"layer {i + 1} ({layer})")
            if i == 0:
                ax.set_ylabel("non-zero weights")
            ax.legend(fontsize=7)
            c, l_, f = (ref.get(m, [None] * (i + 1)) for m in ("s-conv", "s-local", "s-fc"))
            conv = c[i] if i < len(c) else None
            local = l_[i] if i < len(l_) else None
            rows.append([str(i + 1), layer, fmt_count(f[i] if i < len(f) else None), fmt_ms(finals, 1.0, 0),
                         fmt_count(conv), fmt_count(local)])
        s.add(Figure(figure_png(fig), f"{where}: non-zero weights per layer and epoch ({len(histories)} seed(s), "
                                      f"log scale), with the S-CONV and S-LOCAL weight counts of the same layer.",
                     f"fig3-{d}" + (f"-{loss.lower()}" if loss else "")))
        s.add(Table(["layer", "name", "S-FC weights", "non-zero at the end (mean ± std)", "S-CONV weights",
                     "S-LOCAL weights"], rows,
                    f"{where}: the paper finds layer 1 ending between S-CONV and S-LOCAL, layer 2 much sparser, "
                    f"the last layer dense. Runs: {', '.join(histories)}."))
    return s


# ----------------------------------------------------------------------------- Fig. 5
@register_section("fig5", order=60)
def fig5_section(rec: ExperimentRecords) -> Section:
    s = Section("fig5", "Fig. 5 — ResNet18 kernel size, β-LASSO vs SGD")
    s.add(provenance(rec))
    for d in rec.datasets:
        lines: dict[str, list[tuple[int, list]]] = defaultdict(list)
        for name, arm in rec.arms.items():
            tags = arm.get("tags", {})
            sel = rec.selections.get((name, d))
            if sel and sel.chosen and "kernel" in tags:
                lines[tags.get("method", arm["optimizer"])].append((tags["kernel"], sel.chosen.test))
        if not lines:
            s.add(Text(f"No finished runs on {label(d)} yet."))
            continue
        fig = new_figure(5.5, 3.8)
        ax = fig.subplots()
        kernels = sorted({k for pts in lines.values() for k, _ in pts})
        rows = {k: [str(k)] for k in kernels}
        for method, pts in lines.items():
            pts.sort()
            ms = [mean_std(v) for _, v in pts]
            ax.errorbar([k for k, _ in pts], [100 * m for m, _, _ in ms], yerr=[100 * (sd or 0) for _, sd, _ in ms],
                        marker="o", capsize=3, label=method)
            got = dict(pts)
            for k in kernels:
                rows[k].append(fmt_ms(got[k]) if k in got else "—")
        ax.set(xlabel="kernel size", ylabel="test accuracy (%)", xticks=kernels, title=label(d))
        ax.legend()
        s.add(Figure(figure_png(fig), f"{label(d)}: test accuracy against kernel size (mean ± std over seeds).",
                     f"fig5-{d}"))
        s.add(Table(["kernel", *lines], list(rows.values()), f"{label(d)}: test accuracy (%)."))
    s.add(selection_table(rec))
    return s
