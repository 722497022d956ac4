"""The ``cnfa`` experiment: (C)NFA correlations per layer (the claim next to every baseline of
``convemerge.analysis.cnfa``), their convergence with the number of images, eigenfilters and AGOP/WᵀW heat maps;
the NFA of S-FC first layers, SGD vs β-LASSO.

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

SERIES = (("pearson", "AGOP_T vs W_TᵀW_T (claim)", "C0"), ("agop_w0_pearson", "AGOP_T vs W₀ᵀW₀", "C3"),
          ("delta_pearson", "AGOP_T vs ΔWᵀΔW (centred)", "C2"), ("w0_pearson", "W₀ᵀW₀ vs W_TᵀW_T", "C1"),
          ("init_pearson", "AGOP₀ vs W₀ᵀW₀ (at init)", "C7"))
# per-layer values collected over seeds: the claim, every baseline (analysis.cnfa.BASELINES), how far W moved
METRICS = ("pearson", "cosine", "agop_w0_pearson", "agop_w0_cosine", "w0_pearson", "w0_cosine", "init_pearson",
           "init_cosine", "delta_pearson", "delta_cosine", "moved")


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
            for key in METRICS:
                cell.setdefault(key, []).append(_num(row.get(key)))
            p, b = _num(row.get("pearson")), _num(row.get("agop_w0_pearson"))
            cell.setdefault("gain", []).append(None if p is None or b is None else p - b)
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
                body.append(head + [f"skipped: {c['skipped']}"] + [""] * (len(_COLUMNS) - 1)
                            + [str(c["n_images"]), ", ".join(c["runs"])])
                continue
            note = " (readout: exact by construction)" if c["kind"] == "linear" and name == last else ""
            cells = [_ms(c[key]) for key in _COLUMNS.values()]
            body.append(head + [cells[0] + note, *cells[1:], str(c["n_images"]), ", ".join(c["runs"])])
    headers = ["dataset", "network", "layer", "kind", "d", *_COLUMNS, "images", "run ids"]
    what = ("corr(patch-AGOP, W̃ᵀW̃) per conv layer" if part == "cnfa"
            else "corr(AGOP w.r.t. the layer's input, WᵀW); layer 1's input is the flattened image")
    return Table(headers, body, f"{what}, Pearson unless marked cosine; mean ± std over seeds. {_LEGEND}")


# column header -> per-layer key, in the order of docs/cnfa.md
_COLUMNS = {"AGOP_T vs W_TᵀW_T (claim)": "pearson", "AGOP_T vs W₀ᵀW₀": "agop_w0_pearson",
            "claim − AGOP_T vs W₀ᵀW₀": "gain", "W₀ᵀW₀ vs W_TᵀW_T": "w0_pearson", "‖ΔW‖/‖W₀‖": "moved",
            "AGOP₀ vs W₀ᵀW₀ (at init)": "init_pearson", "AGOP_T vs ΔWᵀΔW (centred)": "delta_pearson",
            "cosine: claim": "cosine", "cosine: AGOP_T vs W₀ᵀW₀": "agop_w0_cosine",
            "cosine: centred": "delta_cosine"}
_LEGEND = ("T: the trained weights analysed (best validation; the last epoch for runs without validation); 0: the "
           "same network rebuilt at initialisation from its seed; ΔW = W_T − W₀. The claim holds in a meaningful "
           "sense where it is high *and* clearly above AGOP_T vs W₀ᵀW₀ while the filters moved (W₀ᵀW₀ vs W_TᵀW_T "
           "well below 1); AGOP₀ vs W₀ᵀW₀ is high by construction (AGOP₀ = W₀ᵀ S W₀).")


def _power_table(rows: dict[tuple[str, str], dict[str, dict]], entries: list[dict], power: str) -> Table:
    labels = {e["arm"]: e["arm_label"] for e in entries}
    body = []
    for (arm, d), layers in rows.items():
        if arm not in labels:
            continue
        for name, c in layers.items():
            if c["skipped"]:
                continue
            body.append([label(d), labels[arm], name, *(_ms(c[key]) for key in _COLUMNS.values())])
    return Table(["dataset", "network", "layer", *_COLUMNS], body,
                 f"The same against AGOP^{power} (same images and runs); mean ± std over seeds.")


def _accuracy_table(entries: list[dict]) -> Table:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in entries:
        if e["summary"] and e["summary"].get("status") == "completed":
            groups[(e["arm_label"], e["dataset"])].append(e)
    body = []
    for (arm, d), es in groups.items():
        tr = [e["summary"].get("train", {}) for e in es]
        losses = [t.get("final_train_loss") for t in tr]
        stopped = sum(bool(t.get("stopped_early")) for t in tr)
        body.append([label(d), arm, fmt_ms([t.get("final_train_acc") for t in tr]),
                     "—" if all(v is None for v in losses) else
                     ", ".join("—" if v is None else f"{v:.1e}" for v in losses),
                     f"{fmt_ms([t.get('epochs_done') for t in tr], 1.0, 1)} ({stopped}/{len(tr)} stopped on the loss)",
                     fmt_ms([t.get("best_val_acc") for t in tr]), fmt_ms([t.get("test_acc_at_best") for t in tr]),
                     fmt_ms([t.get("final_test_acc") for t in tr]),
                     ", ".join(sorted({str((e["summary"].get("source") or {}).get("checkpoint", "")) for e in es})),
                     ", ".join(e["run"] for e in es)])
    return Table(["dataset", "network", "train acc % (last epoch)", "train loss (last epoch, per seed)", "epochs",
                  "val acc % (best)", "test acc % (at best val)", "test acc % (last epoch)", "checkpoint analysed",
                  "run ids"], body,
                 "The analysed networks: the training runs (mean ± std over seeds; the test set is reported only).")


def _bars(layers: dict[str, dict], title: str):
    names = [n for n, c in layers.items() if not c["skipped"]]
    fig = new_figure(max(4.0, 1.3 * len(names) + 2.0), 3.2)
    ax = fig.subplots()
    width = 0.8 / len(SERIES)
    for k, (key, name, colour) in enumerate(SERIES):
        stats = [mean_std(layers[n][key]) for n in names]
        offset = (k - (len(SERIES) - 1) / 2) * width
        ax.bar([i + offset for i in range(len(names))], [m if m is not None else 0.0 for m, _, _ in stats],
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
               "(centred), cosine = uncentred. Per layer, side by side: the claim corr(AGOP_T, W_TᵀW_T); "
               "corr(AGOP_T, W₀ᵀW₀), the trained gradients against the *initial* filters — the baseline the claim "
               "has to beat; corr(W₀ᵀW₀, W_TᵀW_T) and ‖ΔW‖/‖W₀‖: did the filters move?; corr(AGOP₀, W₀ᵀW₀), the "
               "network at initialisation (high by construction); corr(AGOP_T, ΔWᵀΔW), the centred ansatz with "
               "ΔW = W_T − W₀. AGOP images: a seeded sample of each run's train split (all of it where the sample "
               "is as large)."))
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
                         f"{label(d)}, {arm_label}: Pearson correlation per layer, the claim next to every baseline "
                         f"(mean ± std over {len(es)} seed(s)).", f"cnfa-{_slug(d)}-{_slug(arm)}-bars"))
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
