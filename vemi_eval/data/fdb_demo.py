"""A small Full-Duplex-Bench-layout set cut from the held-out dialogue corpus, for the demo of the dialogue
suite on a user's own data (``scripts/make_fdb_demo.py``; nothing of it is committed).

Every held-out turn ("so which number comes after seven") becomes a smooth turn-taking sample:
``turn_taking/<n>/input.wav`` (the user's channel from just before the turn to the next turn, or the end)
with ``turn_taking.json`` ``[{"text": "[TURN-TAKING]", "timestamp": [user's turn end, corpus answer
start]}]`` and ``reference.txt`` (the expected number). Every turn with a mid-turn pause also becomes a
pause-handling sample: ``pause/<n>/input.wav`` up to the end of the user's turn, with ``pause.json``
``[{"text": "[PAUSE]", "timestamp": [pause start, pause end]}]``: FDB's pause TOR reads the whole output,
so the input stops where the answer would begin. Audio at the corpus's 24 kHz, 16-bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import DataError
from . import dialogue as dlg

LEAD_S = 0.3  # of silence kept before the turn's first word
PAUSE_TAIL_S = 0.08  # kept after the user's last word of a paused turn


def _write(folder: Path, audio: np.ndarray, files: dict[str, Any]) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    sf.write(str(folder / "input.wav"), np.clip(audio, -1, 1), dlg.SAMPLE_RATE, subtype="PCM_16")
    for name, doc in files.items():
        (folder / name).write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=1))


def write_fdb_demo(out: str | Path, sessions: list) -> dict[str, int]:
    """Write the samples of ``sessions`` (dialogue corpus sessions) under ``out``; returns the counts per
    task. Refuses a folder that already holds files (nothing written before is replaced)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty: give a new folder")
    sr = dlg.SAMPLE_RATE
    counts = {"turn_taking": 0, "pause": 0}
    for sess in sessions:
        user = sess.user_audio()
        starts = [t.words[0].start for t in sess.turns[1:]] + [sess.n_samples]
        for turn, nxt in zip(sess.turns, starts):
            lo = max(0, turn.words[0].start - int(LEAD_S * sr))

            def rel(x: int, lo: int = lo) -> float:  # seconds into the sample
                return round((x - lo) / sr, 4)

            counts["turn_taking"] += 1
            _write(
                out / "turn_taking" / str(counts["turn_taking"]),
                user[lo:nxt],
                {
                    "turn_taking.json": [
                        {"text": "[TURN-TAKING]", "timestamp": [rel(turn.user_end), rel(turn.answer.start)]}
                    ],
                    "reference.txt": turn.expected + "\n",
                },
            )
            if turn.pause is not None:
                counts["pause"] += 1
                hi = min(sess.n_samples, turn.user_end + int(PAUSE_TAIL_S * sr))
                p0, p1 = turn.pause
                _write(
                    out / "pause" / str(counts["pause"]),
                    user[lo:hi],
                    {"pause.json": [{"text": "[PAUSE]", "timestamp": [rel(p0), rel(p1)]}]},
                )
    return counts
