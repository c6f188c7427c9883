"""The dialogue corpus's recipe and its hash (the cache folder), and the words it says: each synthesised once
(espeak-ng or festival), trimmed, levelled and cached under the recipe's hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ...storage import cache_home
from .. import DataError, espeak_mix, festival
from ..audio import dither, resample
from .spec import (
    AFTER_ANSWER_S,
    ANSWER_GAP_S,
    ASKED,
    BASE_VOICES,
    FESTIVAL,
    FESTIVAL_STRETCH,
    GAIN_DB,
    HELDOUT_EVERY,
    HELDOUT_PROMPTS,
    LEAD_SILENCE_S,
    MODEL_VOICE,
    PAUSE_S,
    RECIPE_VERSION,
    SAMPLE_RATE,
    SPLITS,
    STYLES_PER_VOICE,
    TAIL_SILENCE_S,
    TARGET_RMS_DB,
    TRAIN_PROMPTS,
    WORD_GAP_S,
    UserVoice,
    vocab,
)
from .voices import _voice_split, espeak_variants, festival_users, user_words


# --- recipe, cache ------------------------------------------------------------------------------------
def tool_versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        exe = shutil.which(cmd[0])
        if exe is None:
            raise DataError(f"{cmd[0]} is not installed (needed for the dialogue corpus)")
        return subprocess.run([exe, *cmd[1:]], capture_output=True, text=True).stdout.strip().splitlines()[0]

    return {
        "espeak": first_line(["espeak-ng", "--version"]),
        "festival": first_line(["festival", "--version"]),
    }


def recipe(versions: dict[str, str] | None = None) -> dict[str, Any]:
    users, intelligibility_sha = festival_users()
    return {
        "recipe_version": RECIPE_VERSION,
        "tools": versions or tool_versions(),
        "sample_rate": SAMPLE_RATE,
        "answer_gap_s": ANSWER_GAP_S,
        "answer_on_frame_boundary": True,
        "model_voice": MODEL_VOICE,
        "variants": espeak_variants(),
        "heldout_every": HELDOUT_EVERY,
        "styles_per_voice": STYLES_PER_VOICE,
        "base_voices": list(BASE_VOICES),
        "festival_users": [asdict(u) for u in users],
        "festival_intelligibility_sha256": intelligibility_sha,
        "festival_stretch": list(FESTIVAL_STRETCH),
        "train_prompts": list(TRAIN_PROMPTS),
        "heldout_prompts": list(HELDOUT_PROMPTS),
        "asked": list(ASKED),
        "splits": SPLITS,
        "word_gap_s": WORD_GAP_S,
        "pause_s": PAUSE_S,
        "lead_silence_s": LEAD_SILENCE_S,
        "after_answer_s": AFTER_ANSWER_S,
        "tail_silence_s": TAIL_SILENCE_S,
        "gain_db": GAIN_DB,
        "target_rms_db": TARGET_RMS_DB,
        "vocab": list(vocab().tokens),
    }


def recipe_hash(rec: dict[str, Any] | None = None) -> str:
    return hashlib.sha256(json.dumps(rec or recipe(), sort_keys=True).encode()).hexdigest()[:16]


def split_hash(split: str, rec: dict[str, Any] | None = None) -> str:
    """Hash of what one split's plan depends on: the recipe without the other split's settings (nor,
    for the held-out split, the training prompts). Growing the training split leaves the held-out
    sessions as they were, so LMs trained on different corpora are scored on the same sessions."""
    rec = dict(rec or recipe())
    rec["splits"] = {split: rec["splits"][split]}
    rec["styles_per_voice"] = rec["styles_per_voice"][_voice_split(split)]
    if _voice_split(split) != "train":
        rec.pop("train_prompts")
    return recipe_hash(rec)


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        base = Path(cache_dir)
    else:
        base = cache_home() / "dialogue"
    rec = recipe()
    folder = base / recipe_hash(rec)
    (folder / "words").mkdir(parents=True, exist_ok=True)
    manifest = folder / "recipe.json"
    if not manifest.exists():
        check_bases_take_variants(rec["variants"][:2])
        _atomic_write(manifest, json.dumps(rec, indent=1).encode())
    return folder


def check_bases_take_variants(variants: list[str], bases: tuple[str, ...] | None = None) -> None:
    """Each base voice (default ``BASE_VOICES``) with a variant says a word unlike the base alone: espeak-ng
    ignores the variant of some base names silently (1.51: "en-gb"), making every style of it one speaker."""
    for base in BASE_VOICES if bases is None else bases:
        plain = _espeak_say(base, 50, 160, "seven")
        for v in variants:
            said = _espeak_say(f"{base}+{v}", 50, 160, "seven")
            if np.array_equal(said, plain):
                raise DataError(
                    f"espeak-ng ignores variant {v!r} of base voice {base!r} (says the plain voice)"
                )


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # several processes may build the cache at once


# --- synthesis of single words ------------------------------------------------------------------------
def _trim_and_level(audio: np.ndarray, rate: int) -> np.ndarray:
    """Cut the synthesiser's leading/trailing silence, resample to 24 kHz, set the clip's RMS."""
    a = np.asarray(audio, np.float64)
    loud = np.nonzero(np.abs(a) > 1e-3 * max(float(np.abs(a).max()), 1e-9))[0]
    if loud.size == 0:
        raise DataError("the synthesiser produced silence")
    a = resample(a[loud[0] : loud[-1] + 1], rate, SAMPLE_RATE).astype(np.float64)
    rms = float(np.sqrt(np.mean(a**2)))
    a *= 10 ** (TARGET_RMS_DB / 20) / max(rms, 1e-9)
    peak = float(np.abs(a).max())
    if peak > 0.89:
        a *= 0.89 / peak
    return a.astype(np.float32)


def _cached_clip(path: Path, make) -> np.ndarray:
    if path.exists():
        return np.load(path)
    audio = make()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, audio)
    os.replace(tmp, path)
    return audio


def _espeak_say(voice: str, pitch: int, rate: int, word: str, path: Path | None = None) -> np.ndarray:
    audio, sr = espeak_mix.say(voice, pitch, rate, word, path)
    try:
        return _trim_and_level(audio, sr)
    except DataError as e:
        raise DataError(f"espeak-ng {voice} (pitch {pitch}, rate {rate}) said {word!r}: {e}") from None


def _espeak_word(voice: UserVoice, word: str, folder: Path) -> np.ndarray:
    # a crossover lives in its own espeak data folder, built by dialogue_sessions before any word is said
    path = espeak_mix.espeak_path(folder, voice.variant) if espeak_mix.is_mixed(voice.variant) else None
    return _espeak_say(voice.espeak_voice, voice.pitch, voice.rate, word, path)


def festival_say(text: str, voice: str = MODEL_VOICE) -> tuple[np.ndarray, int]:
    """``text`` in a festival voice (the model's by default), through text2wave."""
    return festival.text2wave(text, voice)


def _festival_words(voice: UserVoice, folder: Path) -> dict[str, np.ndarray]:
    """Every word a user says, in a festival user's style, from one festival process (its start-up
    dominates a word); each clip cached as a word of its own."""
    words = user_words()
    said = festival.say_many(voice.variant, words, voice.stretch, f0_hz=float(voice.pitch))
    clips = {w: _trim_and_level(audio, rate) for w, (audio, rate) in zip(words, said)}
    for w, clip in clips.items():
        path = _user_clip_path(folder, voice, w)
        if not path.exists():
            _cached_clip(path, lambda clip=clip: clip)
    return clips


def _user_clip_path(folder: Path, voice: UserVoice, word: str) -> Path:
    return folder / "words" / f"user_{voice.id}_{word}.npy"


def _user_clip(folder: Path, voice: UserVoice, word: str) -> np.ndarray:
    path = _user_clip_path(folder, voice, word)
    if voice.engine == FESTIVAL:
        return _cached_clip(path, lambda: _festival_words(voice, folder)[word])
    return _cached_clip(path, lambda: _espeak_word(voice, word, folder))


def _model_clip(folder: Path, word: str) -> np.ndarray:
    return _cached_clip(folder / "words" / f"model_{word}.npy", lambda: _trim_and_level(*festival_say(word)))


def model_reference_audio(cache_dir: str | Path | None = None) -> np.ndarray:
    """The model's voice saying other things (speaker-similarity reference), 24 kHz."""
    folder = cache_folder(cache_dir)
    text = "one two three four five six seven eight nine ten. eleven twelve thirteen fourteen fifteen."

    def make() -> np.ndarray:
        audio, rate = festival_say(text)
        return _trim_and_level(audio, rate)

    return dither(_cached_clip(folder / "words" / "model_reference.npy", make), 7)
