"""The codec's training corpus: many synthetic and recorded voices, thousands of sentences, whole voices
held out.

Two engines, both Debian packages (no other speech source is allowed):

* espeak-ng: every English base voice combined with its ~100 voice variants, at random pitch and rate.
  A variant behaves as a distinct speaker (accents of one base voice do not, design.md 2b), so whole
  *variants* are held out, including the four of the espeak evaluation corpus (``corpus.SPEAKERS``).
* festival with the festvox voices: recorded human speakers (English, Czech, Finnish, Italian, Catalan,
  Russian, Hindi, Marathi, Telugu). A codec does not care about language; each voice reads text in its
  own script. Whole voices are held out, at least one per language family where there are two.

Sentences are random word sequences (English words from Debian's ``wamerican`` list; random syllables
in the native script for the Indic and Russian voices): the codec needs phonetic variety, not meaning.
Audio is loudness-normalised, resampled to the codec's rate and stored once per recipe hash under
``$VEMI_CACHE/codec_corpus/<hash>/`` as int16 (one array per split, plus a JSON index).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..storage import cache_home
from . import DataError
from .audio import resample
from .corpus import SPEAKERS as EVAL_SPEAKERS
from .corpus import espeak_version
from .dialogue import check_bases_take_variants
from .festival import FESTIVAL_VOICES, FestivalVoice  # the voices (and those the codec holds out)

# 2: a missing festival voice is an error (v1 silently fell back to the default voice). 3: the British base
# is "en": espeak-ng 1.51 drops the variant of "en-gb", so v2's en-gb utterances (1 in 8), held-out ones
# included, were all the one plain en-gb speaker.
RECIPE_VERSION = 3
TARGET_RMS_DB = -24.0
WORDLIST = Path("/usr/share/dict/american-english")

ESPEAK_BASES = (
    "en-us", "en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
    "en-us-nyc",
)  # fmt: skip
# Variants never used for training: the espeak evaluation corpus's held-out speakers, and four more.
HELDOUT_VARIANTS = tuple(s.voice.split("+")[1] for s in EVAL_SPEAKERS[-4:]) + ("Mike", "m2", "f2", "Tweaky")
EVAL_TRAIN_VARIANTS = tuple(s.voice.split("+")[1] for s in EVAL_SPEAKERS[:-4])


@dataclass(frozen=True)
class CorpusSize:
    espeak_train: int = 2400
    festival_train_per_voice: int = 160
    espeak_heldout_per_variant: int = 6
    festival_heldout_per_voice: int = 10


@dataclass
class CodecCorpus:
    """One split: int16 audio concatenated, with per-utterance offsets and labels."""

    audio: np.ndarray  # int16 [N]
    offsets: np.ndarray  # int64 [U + 1]
    items: list[dict]  # per utterance: engine, voice, text, ...
    sample_rate: int
    sha256: str

    def __len__(self) -> int:
        return len(self.items)

    def utterance(self, i: int) -> np.ndarray:
        return self.audio[self.offsets[i] : self.offsets[i + 1]].astype(np.float32) / 32767.0

    @property
    def hours(self) -> float:
        return self.audio.size / self.sample_rate / 3600.0


# --- text ---------------------------------------------------------------------------------------
_DEVANAGARI_C = "कखगघचछजझटठडढतथदधनपफबभमयरलवशसह"
_DEVANAGARI_V = ["", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ"]
_TELUGU_C = "కఖగఘచఛజఝటఠడఢతథదధనపఫబభమయరలవశసహ"
_TELUGU_V = ["", "ా", "ి", "ీ", "ు", "ూ", "ె", "ే", "ై", "ొ", "ో"]
_CYRILLIC_C = "бвгджзклмнпрстфхцчшщ"
_CYRILLIC_V = "аеиоуыэюя"


def english_words() -> list[str]:
    if not WORDLIST.is_file():
        raise DataError(
            f"{WORDLIST} not found (the codec corpus needs Debian's wamerican: apt install wamerican)"
        )
    words = [w.strip() for w in WORDLIST.read_text(encoding="utf-8", errors="ignore").splitlines()]
    return sorted({w.lower() for w in words if w.isascii() and w.isalpha() and 2 <= len(w) <= 12})


def _syllable_word(rng: np.random.Generator, script: str) -> str:
    n = int(rng.integers(1, 4))
    if script == "devanagari":
        return "".join(rng.choice(list(_DEVANAGARI_C)) + rng.choice(_DEVANAGARI_V) for _ in range(n))
    if script == "telugu":
        return "".join(rng.choice(list(_TELUGU_C)) + rng.choice(_TELUGU_V) for _ in range(n))
    if script == "cyrillic":
        return "".join(rng.choice(list(_CYRILLIC_C)) + rng.choice(list(_CYRILLIC_V)) for _ in range(n + 1))
    raise ValueError(script)


def sentence(rng: np.random.Generator, script: str, words: list[str]) -> str:
    n = int(rng.integers(5, 13))
    if script == "latin":
        return " ".join(words[int(rng.integers(len(words)))] for _ in range(n)) + "."
    return " ".join(_syllable_word(rng, script) for _ in range(n)) + "."


# --- voices -------------------------------------------------------------------------------------
def espeak_variants() -> list[str]:
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 5 and parts[4].startswith("!v/"):  # a file name with a space is not addressable
            names.append(parts[4][3:])
    return sorted(set(names))


def normalise_level(audio: np.ndarray) -> np.ndarray | None:
    audio = np.asarray(audio, dtype=np.float64)
    rms = float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0
    if rms < 1e-4 or audio.size < 4000:
        return None
    gain = min(10 ** (TARGET_RMS_DB / 20) / rms, 10 ** (-1 / 20) / float(np.abs(audio).max()))
    return (audio * gain).astype(np.float32)


def _espeak(voice: str, pitch: int, rate: int, text: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "u.wav")
        cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "-w", wav, text]
        subprocess.run(cmd, check=True, capture_output=True)
        audio, sr = sf.read(wav, dtype="float32")
    return audio, sr


def festival_batch(
    voice: FestivalVoice, texts: list[str], stretches: list[float]
) -> list[tuple[np.ndarray, int] | None]:
    """All ``texts`` in one festival process (its start-up dominates a single sentence); None for a
    sentence festival cannot say (a SIOD error stops the process: the rest go to a new one)."""
    out: list[tuple[np.ndarray, int] | None] = []
    while len(out) < len(texts):
        got = _festival_run(voice, texts[len(out) :], stretches[len(out) :])
        out.extend(got)
        if len(out) < len(texts):
            out.append(None)  # the sentence the process stopped on
    return out


def _festival_run(
    voice: FestivalVoice, texts: list[str], stretches: list[float]
) -> list[tuple[np.ndarray, int]]:
    """Say ``texts`` until festival stops; the audio of every sentence before it stopped."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        lines = [f"(voice_{voice.name})"]
        for i, (t, s) in enumerate(zip(texts, stretches)):
            t = t.replace("\\", " ").replace('"', " ")
            lines.append(f"(Parameter.set 'Duration_Stretch {s:.3f})")
            lines.append(f'(set! u (Utterance Text "{t}")) (utt.synth u) (utt.save.wave u "{tmp}/{i}.wav")')
        done = subprocess.run(
            ["festival", "--pipe"], input="\n".join(lines), text=True, capture_output=True, timeout=3600
        )
        said = done.stdout + done.stderr
        if f"unbound variable : voice_{voice.name}" in said:  # festival would go on with its default voice,
            raise DataError(  # which would put another (maybe held-out) speaker in this split
                f"festival has no voice {voice.name} (is its festvox package installed? scripts/setup.sh "
                "installs them)"
            )
        out = []
        for i in range(len(texts)):
            path = Path(tmp) / f"{i}.wav"
            if not path.is_file():
                if "SIOD ERROR" not in said:
                    raise DataError(f"festival {voice.name} wrote no audio for {texts[i]!r}: {said[-200:]}")
                break
            a, sr = sf.read(path, dtype="float32")
            out.append((a if a.ndim == 1 else a.mean(-1), sr))
    return out


