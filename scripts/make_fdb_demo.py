#!/usr/bin/env python
"""Cut a small Full-Duplex-Bench-layout set from the held-out dialogue corpus (needs espeak-ng and
festival, as the dialogue corpus does; nothing downloads):

    python scripts/make_fdb_demo.py OUT [--sessions 4]
    vemi-eval run dialogue-fdb --data OUT

OUT/turn_taking/<n>/ (input.wav, turn_taking.json, reference.txt) and OUT/pause/<n>/ (input.wav,
pause.json); see vemi_eval/data/fdb_demo.py. Exit codes: 0 written; 2 bad usage (OUT not empty).
"""

from __future__ import annotations

import argparse
import sys

from vemi_eval.data import DataError
from vemi_eval.data import dialogue as dlg
from vemi_eval.data.fdb_demo import write_fdb_demo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="a new (or empty) folder")
    ap.add_argument("--sessions", type=int, default=4, help="held-out sessions to cut (4 turns each)")
    args = ap.parse_args()
    if args.sessions < 1:
        print("--sessions must be >= 1", file=sys.stderr)
        return 2
    try:
        counts = write_fdb_demo(args.out, dlg.dialogue_sessions("heldout", limit=args.sessions))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {counts['turn_taking']} turn-taking and {counts['pause']} pause-handling samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
