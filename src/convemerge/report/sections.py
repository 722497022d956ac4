"""The registry of report sections: ``experiment name -> builder(records) -> Section``.

Section modules (``convemerge/report/section_*.py``) register their builders with :func:`register_section`; all
of them are imported on first use, so a new experiment (``cnfa``, ``convrfm``) adds its section by dropping a
``section_<name>.py`` file in this package. An experiment without a registered builder gets
:func:`generic_section`: its arms, the selected configuration and test accuracy, with run ids.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from convemerge.report.document import Section, Table, Text
from convemerge.report.paper import label
from convemerge.report.records import ExperimentRecords, fmt_ms

__all__ = ["register_section", "section_builder", "list_sections", "generic_section", "provenance",
           "selection_table"]

_SECTIONS: dict[str, tuple[int, Callable[[ExperimentRecords], Section]]] = {}
_loaded = False


def register_section(name: str, *, order: int = 100):
    """Decorator: ``builder(records: ExperimentRecords) -> Section`` for experiment ``name``; ``order`` sorts
    the report (the paper's tables first)."""

    def deco(builder):
        _SECTIONS[name] = (order, builder)
        return builder

    return deco


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import convemerge.report as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("section_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def list_sections() -> list[str]:
    _load()
    return sorted(_SECTIONS, key=lambda k: (_SECTIONS[k][0], k))


def section_builder(name: str) -> Callable[[ExperimentRecords], Section]:
    _load()
    return _SECTIONS[name][1] if name in _SECTIONS else generic_section


def section_order(name: str) -> tuple[int, str]:
    _load()
    return (_SECTIONS[name][0] if name in _SECTIONS else 1000, name)


# ----------------------------------------------------------------------------- shared pieces
def provenance(rec: ExperimentRecords) -> Text:
    done, total = rec.counts
    return Text(f"Scale **{rec.scale}**; {done}/{total} runs finished. Command: `{rec.command}`. "
                f"{rec.recipe.get('description', '')}")


def selection_table(rec: ExperimentRecords, arms: list[str] | None = None, *, extra=None,
                    caption: str = "") -> Table:
    """One row per (arm, dataset): the configuration chosen on validation (mean over seeds), its validation and
    test accuracy (mean ± std over seeds, %), optional ``extra`` columns, and the run ids."""
    extra = extra or []
    rows = []
    for (arm, dataset), sel in rec.selections.items():
        if arms is not None and arm not in arms:
            continue
        c = sel.chosen
        if c is None:
            rows.append([arm, label(dataset), "no finished run", "—", "—"] + ["—"] * len(extra) + ["—"])
            continue
        ids = [rid for rid, v in zip(c.run_ids, c.val) if v is not None]
        cells = [fn(rec, c) for _, fn in extra]
        rows.append([arm, label(dataset), c.to_dict()["key"], fmt_ms(c.val), fmt_ms(c.test), *cells,
                     ", ".join(ids)])
    headers = ["arm", "dataset", "selected (validation)", "val acc %", "test acc %", *[h for h, _ in extra],
               "run ids"]
    return Table(headers, rows, caption or "Selected configuration per arm; mean ± std over seeds.")


def generic_section(rec: ExperimentRecords) -> Section:
    """Fallback for an experiment without its own section: selection and provenance."""
    s = Section(rec.name, f"{rec.name} ({rec.scale})")
    s.add(provenance(rec))
    if rec.selections:
        s.add(selection_table(rec))
    other = [j for j in rec.jobs if j.get("kind") == "callable"]
    if other:
        rows = [[j["arm"], label(j.get("dataset")), j["run_id"],
                 "finished" if rec.summaries.get(j["run_id"]) else "missing"] for j in other]
        s.add(Table(["job", "dataset", "run id", "status"], rows, "Other jobs of this experiment."))
    return s
