"""Fig. 4: first-layer filters as images (one colour scale per panel) and the locality measures side by side."""

from __future__ import annotations

import math

import torch

from convemerge.report.document import Figure, Section, Table, Text, figure_png, new_figure
from convemerge.report.paper import label
from convemerge.report.records import ExperimentRecords, fmt_ms
from convemerge.report.sections import provenance, register_section

LOCALITY_COLUMNS = [
    ("participation ratio (mean)", "pr_mean", 1.0, 1),
    ("PR (median)", "pr_median", 1.0, 1),
    ("mass in k×k at peak %", "concentration_mean", 100.0, 1),
    ("sharing (nearest)", "sharing_nearest", 1.0, 3),
    ("sharing (mean pair)", "sharing_mean", 1.0, 3),
    ("zero pixels %", "zero_fraction", 100.0, 1),
    ("dead units", "dead", 1.0, 0),
]


def _panel(ax_grid, filters: torch.Tensor) -> None:
    """Draw up to len(ax_grid) filters with ONE symmetric colour scale for the whole panel."""
    v = float(filters.abs().max()) or 1.0
    for i, ax in enumerate(ax_grid):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(filters):
            ax.axis("off")
            continue
        f = filters[i]
        if f.shape[0] == 1:
            ax.imshow(f[0].numpy(), cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
        else:  # colour filters: the same linear map [-v, v] -> [0, 1] on every channel
            rgb = ((f[:3] / v + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
            ax.imshow(rgb, interpolation="nearest")


def _first_seed_with_filters(rec: ExperimentRecords, arm: str, dataset: str):
    jobs = sorted(rec.jobs_of(arm, dataset), key=lambda j: (j.get("seed") is None, j.get("seed")))
    for j in jobs:
        got = rec.filters(j["run_id"]) if rec.summaries.get(j["run_id"]) else None
        if got is not None:
            return j, got
    return None, None


@register_section("fig4", order=50)
def fig4_section(rec: ExperimentRecords) -> Section:
    s = Section("fig4", "Fig. 4 — first-layer filters and locality")
    s.add(provenance(rec))
    wanted = int(rec.notes.get("min_nonzero", 20))
    window = rec.notes.get("window", 9)
    groups = list(dict.fromkeys(a.get("tags", {}).get("loss") for a in rec.arms.values()))  # one figure per loss
    for d, group in ((d, g) for d in rec.datasets for g in groups):
        panels = []
        for name, arm in rec.arms.items():
            if arm.get("tags", {}).get("loss") != group:
                continue
            job, got = _first_seed_with_filters(rec, name, d)
            if job is not None:
                panels.append((arm.get("tags", {}).get("panel", name), job, got))
        if panels:
            n = max(len(g[0]) for _, _, g in panels)
            cols = int(math.ceil(math.sqrt(n)))
            rows = int(math.ceil(n / cols))
            fig = new_figure(3.4 * len(panels), 3.6 * rows / cols + 0.5)
            subfigs = fig.subfigures(1, len(panels), squeeze=False)[0]
            notes = []
            for sub, (title, job, (filters, idx)) in zip(subfigs, panels):
                axes = sub.subplots(rows, cols, squeeze=False).flatten()
                _panel(axes, filters)
                sub.suptitle(title, fontsize=10)
                thr = (rec.analyses.get(job["run_id"]) or {}).get("filters", {}).get("threshold", wanted)
                note = f"{title}: seed {job['seed']}, units {idx.tolist()}"
                if thr != wanted:
                    note += f" (fewer than {len(filters)} units had ≥ {wanted} non-zero weights: threshold {thr})"
                notes.append(note)
            s.add(Figure(figure_png(fig), f"{label(d)}: first-layer filters (each unit's incoming weights as an "
                                          f"image), drawn with a fixed seed among units with ≥ {wanted} non-zero "
                                          f"weights; one colour scale per panel (red +, blue −).",
                     f"fig4-{d}" + (f"-{group.lower()}" if group else "")))
            s.add(Text("; ".join(notes) + "."))
        if group != groups[-1]:
            continue  # the locality table (every arm) once per dataset, after the last figure
        rows_t = []
        for name, arm in rec.arms.items():
            ids = [j["run_id"] for j in rec.jobs_of(name, d) if rec.summaries.get(j["run_id"])]
            locs = [(rec.analyses.get(i) or {}).get("locality") for i in ids]
            locs = [x for x in locs if x]
            cells = [fmt_ms([x.get(key) for x in locs], scale, digits) for _, key, scale, digits in LOCALITY_COLUMNS]
            test = fmt_ms(rec.values(ids, lambda s_, a: s_.get("test_acc_at_best")))
            rows_t.append([arm.get("tags", {}).get("panel", name), test, *cells, ", ".join(ids) or "—"])
        s.add(Table(["arm", "test acc %", *[c[0] for c in LOCALITY_COLUMNS], "run ids"], rows_t,
                    f"{label(d)}: locality of the first layer (mean ± std over seeds). Participation ratio "
                    f"(Σw²)²/Σw⁴ per unit; share of squared mass in the {window}×{window} window at the peak; "
                    f"weight sharing = cosine of peak-centred, peak-normalised {window}×{window} crops (nearest "
                    f"other unit, or mean over pairs); 1 = copies of one filter (a convolution)."))
    return s
