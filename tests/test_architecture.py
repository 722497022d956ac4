"""The package's shape, checked: imports follow the dependency order, and only ``convemerge.runs`` names the
files of a run directory."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "convemerge"

# Lowest first. A module may import from its own package or a lower one, never a higher one (lazy imports inside
# functions included). ``errors`` and ``devices`` are leaf helpers every package may use.
ORDER = ("errors", "devices", "data", "layers", "models", "optim", "runs", "train", "analysis", "kernels",
         "experiments", "report", "cli")
RANK = {name: i for i, name in enumerate(ORDER)}
RANK["devices"] = RANK["errors"]


def _package(parts: tuple[str, ...]) -> str | None:
    """The top-level subpackage (or module) of ``convemerge.<parts>``; None for the package root."""
    if not parts:
        return None
    return parts[0].removesuffix(".py")


def _imports(path: Path, src: Path) -> list[tuple[int, str]]:
    """Every ``convemerge.*`` module ``path`` imports (anywhere in the file), as (line, dotted name)."""
    here = ("convemerge", *path.relative_to(src).parts[:-1])  # the package a relative import starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return [(line, m) for line, m in found if m == "convemerge" or m.startswith("convemerge.")]


def upward_edges(src: Path = SRC) -> list[str]:
    edges = []
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).parts
        pkg = _package(parts if len(parts) > 1 else (parts[0],))
        if pkg not in RANK:  # __init__.py / __main__.py of the root: the entry points
            continue
        for line, module in _imports(path, src):
            target = _package(tuple(module.split(".")[1:]))
            if target is None:
                continue
            if target not in RANK:
                edges.append(f"{path.relative_to(src)}:{line} imports {module}, a package missing from ORDER")
            elif RANK[target] > RANK[pkg]:
                edges.append(f"{path.relative_to(src)}:{line} ({pkg}) imports {module} ({target}), which sits above")
    return edges


def test_every_package_is_placed_in_the_order():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__"}
    assert packages | modules <= set(RANK), sorted((packages | modules) - set(RANK))


def test_no_upward_imports():
    assert upward_edges() == []


def test_upward_import_is_detected(tmp_path):
    """The check can fail: a lazy import of the CLI from inside a data function is an upward edge."""
    pkg = tmp_path / "data"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("def f():\n    from convemerge.cli import app\n    from . import good\n")
    (pkg / "good.py").write_text("from convemerge.errors import ConfigError\n")
    assert upward_edges(tmp_path) == ["data/bad.py:2 (data) imports convemerge.cli (cli), which sits above"]


# ----------------------------------------------------------------------------- run-directory file names
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "state.json", "analysis.json", "manifest.json",
             "filters.safetensors", "error.txt", "cnfa.json", "model.safetensors", "optimizer.safetensors",
             "optimizer.json", "metrics.safetensors", "kernel_matrices.safetensors", "checkpoints")


def _names_run_file(text: str) -> bool:
    """Whether a string literal is a path into a run directory: a run file name on its own or as a path part
    (``"summary.json"``, ``"checkpoints/best"``, ``"*/summary.json"``), not prose that mentions one."""
    if " " in text.strip():
        return False
    parts = text.strip().replace("\\", "/").split("/")
    return any(part in RUN_FILES for part in parts)


def run_file_literals(src: Path = SRC) -> list[str]:
    hits = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if rel.parts[0] == "runs":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _names_run_file(node.value):
                hits.append(f"{rel}:{node.lineno} {node.value!r}")
    return hits


def test_only_runs_names_run_directory_files():
    assert run_file_literals() == []


@pytest.mark.parametrize("text, hit", [("summary.json", True), ("checkpoints/best", True), ("*/summary.json", True),
                                       ("Write summary.json here.", False), ("report.md", False)])
def test_run_file_literal_check_can_fail(text, hit):
    assert _names_run_file(text) is hit
