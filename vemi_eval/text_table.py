"""A plain left-aligned text table for the command line (no dependency, no colour: logs read it too)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click


def echo_table(rows: Sequence[dict[str, Any]], cols: Sequence[str], wrap: int = 0) -> None:
    """Print ``rows`` under ``cols``; the last column is cut at ``wrap`` characters when wrap > 0."""
    if not rows:
        click.echo("(nothing)")
        return

    def cell(r: dict[str, Any], c: str) -> str:
        s = str(r.get(c, ""))
        return s[: wrap - 1] + "…" if wrap and c == cols[-1] and len(s) > wrap else s

    widths = {c: max(len(c), *(len(cell(r, c)) for r in rows)) for c in cols[:-1]}
    click.echo("  ".join([c.ljust(widths[c]) for c in cols[:-1]] + [cols[-1]]))
    for r in rows:
        click.echo("  ".join([cell(r, c).ljust(widths[c]) for c in cols[:-1]] + [cell(r, cols[-1])]))
