"""The ``cnfa`` experiment: (C)NFA correlations per layer (trained vs initialisation vs W₀ᵀW₀), their convergence
with the number of images, eigenfilters and AGOP/WᵀW heat maps; the NFA of S-FC first layers, SGD vs β-LASSO.

Reads the ``summary.json`` of each analysis job (:func:`convemerge.experiments.cnfa.jobs.cnfa_job`) and embeds the
pictures it wrote beside it; nothing is recomputed.
"""

from __future__ import annotations

import math
from collections import defaultdict

from convemerge.experiments.selection import mean_std
from convemerge.report.document import Figure, Section, Table, Text, figure_png, new_figure
from convemerge.report.paper import label
from convemerge.report.records import ExperimentRecords, fmt_ms
from convemerge.report.sections import provenance, register_section

__all__ = ["cnfa_section", "analysis_records", "layer_rows"]

SERIES = (("pearson", "trained", "C0"), ("init_pearson", "at initialisation", "C7"),
          ("w0_pearson", "W₀ᵀW₀ vs WᵀW", "C1"))


def analysis_records(rec: ExperimentRecords) -> list[dict]:
    """One entry per finished analysis job: its summary plus the arm, part, dataset and seed of the run it read."""
    train = {j["run_id"]: j for j in rec.jobs if j.get("kind", "train") == "train"}
    out = []
    for job in rec.jobs:
        if job.get("kind") != "callable" or not str(job.get("target", "")).endswith(":cnfa_job"):
            continue
        summary = rec.summaries.get(job["run_id"])
        run = (job.get("config") or {}).get("run")
        tj = train.get(run, {})
        arm = tj.get("arm", job["arm"])
        tags = rec.arms.get(arm, {}).get("tags", {})
        out.append({"job": job["run_id"], "run": run, "arm": arm, "part": tags.get("part", "cnfa"),
                    "arm_label": tags.get("label", arm), "dataset": job.get("dataset"), "seed": job.get("seed"),
                    "summary": summary, "dir": rec.run_dir(job["run_id"])})
    return out


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def layer_rows(entries: list[dict], power: str | None = None) -> dict[tuple[str, str], dict[str, dict]]:
    """(arm, dataset) -> layer -> {"kind", "in_dim", metric: [values over seeds], "runs": [...], "skipped"}, from
    the main table or (``power``, e.g. "0.5") from the extra table against AGOP^power."""
    out: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for e in entries:
        s = e["summary"]
        if not s or s.get("status") != "completed":
            continue
        table = s.get("table", []) if power is None else (s.get("tables_by_power") or {}).get(power, [])
        for row in table:
            cell = out[(e["arm"], e["dataset"])].setdefault(
                row["layer"], {"kind": row.get("kind"), "in_dim": row.get("in_dim"), "runs": [],
                               "skipped": row.get("skipped"), "n_images": row.get("n_images")})
            cell["runs"].append(e["run"])
            for key in ("pearson", "cosine", "init_pearson", "init_cosine", "w0_pearson", "w0_cosine"):
                cell.setdefault(key, []).append(_num(row.get(key)))
            p, i = _num(row.get("pearson")), _num(row.get("init_pearson"))
            cell.setdefault("gain", []).append(None if p is None or i is None else p - i)
    return out


def _ms(values) -> str:
    return fmt_ms(values, 1.0, 3)


