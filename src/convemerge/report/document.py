"""A report as plain blocks (text, tables, figures), rendered to one self-contained HTML file and to Markdown.

Figures are PNG bytes: embedded in the HTML as base64 ``data:`` URIs (no external assets) and, for the Markdown,
written as files beside it. Figures are drawn with matplotlib's object API (``Figure`` + Agg canvas), so building
a report never touches pyplot's global state or the user's backend.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Text", "Table", "Figure", "Section", "render_html", "render_markdown", "figure_png", "new_figure"]


@dataclass
class Text:
    """A paragraph. ``**bold**``, ``*italic*`` and ```code``` are rendered in both outputs; the rest is escaped."""

    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    png: bytes
    caption: str
    name: str  # file stem for the Markdown copy, e.g. "fig3-nonzero"


@dataclass
class Section:
    """One experiment's part of the report."""

    key: str  # experiment name (anchor)
    title: str
    blocks: list = field(default_factory=list)

    def add(self, block) -> None:
        self.blocks.append(block)


# ----------------------------------------------------------------------------- figures
def new_figure(width: float = 6.4, height: float = 4.0):
    """A matplotlib Figure with an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ----------------------------------------------------------------------------- rendering
def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<i>\1</i>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}caption{caption-side:top;text-align:left;color:#555;
padding:.3em 0}code{background:#f5f5f5;padding:0 .2em;font-size:.9em}figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
nav ul{columns:2}.runs{font-size:.8em;color:#666;word-break:break-all}
"""


def render_html(title: str, intro: list, sections: list[Section]) -> str:
    """One self-contained HTML page (inline CSS, images as data URIs)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [_block_html(b) for b in intro]
    if sections:
        parts.append("<nav><ul>" + "".join(f'<li><a href="#{html.escape(s.key)}">{html.escape(s.title)}</a></li>'
                                           for s in sections) + "</ul></nav>")
    for s in sections:
        parts.append(f'<section id="{html.escape(s.key)}"><h2>{html.escape(s.title)}</h2>')
        parts += [_block_html(b) for b in s.blocks]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _block_html(block) -> str:
    if isinstance(block, Text):
        return f"<p>{_inline_html(block.text)}</p>"
    if isinstance(block, Table):
        cap = f"<caption>{_inline_html(block.caption)}</caption>" if block.caption else ""
        head = "".join(f"<th>{_inline_html(h)}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in row) + "</tr>"
                       for row in block.rows)
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        alt = html.escape(block.caption, quote=True)
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                f"<figcaption>{_inline_html(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown report block {type(block).__name__}")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, intro: list, sections: list[Section], figures_dir: Path | None) -> str:
    """Markdown with the same tables; figures written as PNG files in ``figures_dir`` and linked relatively."""
    lines = [f"# {title}", ""]
    for b in intro:
        lines += _block_md(b, figures_dir)
    for s in sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            lines += _block_md(b, figures_dir)
    return "\n".join(lines).rstrip() + "\n"


def _block_md(block, figures_dir: Path | None) -> list[str]:
    if isinstance(block, Text):
        return [block.text, ""]
    if isinstance(block, Table):
        out = [f"*{block.caption}*", ""] if block.caption else []
        out.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
        out.append("|" + "---|" * len(block.headers))
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return out + [""]
    if isinstance(block, Figure):
        if figures_dir is None:
            return [f"*Figure: {block.caption}* (in the HTML report)", ""]
        figures_dir.mkdir(parents=True, exist_ok=True)
        (figures_dir / f"{block.name}.png").write_bytes(block.png)
        return [f"![{_md_cell(block.caption)}]({figures_dir.name}/{block.name}.png)", "", f"*{block.caption}*", ""]
    raise TypeError(f"unknown report block {type(block).__name__}")
