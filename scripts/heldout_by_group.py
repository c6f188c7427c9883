"""Teacher-forced held-out answer accuracy of an LM per user voice, per speech engine or per espeak base voice
(accent; a festival user's "base" is its language).

    python scripts/heldout_by_group.py CHECKPOINT [--by voice|engine|base] [--tokens FOLDER]

FOLDER defaults to the dialogue corpus's held-out split tokenised by the bundled codec (built if absent).
"""

from __future__ import annotations

import argparse
import sys

import torch

from reference_model.lm.load import load_lm
from vemi_eval.data import dialogue
from vemi_eval.training.lm import LossWeights, evaluate, load_token_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--by", choices=["voice", "engine", "base"], default="voice")
    ap.add_argument("--tokens", help="held-out token-grid folder (default: the corpus's, tokenised)")
    args = ap.parse_args()
    torch.manual_seed(0)
    folder = args.tokens or dialogue.tokenised_split("heldout", None)
    lm = load_lm("tiny", args.checkpoint)
    data = load_token_folder(folder, lm.config.n_q + 1)
    if args.by == "base":
        sessions = {s.id: s for s in dialogue.dialogue_sessions("heldout")}
        groups = ("espeak base voice", [sessions[n].voice.base for n in data.names])
    elif args.by == "engine":
        groups = data.groups("engine_groups")
    else:
        groups = data.groups()
    if groups is None:
        sys.exit(f"error: {folder}/manifest.json does not say each session's {args.by} (tokenise it anew)")
    out = evaluate(lm, data.grids, 256, LossWeights(), groups)
    print(f"accuracy {out['text_word_accuracy_teacher_forced']:.4f} of {out['text_words']} answers")
    for k, v in sorted(out["text_word_accuracy_by_group"]["of"].items()):
        print(f"  {k}: {v['correct']}/{v['words']}")


if __name__ == "__main__":
    main()
