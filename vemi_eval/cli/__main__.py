"""``python -m vemi_eval.cli``: the same as ``vemi-eval``."""

from .app import main

main()
