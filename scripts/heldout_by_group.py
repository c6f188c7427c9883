"""Teacher-forced held-out answer accuracy of an LM per user voice, per speech engine or per espeak base voice
(accent; a festival user's "base" is its language).

    python scripts/heldout_by_group.py CHECKPOINT [--by voice|engine|base] [--tokens FOLDER | --codec CODEC]
                                      [--json OUT]

FOLDER defaults to the dialogue corpus's held-out split tokenised by CODEC (default: the bundled codec; built
if absent): an LM is scored on the codes of the codec it was trained on. OUT gets every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--codec", help="codec checkpoint that tokenises the held-out split (default: bundled)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    folder = args.tokens or dialogue.tokenised_split("heldout", args.codec)
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
    if args.json:
        command = " ".join(["python scripts/heldout_by_group.py", *sys.argv[1:]])
        record = {"command": command, "tokens": str(folder), "tokens_sha256": data.sha256, **out}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
