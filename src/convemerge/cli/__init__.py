"""Command-line interface: a thin Typer app over the library.

Each module in this package registers its commands on the shared ``app`` (one module per command group, so
the groups stay small and independent). ``main`` turns user errors into one line and a non-zero exit.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from convemerge.errors import ConvemergeError

from ._app import app, fail

__all__ = ["app", "fail", "main"]


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``convemerge`` console script."""
    try:
        app(args=argv, prog_name="convemerge", standalone_mode=True)
    except SystemExit as exc:  # Typer/click exit path
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except ConvemergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
