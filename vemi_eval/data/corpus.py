"""A deterministic synthetic speech corpus made with espeak-ng (no downloads).

Speakers are espeak-ng *voice variants* of the en-us base voice (+Lee, +Alicia, +klatt3...): they differ
in pitch, formants and excitation and behave as distinct speakers for a speaker encoder (resemblyzer:
same-speaker cosine ~0.90, any two different speakers <= 0.75). Accents of one base voice (en-gb, en-us,
rp...) are NOT distinct speakers, so none are used as such.

Speakers AND sentences are split into a training part and a held-out part, so that a codec trained on
``split="train"`` is evaluated on voices and words it never saw (``split="heldout"``).

Audio is synthesised once at espeak's native 22050 Hz and cached under
``$VEMI_CACHE/corpus/<recipe hash>/`` (default ``~/.cache/vemi-eval``); the hash covers the espeak-ng
version, voices, sentences and synthesis settings. Each utterance is loudness-normalised, resampled with a
polyphase filter to the requested rate and given a tiny seeded dither (espeak leaves exact-zero silence).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..storage import cache_home
from . import DataError
from .audio import dither, resample

NATIVE_RATE = 22050
RECIPE_VERSION = 1  # bump when synthesis or post-processing changes
TARGET_RMS_DB = -24.0  # loudness of every utterance (whole-file RMS), peak capped at -1 dBFS
WORDS_PER_MINUTE = 165


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: str  # espeak-ng -v argument
    pitch: int = 50  # espeak-ng -p (0-99)


# 12 voice variants of one base voice, chosen greedily from 26 candidates so that no two are alike
# (resemblyzer cosine between any two <= 0.75, same-speaker ~0.90). The last 4 are held out.
SPEAKERS: tuple[Speaker, ...] = (
    Speaker("lee", "en-us+Lee"),
    Speaker("alicia", "en-us+Alicia"),
    Speaker("steph", "en-us+steph"),
    Speaker("gene", "en-us+Gene"),
    Speaker("aunty", "en-us+aunty"),
    Speaker("m4", "en-us+m4"),
    Speaker("f5", "en-us+f5"),
    Speaker("klatt3", "en-us+klatt3"),
    # held out
    Speaker("andy", "en-us+Andy"),
    Speaker("annie", "en-us+Annie"),
    Speaker("michel", "en-us+michel"),
    Speaker("belinda", "en-us+belinda"),
)
HELDOUT_SPEAKERS = 4

# Varied English: numbers, questions, names, short and long, everyday and technical.
SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "I would like a cup of tea with milk and no sugar.",
    "The train to Boston leaves at half past seven in the morning.",
    "Can you tell me where the nearest pharmacy is?",
    "She sells sea shells by the sea shore every summer.",
    "Our meeting has been moved to Thursday afternoon.",
    "The weather will be cloudy with a chance of light rain.",
    "He opened the window and let the cold air into the room.",
    "My brother plays the guitar in a small jazz band.",
    "We need to finish the report before the end of the week.",
    "Turn left at the second traffic light and keep going straight.",
    "The children were laughing and running around the garden.",
    "Do you remember the name of that little restaurant by the lake?",
    "Seven hundred people attended the concert last night.",
    "The doctor said I should get more sleep and drink more water.",
    "A large dog was barking at the mailman across the street.",
    "Could you please speak a little more slowly?",
    "The museum is closed on Mondays and public holidays.",
    "I left my keys on the kitchen table this morning.",
    "The price of bread has gone up again this month.",
    "They walked along the beach until the sun went down.",
    "What time does the library open on Saturday?",
    "The computer restarted in the middle of my presentation.",
    "Fresh vegetables are sold at the market every Wednesday.",
    "Her new book tells the story of a family in a small village.",
    "The pilot announced that we would land in twenty minutes.",
    "I think it is going to snow later tonight.",
    "Please remember to switch off the lights when you leave.",
    "The football match ended in a draw after extra time.",
    "Thank you very much for your help yesterday.",
    "The river flows slowly through the green valley.",
    "How many languages can you speak fluently?",
    "We painted the fence white and planted roses near the gate.",
    "The engineer checked the bridge for cracks and loose bolts.",
    "Nobody knew why the old clock had stopped at midnight.",
    "The hotel room had a beautiful view of the mountains.",
    "Could I have the bill, please?",
    "Most birds fly south when the days become shorter.",
    "The company hired three new designers this spring.",
    "Don't forget to water the plants while I am away.",
    "The police officer asked the driver to show his license.",
    "A warm bowl of soup is perfect on a cold winter evening.",
    "The students listened carefully to the professor's lecture.",
    "Where did you put the umbrella that I gave you?",
    "The baker wakes up at four every morning to make bread.",
    "Our neighbors are moving to a bigger house next month.",
    "The phone rang twice and then stopped.",
)
HELDOUT_SENTENCES = 12  # the last 12 sentences are held out

QUICK_SENTENCES = 3  # quick mode: the first 3 sentences of the split for every speaker of the split


@dataclass
class Utterance:
    id: str
    speaker: str | None  # None: unknown (BYO data without speaker labels)
    text: str | None  # None: no transcript (BYO data)
    audio: np.ndarray  # float32 mono
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate


def espeak_version() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("espeak-ng is not installed (needed for the synthetic corpus; apt install espeak-ng)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[0]


def split_items(split: str) -> list[tuple[Speaker, int]]:
    """(speaker, sentence index) pairs of a split, in a fixed order."""
    train_spk = SPEAKERS[: len(SPEAKERS) - HELDOUT_SPEAKERS]
    held_spk = SPEAKERS[len(SPEAKERS) - HELDOUT_SPEAKERS :]
    n_train_sent = len(SENTENCES) - HELDOUT_SENTENCES
    train_sent = range(n_train_sent)
    held_sent = range(n_train_sent, len(SENTENCES))
    if split == "train":
        return [(s, i) for s in train_spk for i in train_sent]
    if split == "heldout":
        return [(s, i) for s in held_spk for i in held_sent]
    if split == "all":
        return [(s, i) for s in SPEAKERS for i in range(len(SENTENCES))]
    raise DataError(f"unknown corpus split {split!r} (expected 'train', 'heldout' or 'all')")


def recipe(version: str | None = None) -> dict:
    return {
        "recipe_version": RECIPE_VERSION,
        "espeak": version or espeak_version(),
        "speakers": [[s.id, s.voice, s.pitch] for s in SPEAKERS],
        "sentences": list(SENTENCES),
        "wpm": WORDS_PER_MINUTE,
        "native_rate": NATIVE_RATE,
        "target_rms_db": TARGET_RMS_DB,
    }


def recipe_hash(version: str | None = None) -> str:
    blob = json.dumps(recipe(version), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return cache_home() / "corpus"


def _synthesize(speaker: Speaker, text: str) -> np.ndarray:
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "u.wav")
        cmd = ["espeak-ng", "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(WORDS_PER_MINUTE)]
        subprocess.run([*cmd, "-w", wav, text], check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32")
    if rate != NATIVE_RATE:
        raise DataError(f"espeak-ng produced {rate} Hz, expected {NATIVE_RATE}")
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    gain = 10 ** (TARGET_RMS_DB / 20) / max(rms, 1e-9)
    gain = min(gain, 10 ** (-1 / 20) / max(float(np.abs(audio).max()), 1e-9))
    return (audio * gain).astype(np.float32)


def _native(speaker: Speaker, sent_idx: int, folder: Path) -> np.ndarray:
    """The 22050 Hz utterance, synthesised on first use and stored as float32 .npy (atomic write)."""
    path = folder / f"{speaker.id}_{sent_idx:03d}.npy"
    if path.exists():
        return np.load(path)
    audio = _synthesize(speaker, SENTENCES[sent_idx])
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, audio)
    os.replace(tmp, path)  # several processes may build the cache at once
    return audio


def utterance_seed(utt_id: str) -> int:
    return int.from_bytes(hashlib.sha256(utt_id.encode()).digest()[:4], "little")


def espeak_corpus(
    split: str = "heldout",
    *,
    quick: bool = False,
    sample_rate: int = 24000,
    cache_dir: str | Path | None = None,
) -> list[Utterance]:
    """The corpus split as a list of utterances at ``sample_rate`` (deterministic, cached on disk)."""
    items = split_items(split)
    if quick:
        keep: dict[str, int] = {}
        sub = []
        for spk, i in items:
            if keep.get(spk.id, 0) < QUICK_SENTENCES:
                keep[spk.id] = keep.get(spk.id, 0) + 1
                sub.append((spk, i))
        items = sub
    folder = cache_root(cache_dir) / recipe_hash()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "recipe.json"
    if not manifest.exists():
        manifest.write_text(json.dumps(recipe(), indent=1))
    out = []
    for spk, i in items:
        uid = f"{spk.id}_{i:03d}"
        audio = resample(_native(spk, i, folder), NATIVE_RATE, sample_rate)
        audio = dither(audio, utterance_seed(uid))
        out.append(Utterance(uid, spk.id, SENTENCES[i], audio, sample_rate))
    return out


def corpus_sha256(utterances: list[Utterance]) -> str:
    """Hash of the audio and transcripts actually used (for results.json "data")."""
    h = hashlib.sha256()
    for u in utterances:
        h.update(u.id.encode())
        h.update(u.text.encode())
        h.update(str(u.sample_rate).encode())
        h.update(np.ascontiguousarray(u.audio, dtype=np.float32).tobytes())
    return h.hexdigest()
