"""Whether the dialogue suite's answer WER measures speech or the ASR's hallucinations in silence.

The dialogue suite used to transcribe each answer window (the user's end to the next turn's start: one
answer word and up to a few seconds of silence) with faster-whisper as it is, no VAD. On the corpus's own
answers through the codec, its mean WER was 1.58 with a median of 0 (session 21): a few windows where
whisper writes a sentence carry the mean. This script scores the same windows two ways:

* ``whole``: the whole window (the suite up to its measurement version 3);
* ``vad``: only the speech Silero VAD finds in it (faster-whisper's VAD filter with M3-DuplexBench's
  settings, ``asr.transcribe_spans``: the suite from version 4),

for the corpus's answers as synthesised and through the codec (8 codebooks), and lists the runaway
windows (WER above 1) with what whisper heard. A runaway that vanishes under VAD was whisper's
hallucination in silence; one that stays is speech the ASR cannot read.

    python scripts/answer_asr_check.py --out reports/training/answer-asr-check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from reference_model.codec import load_codec
from vemi_eval.data import dialogue as dlg
from vemi_eval.data.codec_roundtrip import roundtrip
from vemi_eval.environment import git_state
from vemi_eval.evaluators import asr as asr_ev
from vemi_eval.evaluators import evaluators_info
from vemi_eval.evaluators.dialogue_scoring import answer_windows
from vemi_eval.measurements.dialogue import RUNAWAY_WER, transcript, turn_wer
from vemi_eval.storage import file_sha256


def summary(rows: list[float]) -> dict[str, float | int]:
    a = np.asarray(rows, dtype=np.float64)
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "runaways": int((a > RUNAWAY_WER).sum()),
        "exact": int((a == 0).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codec", default=None, help="codec weights (default: the tiny preset's bundled ones)")
    ap.add_argument("--codebooks", type=int, default=8)
    ap.add_argument("--sessions", type=int, default=0, help="held-out sessions (0: all 48)")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--vad-only", action="store_true", help="only the suite's way (half the time)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()
    codec = load_codec("tiny", args.codec, num_codebooks=args.codebooks).eval()
    sessions = dlg.dialogue_sessions("heldout", limit=args.sessions or None)
    sr = dlg.SAMPLE_RATE
    asr_params = {"asr_model": "", "beam_size": args.beam}
    rows: dict[str, dict[str, list[float]]] = {}
    runaways: list[dict] = []
    for sess in sessions:
        ref = sess.model_audio()
        sources = {"corpus_speech": ref, "corpus_codec": roundtrip(codec, ref, args.codebooks)}
        for k, ((lo, hi), turn) in enumerate(zip(answer_windows(sess), sess.turns)):
            expected = turn.answer.text
            for source, audio in sources.items():
                clip = audio[lo:hi]
                heard = {"vad": transcript(clip, sr, asr_params)}  # the suite's own ASR
                if not args.vad_only:
                    heard["whole"] = asr_ev.transcribe_words(clip, sr, beam_size=args.beam)
                for mode, words in heard.items():
                    w = turn_wer(expected, words)
                    rows.setdefault(source, {}).setdefault(mode, []).append(w)
                    if w > RUNAWAY_WER:
                        runaways.append(
                            {
                                "session": sess.id,
                                "turn": k,
                                "source": source,
                                "mode": mode,
                                "expected": expected,
                                "window_s": round((hi - lo) / sr, 2),
                                "heard": " ".join(word for word, _, _ in words)[:200],
                            }
                        )
    doc = {
        "what": "answer-window ASR: VAD-filtered (the suite since v4, M3-DuplexBench) and the whole window",
        "codec": args.codec or "bundled tiny",
        "codec_sha256": file_sha256(args.codec) if args.codec else None,
        "codebooks": args.codebooks,
        "sessions": len(sessions),
        "asr": evaluators_info(["asr"]),
        "beam": args.beam,
        "vad_options": asr_ev.M3_VAD,
        "summary": {src: {mode: summary(v) for mode, v in modes.items()} for src, modes in rows.items()},
        "runaways": runaways,
        "seconds": round(time.time() - t0, 1),
        "git": git_state(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    for src, modes in doc["summary"].items():
        for mode, s in modes.items():
            print(f"{src:14s} {mode:5s} " + " ".join(f"{k} {v:.3g}" for k, v in s.items()))


if __name__ == "__main__":
    main()
