"""The `vemi-eval` command line (vemi_eval/cli/app.py: the group and ``main``; one module per command).

``vemi-eval`` and ``python -m vemi_eval.cli`` both run :func:`main`."""

from .app import cli, main

__all__ = ["cli", "main"]
