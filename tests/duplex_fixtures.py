"""Small synthetic Full-Duplex-Bench and M3-DuplexBench data folders for the dialogue tests (a few seconds
of a voiced buzz at 16 kHz, the rate FDB ships)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000


def speechlike(
    seconds: float, spans: list[tuple[float, float]], seed: int = 0, rate: int = RATE
) -> np.ndarray:
    """Silence with a voiced, amplitude-modulated buzz in ``spans`` (what a VAD calls speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = 1e-4 * rng.standard_normal(t.size)
    for a, b in spans:
        m = (t >= a) & (t < b)
        f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t[m])
        out[m] += (
            0.2
            * np.sign(np.sin(2 * np.pi * np.cumsum(f0) / rate))
            * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t[m]))
        )
    return out.astype(np.float32)


def fdb_sample(
    folder: Path, annotation: str, doc, seconds: float = 3.0, reference: str | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(str(folder / "input.wav"), speechlike(seconds, [(0.3, 1.6)]), RATE)
    if annotation:
        (folder / annotation).write_text(json.dumps(doc))
    if reference is not None:
        (folder / "reference.txt").write_text(reference)
    return folder


def turn_taking(end: float) -> list[dict]:
    return [{"text": "[TURN-TAKING]", "timestamp": [end, end + 0.4]}]


def pause(a: float, b: float) -> list[dict]:
    return [{"text": "[PAUSE]", "timestamp": [a, b]}]


def m3_folder(root: Path, records: list[dict], seconds: float = 4.0, name: str = "test.jsonl") -> Path:
    """``root/test.jsonl`` plus ``root/audio/<id>.wav`` with two channels (user on 0)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for rec in records:
        user = speechlike(seconds, [(0.2, 1.5)], seed=1)
        other = speechlike(seconds, [(2.0, 3.0)], seed=2)
        sf.write(str(root / "audio" / f"{rec['id']}.wav"), np.stack([user, other], axis=1), RATE)
    (root / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    return root