def _layer_table(rows: dict[tuple[str, str], dict[str, dict]], entries: list[dict], part: str) -> Table:
    labels = {e["arm"]: e["arm_label"] for e in entries}
    body = []
    for (arm, d), layers in rows.items():
        if not any(e["arm"] == arm and e["part"] == part for e in entries):
            continue
        last = list(layers)[-1]
        for name, c in layers.items():
            head = [label(d), labels.get(arm, arm), name, c["kind"] or "", str(c["in_dim"])]
            if c["skipped"]:
                body.append(head + [f"skipped: {c['skipped']}"] + [""] * 6 + [", ".join(c["runs"])])
                continue
            note = " (readout: exact by construction)" if c["kind"] == "linear" and name == last else ""
            body.append(head + [_ms(c["pearson"]) + note, _ms(c["init_pearson"]), _ms(c["gain"]),
                                _ms(c["w0_pearson"]), _ms(c["cosine"]), _ms(c["init_cosine"]),
                                str(c["n_images"]), ", ".join(c["runs"])])
    headers = ["dataset", "network", "layer", "kind", "d", "Pearson trained", "Pearson at init",
               "Δ trained − init", "Pearson W₀ᵀW₀ vs WᵀW", "cosine trained", "cosine at init", "images", "run ids"]
    what = ("corr(patch-AGOP, W̃ᵀW̃) per conv layer" if part == "cnfa"
            else "corr(AGOP w.r.t. the layer's input, WᵀW); layer 1's input is the flattened image")
    return Table(headers, body, f"{what}; mean ± std over seeds (trained: best-validation weights).")


def _power_table(rows: dict[tuple[str, str], dict[str, dict]], entries: list[dict], power: str) -> Table:
    labels = {e["arm"]: e["arm_label"] for e in entries}
    body = []
    for (arm, d), layers in rows.items():
        if arm not in labels:
            continue
        for name, c in layers.items():
            if c["skipped"]:
                continue
            body.append([label(d), labels[arm], name, _ms(c["pearson"]), _ms(c["init_pearson"]), _ms(c["gain"]),
                         _ms(c["cosine"]), _ms(c["init_cosine"])])
    return Table(["dataset", "network", "layer", "Pearson trained", "Pearson at init", "Δ trained − init",
                  "cosine trained", "cosine at init"], body,
                 f"The same against AGOP^{power} (same images and runs); mean ± std over seeds.")


def _accuracy_table(entries: list[dict]) -> Table:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in entries:
        if e["summary"] and e["summary"].get("status") == "completed":
            groups[(e["arm_label"], e["dataset"])].append(e)
    body = []
    for (arm, d), es in groups.items():
        tr = [e["summary"].get("train", {}) for e in es]
        body.append([label(d), arm, fmt_ms([t.get("final_train_acc") for t in tr]),
                     fmt_ms([t.get("best_val_acc") for t in tr]), fmt_ms([t.get("test_acc_at_best") for t in tr]),
                     fmt_ms([t.get("best_epoch") for t in tr], 1.0, 1), ", ".join(e["run"] for e in es)])
    return Table(["dataset", "network", "train acc % (last epoch)", "val acc % (best)", "test acc % (at best val)",
                  "best epoch", "run ids"], body,
                 "The analysed networks: accuracy of the training runs (mean ± std over seeds).")


def _bars(layers: dict[str, dict], title: str):
    names = [n for n, c in layers.items() if not c["skipped"]]
    fig = new_figure(max(4.0, 1.3 * len(names) + 2.0), 3.2)
    ax = fig.subplots()
    width = 0.8 / len(SERIES)
    for k, (key, name, colour) in enumerate(SERIES):
        stats = [mean_std(layers[n][key]) for n in names]
        ax.bar([i + (k - 1) * width for i in range(len(names))], [m if m is not None else 0.0 for m, _, _ in stats],
               width, yerr=[s or 0.0 for _, s, _ in stats], color=colour, label=name, capsize=2)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="Pearson correlation", ylim=(min(0.0, ax.get_ylim()[0]), 1.05), title=title)
    ax.axhline(0, color="0.3", lw=0.5)
    ax.legend(fontsize=7, loc="lower left")
    return fig


def _convergence(entries: list[dict], title: str):
    curves: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    vs_all: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for e in entries:
        for r in (e["summary"] or {}).get("convergence", []):
            curves[r["layer"]][int(r["n"])].append(_num(r.get("pearson")))
            vs_all[r["layer"]][int(r["n"])].append(_num(r.get("pearson_vs_all")))
    fig = new_figure(5.6, 3.4)
    ax = fig.subplots()
    for i, layer in enumerate(curves):
        ns = sorted(curves[layer])
        m = [mean_std(curves[layer][n]) for n in ns]
        ax.errorbar(ns, [x[0] for x in m], yerr=[x[1] or 0.0 for x in m], color=f"C{i}", marker="o", ms=3,
                    capsize=2, label=f"{layer}: vs WᵀW")
        ax.plot(ns, [mean_std(vs_all[layer][n])[0] for n in ns], color=f"C{i}", ls="--", lw=1,
                label=f"{layer}: vs AGOP of all images")
    ax.set(xscale="log", xlabel="images in the AGOP", ylabel="Pearson correlation", title=title)
    ax.legend(fontsize=6)
    return fig


