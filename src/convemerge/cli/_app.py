"""The Typer application object and small helpers shared by the command modules."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

app = typer.Typer(
    name="convemerge",
    help="Where does convolutional structure come from? Train S/D-CONV/LOCAL/FC nets with SGD or beta-LASSO, "
    "measure AGOPs and the (C)NFA, fit RFM/ConvRFM, and reproduce the papers' tables and figures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line to stderr and exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)
