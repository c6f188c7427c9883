"""How many of two codecs' codes agree on the held-out sets, per codebook level.

Whether an LM trained on codec A's codes can read codec B's: a retrained decoder keeps every code (1.0); a
continued whole-codec training may move the encoder and the codebooks so far that none survive, and then the
LM needs `scripts/lm_code_transfer.py` or a retraining.

    python scripts/codec_code_agreement.py A.safetensors B.safetensors [--per-set 6] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reference_model.codec import load_codec
from reference_model.errors import CheckpointError, ConfigError
from vemi_eval.environment import git_state
from vemi_eval.storage import file_sha256
from vemi_eval.training.codec_eval import heldout_sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--codebooks", type=int, default=8)
    ap.add_argument("--per-set", type=int, default=6, help="utterances per held-out set")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    for p in (args.a, args.b):
        if not Path(p).is_file():
            sys.exit(f"error: no codec weights at {p}")
    if args.per_set < 1 or args.codebooks < 1:
        sys.exit("error: --per-set and --codebooks must be >= 1")
    torch.set_num_threads(1)
    t0 = time.time()
    try:
        a, b = (load_codec("tiny", p, num_codebooks=args.codebooks).eval() for p in (args.a, args.b))
    except (CheckpointError, ConfigError) as e:  # not a codec file, or not a tiny one: one line
        sys.exit(f"error: {e}")
    fs = a.frame_size
    sets: dict[str, dict] = {}
    for h in heldout_sets(a.sample_rate, per_set=args.per_set):
        agree, frames = [], 0
        for _uid, _spk, ref in h.utterances:
            x = torch.nn.functional.pad(torch.from_numpy(ref), (0, (-len(ref)) % fs)).view(1, 1, -1)
            with torch.no_grad():
                ca, cb = a.encode(x)[0], b.encode(x)[0]
            agree.append((ca == cb).sum(-1).numpy())
            frames += ca.shape[-1]
        per_level = (np.sum(agree, 0) / frames).round(4).tolist()
        sets[h.engine] = {"utterances": len(h.utterances), "frames": frames, "agreement_per_level": per_level}
        print(h.engine, per_level, flush=True)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "a": {"path": args.a, "sha256": file_sha256(Path(args.a))},
        "b": {"path": args.b, "sha256": file_sha256(Path(args.b))},
        "codebooks": args.codebooks,
        "sets": sets,
        "seconds": round(time.time() - t0, 1),
        "environment": {"torch": torch.__version__, **git_state(), "threads": 1},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
