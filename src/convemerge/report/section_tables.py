"""Tables 1 and 2: our test accuracy (selected on validation, mean ± std over seeds) beside the paper's."""

from __future__ import annotations

from convemerge.report.document import Section, Table, Text
from convemerge.report.paper import STUDENT_CIFAR10, TABLE1, TABLE1_PARAMS, TABLE2, label, paper_dataset
from convemerge.report.records import ExperimentRecords, fmt_count, fmt_ms
from convemerge.report.sections import provenance, register_section, selection_table


def analysis_values(rec: ExperimentRecords, cand, fn) -> list:
    """``fn(analysis)`` for each finished run of a candidate that has an analysis record."""
    out = []
    for rid, v in zip(cand.run_ids, cand.val):
        a = rec.analyses.get(rid)
        if v is not None and a:
            try:
                out.append(fn(a))
            except (KeyError, TypeError, ZeroDivisionError):
                continue
    return out


def params_of(rec: ExperimentRecords, cand) -> float | None:
    vals = analysis_values(rec, cand, lambda a: sum(a["weights"].values()))
    return vals[0] if vals else None


def nonzero_share(a: dict) -> float:
    return sum(a["nonzero"].values()) / sum(a["weights"].values())


MDL_COLUMNS = [
    ("non-zero weights %", lambda rec, c: fmt_ms(analysis_values(rec, c, nonzero_share), digits=1)),
    ("dense bits", lambda rec, c: fmt_count(_first(analysis_values(rec, c, lambda a: a["mdl"]["dense_bits"])))),
    ("sparse bits", lambda rec, c: fmt_ms(analysis_values(rec, c, lambda a: a["mdl"]["sparse_bits"]), 1e-3, 1)
     + " k"),
    ("dense bound", lambda rec, c: fmt_ms(analysis_values(rec, c, lambda a: a["mdl"]["dense_bound"]), 1.0, 3)),
    ("sparse bound", lambda rec, c: fmt_ms(analysis_values(rec, c, lambda a: a["mdl"]["sparse_bound"]), 1.0, 3)),
]


def _first(values):
    return values[0] if values else None


def _tag_rows(rec: ExperimentRecords, key: str) -> list[str]:
    rows: dict[str, None] = {}
    for a in rec.arms.values():
        if key in a.get("tags", {}):
            rows.setdefault(a["tags"][key], None)
    return list(rows)


@register_section("table1", order=10)
def table1_section(rec: ExperimentRecords) -> Section:
    s = Section("table1", "Table 1 — architectures trained with SGD")
    s.add(provenance(rec))
    epochs = sorted({a["tags"]["epochs"] for a in rec.arms.values() if "epochs" in a.get("tags", {})})
    headers = ["model", "#params (ours)", "#params (paper)"]
    for d in rec.datasets:
        pd = paper_dataset(d)
        headers += [f"{label(d)}, {e} ep. (ours)" for e in epochs]
        headers.append(f"paper {label(pd)} 400 / 4000 ep.")
    rows = []
    for row in _tag_rows(rec, "row"):
        arms = {a["tags"]["epochs"]: name for name, a in rec.arms.items() if a.get("tags", {}).get("row") == row}
        params = None
        cells = []
        for d in rec.datasets:
            for e in epochs:
                sel = rec.selections.get((arms.get(e), d))
                if sel is None or sel.chosen is None:
                    cells.append("—")
                    continue
                cells.append(fmt_ms(sel.chosen.test))
                params = params or params_of(rec, sel.chosen)
            p400, p4000 = TABLE1.get(row, {}).get(paper_dataset(d), (None, None))
            cells.append("—" if p400 is None else f"{p400:.2f} / {p4000:.2f}")
        rows.append([row, fmt_count(params), TABLE1_PARAMS.get(row, "—"), *cells])
    s.add(Table(headers, rows, "Test accuracy (%) of the configuration selected on validation, mean ± std over "
                               "seeds; the paper's column is its own dataset when we ran it, else CIFAR-10."))
    s.add(Text("Parameter counts are weights of conv / local / linear layers (no biases, no BatchNorm). The paper's "
               "D-LOCAL count (3.42M) does not match the architecture it describes; ours counts the architecture."))
    s.add(selection_table(rec))
    return s


@register_section("table2", order=20)
def table2_section(rec: ExperimentRecords) -> Section:
    if any("loss" in a.get("tags", {}) for a in rec.arms.values()):
        from convemerge.report.section_table2_seed import table2_seed_section

        return table2_seed_section(rec)
    s = Section("table2", "Table 2 — β-LASSO makes S-FC competitive")
    s.add(provenance(rec))
    headers = ["model", "method"] + [f"{label(d)} (ours)" for d in rec.datasets]
    pds = list(dict.fromkeys(paper_dataset(d) for d in rec.datasets))
    headers += [f"paper {label(pd)}" for pd in pds] + ["student repro CIFAR-10", "non-zero weights % (ours)"]
    rows = []
    for name, arm in rec.arms.items():
        tags = arm.get("tags", {})
        key = (tags.get("row"), tags.get("method"))
        cells, nz = [], []
        for d in rec.datasets:
            sel = rec.selections.get((name, d))
            cells.append(fmt_ms(sel.chosen.test) if sel and sel.chosen else "—")
            if sel and sel.chosen:
                nz += analysis_values(rec, sel.chosen, nonzero_share)
        paper = [f"{TABLE2[key][pd]:.2f}" if key in TABLE2 and pd in TABLE2[key] else "—" for pd in pds]
        student = STUDENT_CIFAR10.get(key)
        rows.append([key[0], key[1], *cells, *paper, "—" if student is None else f"{student:.1f}",
                     fmt_ms(nz, digits=1)])
    s.add(Table(headers, rows, "Test accuracy (%), selected on validation, mean ± std over seeds."))
    s.add(selection_table(rec, extra=MDL_COLUMNS, caption=(
        "Selection and description length of the selected runs (8-bit quantisation, δ = 0.05; bounds on the "
        "test error, from the exact training error of the selected weights).")))
    return s