def recipe(size: CorpusSize, seed: int) -> dict:
    return {
        "recipe_version": RECIPE_VERSION,
        "espeak": espeak_version(),
        "espeak_bases": list(ESPEAK_BASES),
        "heldout_variants": list(HELDOUT_VARIANTS),
        "festival_voices": [asdict(v) for v in FESTIVAL_VOICES],
        "size": asdict(size),
        "seed": seed,
        "wordlist_sha256": hashlib.sha256(WORDLIST.read_bytes()).hexdigest() if WORDLIST.is_file() else None,
        "target_rms_db": TARGET_RMS_DB,
    }


def _build(
    size: CorpusSize, seed: int, sample_rate: int, log
) -> tuple[dict[str, tuple[list[np.ndarray], list[dict]]], list[dict]]:
    """The two splits, and the festival sentences a voice could not say (left out, listed)."""
    rng = np.random.default_rng(seed)
    words = english_words()
    variants = espeak_variants()
    missing = [v for v in HELDOUT_VARIANTS + EVAL_TRAIN_VARIANTS if v not in variants]
    if missing:
        raise DataError(f"espeak-ng lacks the voice variants {missing}")
    train_variants = [v for v in variants if v not in HELDOUT_VARIANTS]
    check_bases_take_variants(train_variants[:2], ESPEAK_BASES)
    splits: dict[str, tuple[list[np.ndarray], list[dict]]] = {"train": ([], []), "heldout": ([], [])}
    skipped: list[dict] = []

    def add(split: str, audio: np.ndarray, sr: int, item: dict) -> None:
        a = normalise_level(resample(audio, sr, sample_rate))
        if a is not None:
            splits[split][0].append(a)
            splits[split][1].append(item)

    jobs = [("train", rng.choice(ESPEAK_BASES), rng.choice(train_variants)) for _ in range(size.espeak_train)]
    jobs += [
        ("heldout", rng.choice(ESPEAK_BASES), v)
        for v in HELDOUT_VARIANTS
        for _ in range(size.espeak_heldout_per_variant)
    ]
    for k, (split, base, variant) in enumerate(jobs):
        pitch, rate = int(rng.integers(20, 81)), int(rng.integers(130, 211))
        text = sentence(rng, "latin", words)
        voice = f"{base}+{variant}"
        audio, sr = _espeak(voice, pitch, rate, text)
        add(split, audio, sr, {"engine": "espeak", "voice": voice, "speaker": variant, "pitch": pitch,
                               "rate": rate, "text": text})  # fmt: skip
        if log and k % 500 == 0:
            log(f"[codec corpus] espeak {k}/{len(jobs)}")
    for v in FESTIVAL_VOICES:
        n = size.festival_heldout_per_voice if v.heldout else size.festival_train_per_voice
        texts = [sentence(rng, v.script, words) for _ in range(n)]
        stretches = [float(rng.uniform(0.85, 1.2)) for _ in range(n)]
        said = festival_batch(v, texts, stretches)
        for text, s, got in zip(texts, stretches, said):
            if got is None:
                skipped.append({"voice": v.name, "text": text})
                continue
            audio, sr = got
            add("heldout" if v.heldout else "train", audio, sr,
                {"engine": "festival", "voice": v.name, "speaker": v.name, "language": v.language,
                 "stretch": round(s, 3), "text": text})  # fmt: skip
        if log:
            log(f"[codec corpus] festival {v.name}: {n - said.count(None)} of {n} sentences")
    return splits, skipped


