"""Which festival voices say the dialogue corpus's English prompts intelligibly: the bundled ASR's word error
on every prompt and number word, per voice; writes the checked-in file the corpus's recipe reads.

    python scripts/festival_intelligibility.py [--out vemi_eval/data/festival_intelligibility.json]

Each voice says every word of the corpus's prompts (training and held-out) and every number the user asks
about, one word at a time at Duration_Stretch 1, trimmed and levelled as the corpus does
(vemi_eval/data/dialogue/). The words are put together into 19 utterances, one per number, the prompts
in turn ("what comes after one", "what number comes after two", ...), with 50 ms between words, and
transcribed by faster-whisper tiny.en (vemi_eval/evaluators/asr.py; beam 5, temperature 0). WER is
corpus-level under the harness's one normalisation (vemi_eval/evaluators/wer.py). A word the voice
cannot say (festival writes no audio) is left out of its utterance, so it counts as deleted.

Two plain espeak-ng voices (the engine the corpus already uses) are scored the same way as a yardstick.
Decision: an English voice says the prompts as they are (used whatever its figure); a non-English one is
used when its WER is at most ``THRESHOLD``; ked_diphone is the model's voice and never a user.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vemi_eval.data import DataError, festival
from vemi_eval.data import dialogue as dlg
from vemi_eval.evaluators import EvaluatorError, asr, file_sha256
from vemi_eval.evaluators.wer import error_counts

# The bar for the model's own spoken answers (ASR word error <= 0.25): a user the LM learns from
# should be at least as intelligible as the answers it is asked to give.
THRESHOLD = 0.25
WORD_GAP_S = 0.05  # within the corpus's WORD_GAP_S range
EDGE_S = 0.3  # silence before and after each utterance
ESPEAK_YARDSTICKS = ("en-us", "en")  # the corpus's two base voices, plain, at pitch 50 and 160 wpm


def utterances() -> list[str]:
    """One utterance per asked number; the prompts (training, then held-out) in turn."""
    prompts = dlg.TRAIN_PROMPTS + dlg.HELDOUT_PROMPTS
    return [prompts[(n - 1) % len(prompts)].format(n=dlg.NUMBERS[n]) for n in dlg.ASKED]


def festival_words(name: str, words: list[str]) -> dict[str, np.ndarray | None]:
    """Each word's clip as the corpus makes it, None where the voice writes no audio for it (in one
    festival process; word by word when that process stops early)."""
    try:
        return {w: dlg._trim_and_level(a, sr) for w, (a, sr) in zip(words, festival.say_many(name, words))}
    except DataError as e:
        if "has no voice" in str(e):
            raise
    out: dict[str, np.ndarray | None] = {}
    for w in words:
        try:
            out[w] = dlg._trim_and_level(*festival.say_many(name, [w])[0])
        except DataError as e:
            if "has no voice" in str(e):
                raise
            out[w] = None
    return out


def score(clips: dict[str, np.ndarray | None], texts: list[str]) -> dict:
    gap = np.zeros(int(WORD_GAP_S * dlg.SAMPLE_RATE), np.float32)
    edge = np.zeros(int(EDGE_S * dlg.SAMPLE_RATE), np.float32)
    words = errors = numbers_heard = 0
    heard = []
    for text, n in zip(texts, dlg.ASKED):
        parts = [edge]
        for w in text.split():
            if clips[w] is not None:
                parts += [clips[w], gap]
        audio = np.concatenate(parts + [edge])
        hyp = asr.transcribe(audio, dlg.SAMPLE_RATE) if audio.size > 2 * edge.size + gap.size else ""
        counts = error_counts(text, hyp)
        words += counts["words"]
        errors += counts["word_errors"]
        numbers_heard += dlg.NUMBERS[n] in hyp_words(hyp)
        heard.append(hyp)
    return {
        "wer": round(errors / words, 4),
        "words": words,
        "word_errors": errors,
        "numbers_heard": numbers_heard,
        "numbers": len(texts),
        "not_said": sorted(w for w, c in clips.items() if c is None),
        "transcripts": heard,
    }


def hyp_words(hyp: str) -> list[str]:
    from vemi_eval.evaluators.wer import normalize

    return normalize(hyp).split()


def decide(v: festival.FestivalVoice, wer: float) -> tuple[str, str]:
    if v.name == dlg.MODEL_VOICE:
        return "model voice", "the model's voice is never a user"
    if v.language == "en":
        return "use", "an English voice says the prompts as they are"
    if wer <= THRESHOLD:
        return "use", f"WER {wer:.3f} <= {THRESHOLD}"
    return "leave out", f"WER {wer:.3f} > {THRESHOLD}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(festival.INTELLIGIBILITY_PATH))
    args = ap.parse_args()
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"error: {out.parent} is not a folder", file=sys.stderr)
        return 2
    try:
        festival.check_voices([v.name for v in festival.ALL_VOICES])
        model_dir = asr.default_model_dir()
        asr_sha = file_sha256(Path(model_dir) / "model.bin")
        texts = utterances()
        words = sorted({w for t in texts for w in t.split()})
        t0 = time.time()
        voices = []
        for v in festival.ALL_VOICES:
            figures = score(festival_words(v.name, words), texts)
            decision, why = decide(v, figures["wer"])
            voices.append(
                {"name": v.name, "language": v.language, **figures, "decision": decision, "why": why}
            )
            print(f"{v.name:22s} {v.language}  WER {figures['wer']:.3f}  numbers {figures['numbers_heard']}/"
                  f"{figures['numbers']}  {decision}", flush=True)  # fmt: skip
        yardsticks = []
        for base in ESPEAK_YARDSTICKS:
            clips = {w: dlg._espeak_say(base, 50, 160, w) for w in words}
            yardsticks.append({"voice": base, "pitch": 50, "rate": 160, **score(clips, texts)})
            print(f"espeak {base:15s} WER {yardsticks[-1]['wer']:.3f}", flush=True)
    except (DataError, EvaluatorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {
        "produced_by": "scripts/festival_intelligibility.py",
        "command": "python scripts/festival_intelligibility.py",
        "what": "ASR word error of each festival voice saying the dialogue corpus's prompt and number words",
        "asr": {"model": str(model_dir), "model_sha256": asr_sha, "beam_size": asr.DEFAULT_BEAM},
        "tools": dlg.tool_versions(),
        "utterances": texts,
        "word_gap_s": WORD_GAP_S,
        "threshold_wer": THRESHOLD,
        "threshold_why": "the issue's bar for the model's own spoken answers (ASR WER <= 0.25): a user "
        "the LM learns from is at least as intelligible as the answers it must give",
        "prompts_sha256": hashlib.sha256(json.dumps(texts).encode()).hexdigest(),
        "voices": voices,
        "espeak_yardsticks": yardsticks,
        "seconds": round(time.time() - t0, 1),
        "platform": platform.platform(),
        "git_commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
