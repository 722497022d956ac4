"""Plots and one self-contained HTML report (plus Markdown tables) built from saved run records; never trains.

>>> from convemerge.report import build_report
>>> files = build_report("runs/reproduce-quick")     # doctest: +SKIP
>>> files.html                                        # doctest: +SKIP

Sections are pluggable: ``convemerge.report.sections.register_section("cnfa")(builder)`` in a module named
``section_<name>.py`` of this package.
"""

from convemerge.report.build import ReportFiles, build_report
from convemerge.report.sections import register_section

__all__ = ["ReportFiles", "build_report", "register_section"]
