"""``build_report(runs_dir)``: one self-contained HTML file and a Markdown twin from the run records.

Sections come from the registry in :mod:`convemerge.report.sections` (one builder per experiment); an experiment
without a builder gets a generic section. A builder that fails on odd records does not sink the report: its
section says what went wrong.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from convemerge.report.document import Section, Text, render_html, render_markdown
from convemerge.report.records import load_runs
from convemerge.report.sections import section_builder, section_order

__all__ = ["ReportFiles", "build_report", "SELECTION_RULE"]

SELECTION_RULE = (
    "Hyperparameters are chosen on the validation split only: per arm and dataset, the grid point with the highest "
    "mean (over seeds) of each run's best validation accuracy wins (configurations missing seeds rank last; ties go "
    "to the earlier grid point). Reported test accuracies are that configuration's, each run read at its "
    "best-validation epoch: mean ± sample std over seeds (n=1 when a single seed finished)."
)


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    figures: Path
    sections: list[str]


def build_report(runs_dir: str | Path, out: str | Path | None = None, *, title: str | None = None) -> ReportFiles:
    """Read ``runs_dir`` and write ``report.html`` + ``report.md`` (+ ``report-figures/``) into ``out``
    (default: ``runs_dir``)."""
    runs_dir = Path(runs_dir)
    experiments = load_runs(runs_dir)
    out = Path(out) if out is not None else runs_dir
    out.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    for name in sorted(experiments, key=section_order):
        rec = experiments[name]
        try:
            sections.append(section_builder(name)(rec))
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            sec = Section(name, f"{name} (section failed)")
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            sec.add(Text(f"Building this section failed: `{last}`. The run records are in `{name}/`."))
            sections.append(sec)
    scales = sorted({e.scale for e in experiments.values()})
    title = title or f"convemerge reproduction report ({', '.join(scales)})"
    intro = [
        Text(f"Generated {time.strftime('%Y-%m-%d %H:%M')} from the run records in `{runs_dir.name}` "
             f"({len(experiments)} experiment(s)). Paper: Neyshabur, *Towards Learning Convolutions from Scratch* "
             f"(NeurIPS 2020); its numbers are printed beside ours."),
        Text(SELECTION_RULE),
    ]
    html_path, md_path, fig_dir = out / "report.html", out / "report.md", out / "report-figures"
    html_path.write_text(render_html(title, intro, sections), encoding="utf-8")
    md_path.write_text(render_markdown(title, intro, sections, fig_dir), encoding="utf-8")
    return ReportFiles(html_path, md_path, fig_dir, [s.key for s in sections])