def write_split(folder: Path, name: str, audios: list[np.ndarray], items: list[dict]) -> None:
    """One split as ``name``.audio.npy (int16, concatenated), ``name``.offsets.npy and ``name``.items.json;
    each array replaced atomically."""
    offsets = np.cumsum([0] + [len(a) for a in audios]).astype(np.int64)
    pcm = np.clip(np.concatenate(audios) * 32767.0, -32767, 32767).astype(np.int16)
    for suffix, arr in (("audio", pcm), ("offsets", offsets)):
        tmp = folder / f"{name}.{suffix}.tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, folder / f"{name}.{suffix}.npy")
    (folder / f"{name}.items.json").write_text(json.dumps(items))


def read_split(folder: Path, name: str, sample_rate: int, digest: str) -> CodecCorpus:
    """A split that ``write_split`` wrote; its sha256 covers the recipe's digest and the audio."""
    audio = np.load(folder / f"{name}.audio.npy", mmap_mode="r")
    offsets = np.load(folder / f"{name}.offsets.npy")
    items = json.loads((folder / f"{name}.items.json").read_text())
    h = hashlib.sha256(digest.encode())
    h.update(np.ascontiguousarray(audio).tobytes())
    return CodecCorpus(np.asarray(audio), offsets, items, sample_rate, h.hexdigest())