def _embedded(entries: list[dict], rel: str) -> tuple[bytes, dict] | None:
    """The PNG ``rel`` written by the lowest-seed finished analysis among ``entries``."""
    for e in sorted(entries, key=lambda e: (e["seed"] is None, e["seed"])):
        path = e["dir"] / rel
        if e["summary"] and path.is_file():
            return path.read_bytes(), e
    return None


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


@register_section("cnfa", order=70)
def cnfa_section(rec: ExperimentRecords) -> Section:
    s = Section("cnfa", "Convolutional neural feature ansatz (CNFA) and the NFA of S-FC first layers")
    s.add(provenance(rec))
    entries = analysis_records(rec)
    done = [e for e in entries if e["summary"]]
    s.add(Text(f"{len(done)}/{len(entries)} analyses finished. Pearson = correlation of the flattened matrices "
               "(centred), cosine = uncentred. *At init*: the same network rebuilt from its seed before training, "
               "its own AGOP vs W₀ᵀW₀ — the baseline any trained value has to beat; W₀ᵀW₀ vs WᵀW: how much of the "
               "filter covariance survived training. AGOP images: a seeded sample of each run's train split."))
    skipped = [e for e in done if e["summary"].get("status") != "completed"]
    if skipped:
        s.add(Text("Not analysed: " + "; ".join(f"{e['run']} ({e['summary'].get('reason', '')})" for e in skipped)))
    if not done:
        return s
    s.add(_accuracy_table(done))
    rows = layer_rows(done)
    for part, title in (("cnfa", "CNFA of the vanilla conv nets"), ("sfc", "NFA of S-FC, SGD vs β-LASSO")):
        mine = [e for e in done if e["part"] == part]
        if not mine:
            continue
        s.add(Text(f"**{title}.**"))
        s.add(_layer_table(rows, mine, part))
        powers = sorted({p for e in mine for p in (e["summary"].get("tables_by_power") or {})})
        for power in powers:
            s.add(_power_table(layer_rows(mine, power), mine, power))
        for (arm, d), layers in rows.items():
            es = [e for e in mine if e["arm"] == arm and e["dataset"] == d]
            if not es:
                continue
            arm_label = es[0]["arm_label"]
            s.add(Figure(figure_png(_bars(layers, f"{label(d)}: {arm_label}")),
                         f"{label(d)}, {arm_label}: Pearson correlation per layer, trained vs at initialisation vs "
                         f"W₀ᵀW₀-vs-WᵀW (mean ± std over {len(es)} seed(s)).", f"cnfa-{_slug(d)}-{_slug(arm)}-bars"))
            if part == "cnfa":
                s.add(Figure(figure_png(_convergence(es, f"{label(d)}: {arm_label}")),
                             f"{label(d)}: convergence with the number of images (nested seeded samples); solid: "
                             "vs WᵀW, dashed: vs the AGOP of all analysed images.",
                             f"cnfa-{_slug(d)}-{_slug(arm)}-convergence"))
            pictures = [("filters/layer1.png", "top eigenvectors of the AGOP and of WᵀW of layer 1 as "
                         + ("3×3 filters" if part == "cnfa" else "images"))]
            if part == "cnfa":
                pictures.append(("agop_vs_wtw/layer1.png", "layer 1: AGOP and WᵀW side by side (heat maps)"))
            for rel, what in pictures:
                got = _embedded(es, rel)
                if got is not None:
                    png, e = got
                    s.add(Figure(png, f"{label(d)}, {arm_label}, seed {e['seed']} (run {e['run']}): {what}.",
                                 f"cnfa-{_slug(d)}-{_slug(arm)}-{_slug(rel)}"))
    return s