def _corpus_root() -> Path:
    return cache_home() / "codec_corpus"


def codec_corpus(
    split: str,
    *,
    size: CorpusSize = CorpusSize(),
    seed: int = 0,
    sample_rate: int = 24000,
    cache_dir: str | Path | None = None,
    log=print,
) -> CodecCorpus:
    """The ``train`` or ``heldout`` split (built once per recipe, then read from the cache)."""
    if split not in ("train", "heldout"):
        raise DataError(f"unknown codec corpus split {split!r} (expected 'train' or 'heldout')")
    rec = recipe(size, seed)
    rec["sample_rate"] = sample_rate
    digest = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]
    folder = (Path(cache_dir) if cache_dir else _corpus_root()) / digest
    done = folder / "done.json"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        splits, skipped = _build(size, seed, sample_rate, log)
        for name, (audios, items) in splits.items():
            write_split(folder, name, audios, items)
        (folder / "recipe.json").write_text(json.dumps(rec, indent=1))
        done.write_text(json.dumps({"digest": digest, "festival_sentences_not_said": skipped}))
    return read_split(folder, split, sample_rate, digest)


def summary(corpus: CodecCorpus) -> dict:
    """Counts per engine and voice (for the training sidecar)."""
    by_engine: dict[str, dict[str, int]] = {}
    for it in corpus.items:
        by_engine.setdefault(it["engine"], {}).setdefault(it["speaker"], 0)
        by_engine[it["engine"]][it["speaker"]] += 1
    return {
        "utterances": len(corpus),
        "hours": round(corpus.hours, 3),
        "voices": {e: len(v) for e, v in by_engine.items()},
        "per_voice": by_engine,
        "sha256": corpus.sha256,
    }


HELDOUT_ENGINES = ("espeak", "festival")


def heldout_utterances(engine: str, *, sample_rate: int = 24000, quick: bool = False) -> list:
    """The held-out voices of one engine as ``corpus.Utterance``s (for the quality suites).

    Transcripts are kept for English voices only: the bundled ASR is English (tiny.en), so a WER on
    Czech or Telugu speech would measure the ASR, not the codec; those utterances get ``text=None`` and
    WER skips them (and says so)."""
    from .corpus import Utterance

    if engine not in HELDOUT_ENGINES:
        raise DataError(f"unknown held-out engine {engine!r} (known: {', '.join(HELDOUT_ENGINES)})")
    held = codec_corpus("heldout", sample_rate=sample_rate, log=None)
    out = []
    per_speaker: dict[str, int] = {}
    for i, it in enumerate(held.items):
        if it["engine"] != engine:
            continue
        if quick and per_speaker.get(it["speaker"], 0) >= 1:
            continue
        per_speaker[it["speaker"]] = per_speaker.get(it["speaker"], 0) + 1
        english = it["engine"] == "espeak" or it.get("language") == "en"
        text = it["text"] if english else None
        out.append(Utterance(f"{engine}_{i:04d}", it["speaker"], text, held.utterance(i), sample_rate))
    return out
