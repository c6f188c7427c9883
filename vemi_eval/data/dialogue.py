"""A synthetic full-duplex conversation corpus for the tiny LM: "what comes after seven" -> "eight".

Every session is two 24 kHz channels. The *user* (one voice per session: an espeak-ng voice variant with its
own pitch and rate, or one of festival's recorded voices at its own rate; optional noise) asks several times
what number comes after one of one..nineteen; the *model* (always the same voice: festival's ked_diphone, a
recorded human diphone voice) answers with the next number on the first frame boundary at least
``ANSWER_GAP_S`` after the user's last word ends (so the gap is 0.32-0.40 s), and is silent otherwise. Some
user turns have a pause *before* the number ("what comes after ... seven"), so a model that answers at the
first silence has not heard the number yet.

Users come from two speech engines, so that held-out accuracy is not only that of espeak-ng at other
settings: espeak-ng's voice variants and festival's recorded voices (the festvox voices that say the
English prompt words intelligibly, measured once by ASR: ``festival_intelligibility.json``, written by
scripts/festival_intelligibility.py; ked_diphone, the model's voice, is never a user). A session's engine
is chosen first, by a fixed quota (``festival_share`` of a split's sessions), then its voice among that
engine's, so the few festival voices are not drowned by the ~600 espeak styles.

Words are synthesised one at a time (trimmed of the synthesiser's silences), so every word's onset and end
are known to the sample. The model's text stream (its "inner monologue", as Moshi's) holds the answer's
token at the frame where the answer word starts, the end-of-padding token the frame before it, and the
padding token elsewhere. The word-level vocabulary is data: ``dialogue_vocab.json``.

Held out: whole user voices of each engine (never in training, with their own styles; festival's are voices
the codec corpus never trains on, so a held-out user is unseen by codec and LM alike) and carrier phrasings
never in training ("so which number comes after N"). The session plan is drawn from seeded generators; word
clips are cached under ``$VEMI_CACHE/dialogue/<recipe hash>/words`` and sessions are rendered from them on
demand. Token grids (text, model audio, user audio; the trainer's data format) are cached by (recipe hash,
codec checkpoint sha256) in ``.../tokens-<codec sha>/<split>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..storage import cache_home, file_sha256
from . import DataError, espeak_mix, festival
from .audio import dither, resample
from .seeds import seed_of

# 2: per-split styles; the plan's seeds come from split_hash. 3: the British base voice is espeak's "en":
# with "en-gb" espeak-ng 1.51 drops the variant ("en-gb+m3" says exactly what "en-gb" says), so in v2 every
# en-gb style, held-out ones included, was the one plain en-gb speaker at another pitch and rate.
# 4: users from two engines: festival's recorded voices beside the espeak-ng variants (a share of each
# split's sessions; festival_share). Held-out espeak variants were the training engine at other settings,
# so the held-out accuracy (0.80) overstated how well the LM listens (issue 36: 6 of 24 answers right for
# another engine's users).
RECIPE_VERSION = 4
SAMPLE_RATE = 24000
FRAME_RATE = 12.5
FRAME_SIZE = 1920  # samples per codec frame at 24 kHz
ANSWER_GAP_S = 0.32  # the model's answer starts on the first frame boundary this long after the user ends
TARGET_RMS_DB = -22.0  # every word clip's RMS before the session's gain
MODEL_VOICE = "ked_diphone"  # festival voice (festvox-kdlpc16k)
VOCAB_PATH = Path(__file__).with_name("dialogue_vocab.json")
ESPEAK, FESTIVAL = "espeak", "festival"  # the engines users come from

NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
ASKED = tuple(range(1, 20))  # the user asks about one..nineteen; the answer is two..twenty

# "{n}" is the number. Held-out phrasings are never heard in training (two bring words of their own).
TRAIN_PROMPTS = (
    "what comes after {n}",
    "what number comes after {n}",
    "tell me what comes after {n}",
    "please tell me the number after {n}",
    "the number after {n}",
    "okay what comes after {n}",
)
HELDOUT_PROMPTS = (
    "so which number comes after {n}",
    "now say what comes after {n}",
    "can you tell me what comes after {n}",
)

# espeak-ng voice variants (``en-us+<id>``); a few that are not speech-like are left out.
_EXCLUDED_VARIANTS = {
    "fast_test",
    "demonic",
    "half-lifeannouncementsystem",
    "whisper",
    "female_whisper",
    "croak",
}
HELDOUT_EVERY = 5  # every 5th variant (sorted by id) is a held-out voice
# (base voice, pitch, rate) styles drawn per voice from its own seed. Training has 8 per voice: with 3
# (237 styles) the LM still memorised its speakers (train text loss 0.001 against 0.074 held-out).
STYLES_PER_VOICE = {"train": 8, "heldout": 3}
BASE_VOICES = ("en-us", "en")  # an accent per style (American, British); the variant sets the speaker
# A festival style is a rate: its Duration_Stretch (> 1 slower), drawn per style. Pitch is not set: festival's
# voice types (diphone, clunits, HTS) take it in different ways. The codec corpus draws the same range.
FESTIVAL_STRETCH = (0.85, 1.2)

# The training splits' shape; the augmented splits differ only in their user-voice perturbation.
# festival_share: the share of a split's sessions whose user is a festival voice (the engine is chosen
# first, by a fixed quota: session i is festival's when floor((i + 1) x share) > floor(i x share)).
_TRAIN = {
    "sessions": 3200,
    "turns": (3, 5),
    "pause_p": 0.4,
    "noise_p": 0.5,
    "snr_db": (10.0, 40.0),
    "festival_share": 0.3,
}
_VOICE_PERTURBATION = {"p": 0.8, "speed": (0.85, 1.18), "tilt": (-0.6, 0.6)}

SPLITS: dict[str, dict[str, Any]] = {
    "train": _TRAIN,
    # The training voices and prompts, with the user's voice perturbed per session (see ``Augment``):
    # timbres between and beyond the training styles, for held-out speakers the LM fails on. Its own
    # split, so the plain training split and the held-out split keep their plans (split_hash).
    "train_aug": {**_TRAIN, "augment": _VOICE_PERTURBATION},
    # train_aug's perturbations plus, in half of the perturbed sessions, an echo (a room's first
    # reflections): several espeak variants carry one (``echo`` in their voice files) at gains the
    # training variants rarely reach. An experiment arm beside train_aug, from other seeds.
    "train_aug_echo": {
        **_TRAIN,
        "augment": {
            **_VOICE_PERTURBATION,
            "echo_p": 0.5,
            "echo_delay_s": (0.02, 0.16),
            "echo_gain": (0.2, 0.7),
        },
    },
    # train_aug with more speakers: beside the training voices, ``mixed_voices.count`` new espeak variants,
    # each a crossover of two training variants' voice files (every setting from one of the two, the
    # formants' frequencies and heights jittered by up to ``jitter``). Only training variants are
    # parents, so no held-out voice file is read. See ``MixedVariant``.
    "train_aug_mix": {
        **_TRAIN,
        "augment": _VOICE_PERTURBATION,
        "mixed_voices": {"count": 1024, "jitter": 0.1},
    },
    # Held-out voices AND held-out prompts; every other turn has a mid-turn pause; clean (noise is
    # added by the measurements, along their SNR ladder). Every other session is a festival user's, so
    # each engine's held-out figure rests on about as many turns as the other's.
    "heldout": {
        "sessions": 48,
        "turns": (4, 4),
        "pause_p": 0.5,
        "noise_p": 0.0,
        "snr_db": (0.0, 0.0),
        "festival_share": 0.5,
    },
}
WORD_GAP_S = (0.02, 0.09)
PAUSE_S = (0.5, 1.2)
LEAD_SILENCE_S = (0.3, 0.8)
AFTER_ANSWER_S = (0.6, 1.4)
TAIL_SILENCE_S = 0.6
GAIN_DB = (-6.0, 3.0)


@dataclass(frozen=True)
class UserVoice:
    id: str  # "<variant>-<style>"
    variant: str  # the speaker: an espeak-ng variant id, or a festival voice name
    base: str  # espeak: the base voice (the accent); festival: "festival" (no accent of its own)
    pitch: int  # espeak's pitch (0 for festival)
    rate: int  # espeak's words per minute (0 for festival)
    engine: str = ESPEAK
    stretch: float = 1.0  # festival's Duration_Stretch (1 for espeak)

    @property
    def espeak_voice(self) -> str:
        return f"{self.base}+{self.variant}"


@dataclass(frozen=True)
class Augment:
    """A perturbation of the user's voice in one session. ``speed``: every word is resampled as if played
    that much faster (pitch, formants and tempo together: Kaldi's speed perturbation, Ko et al. 2015; the
    word timings of the plan are those of the resampled words). ``tilt``: a first-order spectral tilt
    y[n] = x[n] - tilt * x[n-1] (> 0 brighter, < 0 duller), at the same RMS."""

    speed: float = 1.0
    tilt: float = 0.0
    echo_delay_s: float = 0.0  # an echo: ECHO_TAPS copies, each echo_delay_s later and echo_gain quieter
    echo_gain: float = 0.0

    @property
    def identity(self) -> bool:
        return self.speed == 1.0 and self.tilt == 0.0 and not self.has_echo

    @property
    def has_echo(self) -> bool:
        return self.echo_gain > 0.0 and self.echo_delay_s > 0.0

    def word(self, clip: np.ndarray) -> np.ndarray:
        if self.speed == 1.0:
            return clip
        # the clip "recorded at" speed x 24 kHz, brought back to 24 kHz: 1/speed as long, speed x higher
        return resample(clip, int(round(self.speed * 100)) * SAMPLE_RATE // 100, SAMPLE_RATE)

    def channel(self, audio: np.ndarray) -> np.ndarray:
        if self.tilt == 0.0 and not self.has_echo:
            return audio
        from scipy.signal import lfilter

        out = audio.astype(np.float64)
        if self.tilt != 0.0:
            out = lfilter([1.0, -self.tilt], [1.0], out)
        if self.has_echo:
            # feed-forward taps (a feedback comb at a 4k-sample delay would be an O(N x delay) lfilter)
            delay, direct = int(round(self.echo_delay_s * SAMPLE_RATE)), out
            out = direct.copy()
            for k in range(1, ECHO_TAPS + 1):
                out[k * delay :] += self.echo_gain**k * direct[: direct.size - k * delay]
        rms_in, rms_out = float(np.sqrt(np.mean(audio**2))), float(np.sqrt(np.mean(out**2)))
        return (out * (rms_in / max(rms_out, 1e-12))).astype(np.float32)


NO_AUGMENT = Augment()
ECHO_TAPS = 3


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # sample index at 24 kHz
    end: int


@dataclass(frozen=True)
class Turn:
    prompt: str  # the carrier phrasing, "{n}" for the number
    number: int
    words: tuple[Word, ...]  # the user's words
    pause: tuple[int, int] | None  # the mid-turn pause (start, end) in samples, before the number
    answer: Word  # the model's word

    @property
    def user_end(self) -> int:
        return self.words[-1].end

    @property
    def expected(self) -> str:
        return NUMBERS[self.number + 1]


@dataclass
class Session:
    id: str
    split: str
    voice: UserVoice
    turns: tuple[Turn, ...]
    n_samples: int
    gain_db: float
    noise: tuple[str, float] | None  # (kind, SNR dB) on the user channel
    seed: int
    folder: Path
    augment: Augment = NO_AUGMENT

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE

    def user_audio(self, with_noise: bool = True) -> np.ndarray:
        out = np.zeros(self.n_samples, np.float32)
        for turn in self.turns:
            for w in turn.words:
                out[w.start : w.end] += self.augment.word(_user_clip(self.folder, self.voice, w.text))
        out = self.augment.channel(out) * 10 ** (self.gain_db / 20)
        if with_noise and self.noise is not None:
            from .noise import make_noise, mix_at_snr

            kind, snr = self.noise
            out = mix_at_snr(out, make_noise(kind, out.size, SAMPLE_RATE, self.seed), snr, SAMPLE_RATE)
        return dither(out, self.seed)

    def model_audio(self) -> np.ndarray:
        out = np.zeros(self.n_samples, np.float32)
        for turn in self.turns:
            w = turn.answer
            out[w.start : w.end] += _model_clip(self.folder, w.text)
        return dither(out, self.seed + 1)

    def text_tokens(self, frame_size: int = 1920) -> np.ndarray:
        """The model's text stream [frames]: a word's token at its onset frame, EPAD before, PAD elsewhere."""
        return align_text([t.answer for t in self.turns], n_frames(self.n_samples, frame_size), frame_size)


def n_frames(n_samples: int, frame_size: int = 1920) -> int:
    return -(-n_samples // frame_size)


# --- vocabulary ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]
    pad_id: int
    epad_id: int
    text_card: int

    def id(self, word: str) -> int:
        return self.tokens.index(word)

    def word(self, token: int) -> str | None:
        """The word of a token, None for padding, special and unknown ids."""
        if token in (self.pad_id, self.epad_id) or not 0 <= token < len(self.tokens):
            return None
        w = self.tokens[token]
        return None if w.startswith("<") else w


@lru_cache(maxsize=1)
def vocab() -> Vocab:
    raw = json.loads(VOCAB_PATH.read_text())
    return Vocab(tuple(raw["tokens"]), raw["pad_id"], raw["epad_id"], raw["text_card"])


def align_text(words: list[Word], frames: int, frame_size: int = 1920) -> np.ndarray:
    v = vocab()
    text = np.full(frames, v.pad_id, np.int64)
    for w in words:
        f = w.start // frame_size
        if f >= frames:
            continue
        text[f] = v.id(w.text)
        if f > 0 and text[f - 1] == v.pad_id:
            text[f - 1] = v.epad_id
    return text


# --- voices -------------------------------------------------------------------------------------------
def espeak_variants() -> list[str]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("espeak-ng is not installed (needed for the dialogue corpus; apt install espeak-ng)")
    out = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    ids = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("!v/"):
            ids.append(parts[4][3:])
    return sorted({i for i in ids if i.lower() not in _EXCLUDED_VARIANTS}, key=str.lower)


def _voice_split(split: str) -> str:
    """The split whose voices and prompts a split uses (``train_aug``: the training ones)."""
    return "heldout" if split == "heldout" else "train"


def _heldout_variants(variants: list[str]) -> set[str]:
    return set(variants[HELDOUT_EVERY - 1 :: HELDOUT_EVERY])


@dataclass(frozen=True)
class FestivalUser:
    """A festival voice that is a dialogue user (it says the English prompt words intelligibly)."""

    name: str
    language: str
    heldout: bool  # held out here as from the codec's training (vemi_eval/data/festival.py ``heldout``)


def festival_users(path: Path | None = None) -> tuple[tuple[FestivalUser, ...], str]:
    """The festival voices the intelligibility file says to use (never the model's), and the file's
    sha256. Held out are those the codec corpus never trains on, so a held-out user is new to codec and LM."""
    rows, sha = festival.intelligibility(path or festival.INTELLIGIBILITY_PATH)
    users = tuple(
        FestivalUser(r.name, r.language, festival.voice(r.name).heldout)
        for r in rows
        if r.decision == festival.USE and r.name != MODEL_VOICE
    )
    if not any(u.heldout for u in users) or all(u.heldout for u in users):
        named = ", ".join(u.name + (" (held out)" if u.heldout else "") for u in users) or "none"
        raise DataError(
            "the dialogue corpus needs festival users both in training and held out; the intelligibility "
            f"file accepts {named}"
        )
    return users, sha


def voices(
    split: str, variants: list[str] | None = None, users: tuple[FestivalUser, ...] | None = None
) -> list[UserVoice]:
    """The (speaker, style) voices of a split, of both engines; held-out speakers never appear in
    training. ``users``: the festival users (default: the intelligibility file's)."""
    variants = variants if variants is not None else espeak_variants()
    users = users if users is not None else festival_users()[0]
    held = _heldout_variants(variants)
    n = STYLES_PER_VOICE[_voice_split(split)]
    out = []
    for v in [v for v in variants if (v in held) == (split == "heldout")]:
        out += _espeak_styles(v, n)
    for u in users:
        if u.heldout == (split == "heldout"):
            rng = np.random.default_rng(seed_of("voice", FESTIVAL, u.name))
            for s in range(n):
                stretch = round(float(rng.uniform(*FESTIVAL_STRETCH)), 2)
                out.append(UserVoice(f"{u.name}-{s}", u.name, FESTIVAL, 0, 0, FESTIVAL, stretch))
    for m in mixed_variants(split, variants):
        out += _espeak_styles(m.id, 1)  # one style: the mix is the speaker
    return out


def _espeak_styles(variant: str, n: int) -> list[UserVoice]:
    """A variant's ``n`` (accent, pitch, rate) styles, drawn from its own seed."""
    rng = np.random.default_rng(seed_of("voice", variant))
    out = []
    for s in range(n):
        base = BASE_VOICES[int(rng.integers(len(BASE_VOICES)))]
        out.append(
            UserVoice(f"{variant}-{s}", variant, base, int(rng.integers(25, 76)), int(rng.integers(135, 196)))
        )
    return out


def session_engine(split: str, index: int) -> str:
    """The engine of a split's ``index``-th session: festival's for a fixed quota of ``festival_share``
    (exact in every prefix of the split, so even a few sessions hold both engines when the share allows)."""
    share = float(SPLITS[split].get("festival_share", 0.0))
    # rounded: 0.3 x 10 is 3.0000000000000004 in binary floating point
    before, upto = math.floor(round(index * share, 9)), math.floor(round((index + 1) * share, 9))
    return FESTIVAL if upto > before else ESPEAK


def user_words() -> list[str]:
    """Every word a user says: those of the prompts (training and held-out) and the numbers asked."""
    words = {w for p in TRAIN_PROMPTS + HELDOUT_PROMPTS for w in p.split() if w != "{n}"}
    return sorted(words | {NUMBERS[n] for n in ASKED})


def mixed_variants(split: str, variants: list[str] | None = None) -> list[espeak_mix.MixedVariant]:
    """A split's crossover speakers (``mixed_voices`` in its settings), bred from training variants only."""
    cfg = SPLITS[split].get("mixed_voices")
    if not cfg:
        return []
    variants = variants if variants is not None else espeak_variants()
    held = _heldout_variants(variants)
    return espeak_mix.mixed_variants([v for v in variants if v not in held], cfg["count"], cfg["jitter"])


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
    said = festival.say_many(voice.variant, words, voice.stretch)
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


# --- the session plan ---------------------------------------------------------------------------------
def _plan_session(
    split: str, index: int, pool: list[UserVoice], folder: Path, plan_key: str, gap_s: float = ANSWER_GAP_S
) -> Session:
    cfg = SPLITS[split]
    seed = seed_of(plan_key, split, index) % (2**31)
    rng = np.random.default_rng(seed)
    engine = session_engine(split, index)  # first: the engine, by its quota; then a voice of it
    candidates = [v for v in pool if v.engine == engine]
    if not candidates:
        raise DataError(f"the dialogue split {split} has no {engine} users")
    voice = candidates[int(rng.integers(len(candidates)))]
    prompts = TRAIN_PROMPTS if _voice_split(split) == "train" else HELDOUT_PROMPTS
    augment = _draw_augment(cfg.get("augment"), plan_key, split, index)
    lo, hi = cfg["turns"]
    n_turns = int(rng.integers(lo, hi + 1))

    def s(rng_range: tuple[float, float]) -> int:
        return int(round(rng.uniform(*rng_range) * SAMPLE_RATE))

    t = s(LEAD_SILENCE_S)
    turns = []
    for k in range(n_turns):
        number = int(ASKED[int(rng.integers(len(ASKED)))])
        prompt = prompts[int(rng.integers(len(prompts)))]
        has_pause = (k % 2 == index % 2) if split == "heldout" else bool(rng.random() < cfg["pause_p"])
        words: list[Word] = []
        pause = None
        for text in prompt.format(n=NUMBERS[number]).split():
            if text == NUMBERS[number] and has_pause:
                gap = s(PAUSE_S)
                pause = (t, t + gap)
                t += gap
            n = augment.word(_user_clip(folder, voice, text)).size
            words.append(Word(text, t, t + n))
            t += n + s(WORD_GAP_S)
        # The answer starts on the first frame boundary at least the gap after the user's end, as a
        # streaming model's output does (and the same word then always gives the same codes).
        start = -(-(words[-1].end + int(round(gap_s * SAMPLE_RATE))) // FRAME_SIZE) * FRAME_SIZE
        answer_text = NUMBERS[number + 1]
        answer = Word(answer_text, start, start + _model_clip(folder, answer_text).size)
        turns.append(Turn(prompt, number, tuple(words), pause, answer))
        t = answer.end + s(AFTER_ANSWER_S)
    n_samples = turns[-1].answer.end + int(TAIL_SILENCE_S * SAMPLE_RATE)
    noise = None
    if rng.random() < cfg["noise_p"]:
        noise = (("white", "pink")[int(rng.integers(2))], float(rng.uniform(*cfg["snr_db"])))
    gain = float(rng.uniform(*GAIN_DB))
    return Session(
        f"{split}-{index:05d}", split, voice, tuple(turns), n_samples, gain, noise, seed, folder, augment
    )


def _draw_augment(cfg: dict[str, Any] | None, plan_key: str, split: str, index: int) -> Augment:
    """A session's voice perturbation, from its own generator (the rest of the plan draws as without)."""
    if not cfg:
        return NO_AUGMENT
    rng = np.random.default_rng(seed_of(plan_key, split, index, "augment"))
    if rng.random() >= cfg["p"]:
        return NO_AUGMENT
    speed = round(float(rng.uniform(*cfg["speed"])), 2)  # to the percent: a short resampling filter
    tilt = round(float(rng.uniform(*cfg["tilt"])), 3)
    if "echo_p" not in cfg or rng.random() >= cfg["echo_p"]:  # drawn after: train_aug's plan is unchanged
        return Augment(speed, tilt)
    delay = round(float(rng.uniform(*cfg["echo_delay_s"])), 3)
    return Augment(speed, tilt, delay, round(float(rng.uniform(*cfg["echo_gain"])), 3))


def dialogue_sessions(
    split: str = "heldout",
    *,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    answer_gap_s: float | None = None,
    workers: int = 1,
) -> list[Session]:
    """The sessions of a split (the first ``limit`` of them); words are synthesised on first use (in
    ``workers`` processes when > 1: the plan is the same, each session being drawn from its own seed).

    ``answer_gap_s``: the model answers this long after the user ends (default ``ANSWER_GAP_S``). The
    plan is drawn from the same seeds whatever the gap (same voices, words, pauses, noise): only the
    answers and what follows them move, so sessions at several gaps differ in the gap alone."""
    if split not in SPLITS:
        raise DataError(f"unknown dialogue split {split!r} (expected one of {', '.join(SPLITS)})")
    gap = check_gap(answer_gap_s)
    folder = cache_folder(cache_dir)
    plan_key = split_hash(split, json.loads((folder / "recipe.json").read_text()))
    variants = espeak_variants()
    pool = voices(split, variants)
    # every festival voice this split needs is installed, before a word is said
    festival.check_voices(sorted({v.variant for v in pool if v.engine == FESTIVAL} | {MODEL_VOICE}))
    mixed = mixed_variants(split, variants)
    if mixed:
        espeak_mix.data_dir(folder, mixed)
    n = SPLITS[split]["sessions"] if limit is None else min(limit, SPLITS[split]["sessions"])
    jobs = [(split, i, pool, folder, plan_key, gap) for i in range(n)]
    if workers > 1 and n > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, n)) as procs:
            return procs.starmap(_plan_session, jobs, chunksize=16)
    return [_plan_session(*job) for job in jobs]


def check_gap(answer_gap_s: float | None) -> float:
    """The answer gap to use, to the millisecond (what its cache folder is named by; the corpus's default
    for None); a negative or absurd gap is an error."""
    if answer_gap_s is None:
        return ANSWER_GAP_S
    gap = round(float(answer_gap_s), 3)
    if not 0.0 <= gap <= 5.0:
        raise DataError(f"answer gap must be within 0..5 s, got {answer_gap_s}")
    return gap


def gap_suffix(answer_gap_s: float | None) -> str:
    """Cache-folder suffix of a non-default gap ("" for the default: the default corpus is unchanged)."""
    ms = int(round(check_gap(answer_gap_s) * 1000))
    return "" if ms == int(round(ANSWER_GAP_S * 1000)) else f"-gap{ms}ms"


def sessions_sha256(sessions: list[Session]) -> str:
    """Hash of the plan (ids, voices, word timings, noise) of the sessions used."""
    h = hashlib.sha256()
    for s in sessions:
        h.update(
            json.dumps(
                [
                    s.id,
                    s.voice.id,
                    s.n_samples,
                    s.gain_db,
                    s.noise,
                    # only when perturbed: unaugmented splits keep the hashes they had before it existed
                    *([] if s.augment.identity else [_augment_key(s.augment)]),
                    [
                        [
                            t.prompt,
                            t.number,
                            [(w.text, w.start, w.end) for w in t.words],
                            t.pause,
                            (t.answer.text, t.answer.start, t.answer.end),
                        ]
                        for t in s.turns
                    ],
                ]
            ).encode()
        )
    return h.hexdigest()


def _augment_key(a: Augment) -> list[float]:
    """What a perturbation adds to the plan hash (no echo: what train_aug's hash was before echoes)."""
    return [a.speed, a.tilt, *([a.echo_delay_s, a.echo_gain] if a.has_echo else [])]


def corpus_figures(sessions: list[Session]) -> dict[str, Any]:
    return {
        "sessions": len(sessions),
        "turns": sum(len(s.turns) for s in sessions),
        "hours": round(sum(s.duration_s for s in sessions) / 3600, 3),
        "voices": len({s.voice.variant for s in sessions}),
        "voice_styles": len({s.voice.id for s in sessions}),
        "sessions_by_engine": {e: sum(s.voice.engine == e for s in sessions) for e in (ESPEAK, FESTIVAL)},
        "turns_with_pause": sum(t.pause is not None for s in sessions for t in s.turns),
        "sha256": sessions_sha256(sessions),
    }


# --- tokenisation through a codec ---------------------------------------------------------------------
def codec_sha256(checkpoint: str | os.PathLike) -> str:
    return file_sha256(checkpoint)


def token_grid(session: Session, codec, codebooks: int = 8) -> np.ndarray:
    """[1 + 2 * codebooks, frames]: text, model audio codes, user audio codes (not delayed)."""
    import torch

    def encode(audio: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(audio).view(1, 1, -1))
        if codes.shape[1] < codebooks:
            raise DataError(f"the codec gives {codes.shape[1]} codebooks; {codebooks} are needed")
        return codes[0, :codebooks].numpy()

    model = encode(session.model_audio())
    user = encode(session.user_audio())
    text = session.text_tokens(codec.frame_size)[None]
    T = min(text.shape[1], model.shape[1], user.shape[1])
    return np.concatenate([text[:, :T], model[:, :T], user[:, :T]], axis=0).astype(np.int16)


def tokenised_split(
    split: str,
    codec_checkpoint: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    codebooks: int = 8,
    cache_dir: str | Path | None = None,
    shard_size: int = 64,
    answer_gap_s: float | None = None,
    workers: int = 1,
    log=print,
) -> Path:
    """Tokenise a split with the tiny codec (its bundled weights unless ``codec_checkpoint``); returns the
    folder of safetensors shards (one tensor per session) plus ``manifest.json``. Cached by
    (recipe hash, codec sha256, split, limit, answer gap); shards already written are kept, so an
    interrupted run continues. ``workers`` > 1 plans (synthesises) the sessions and tokenises the shards in
    that many processes (one torch thread each); the shards are the same bytes whatever the count."""
    import torch

    from reference_model import bundled_codec_weights, load_codec

    ckpt = Path(codec_checkpoint) if codec_checkpoint else bundled_codec_weights("tiny")
    if not ckpt.is_file():
        raise DataError(f"codec checkpoint not found: {ckpt}")
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    sha = codec_sha256(ckpt)
    name = (split if limit is None else f"{split}-{limit}") + gap_suffix(answer_gap_s)
    folder = cache_folder(cache_dir) / f"tokens-{sha[:16]}" / name
    manifest_path = folder / "manifest.json"
    # before planning: a cache hit starts no worker and reads no clip. A manifest from before the
    # per-session voices were recorded is rewritten (its shards are kept: they are the same bytes).
    if manifest_path.is_file() and {"groups", "engine_groups"} <= set(json.loads(manifest_path.read_text())):
        return folder
    sessions = dialogue_sessions(
        split, limit=limit, cache_dir=cache_dir, answer_gap_s=answer_gap_s, workers=workers
    )
    folder.mkdir(parents=True, exist_ok=True)
    todo = [
        (folder / f"shard_{start // shard_size:04d}.safetensors", sessions[start : start + shard_size])
        for start in range(0, len(sessions), shard_size)
    ]
    todo = [(shard, part) for shard, part in todo if not shard.exists()]
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        # spawn, not fork: a forked torch inherits the parent's thread pool state
        with mp.get_context("spawn").Pool(min(workers, len(todo))) as pool:
            for done, shard in enumerate(
                pool.imap_unordered(_tokenise_shard, [(str(ckpt), codebooks, sh, part) for sh, part in todo]),
                1,
            ):
                log(f"tokenised shard {done}/{len(todo)} of {split} ({Path(shard).name})")
    elif todo:
        codec = load_codec("tiny", ckpt)
        for shard, part in todo:
            _write_shard(shard, {s.id: torch.from_numpy(token_grid(s, codec, codebooks)) for s in part})
            log(f"tokenised {shard.name} of {split} ({len(todo)} shards to write)")
    manifest = {
        "format": "token grids [1 + 2 x codebooks, frames] int16: row 0 text, then model, then user codes",
        "corpus": "vemi_eval.data.dialogue",
        "recipe_hash": folder.parent.parent.name,
        "split": split,
        "codec_checkpoint": ckpt.name,
        "codec_sha256": sha,
        "codebooks": codebooks,
        "frame_rate": FRAME_RATE,
        "vocab": list(vocab().tokens),
        **({"answer_gap_s": check_gap(answer_gap_s)} if gap_suffix(answer_gap_s) else {}),
        **corpus_figures(sessions),
        # which user voice (and engine) each session has, so that the trainer reports held-out accuracy
        # per voice (and per engine)
        "groups": {"by": "user voice", "of": {s.id: s.voice.variant for s in sessions}},
        "engine_groups": {"by": "user engine", "of": {s.id: s.voice.engine for s in sessions}},
    }
    _atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())
    return folder


def _write_shard(shard: Path, grids: dict) -> None:
    from safetensors.torch import save_file

    tmp = shard.with_name(shard.name + ".tmp")
    save_file(grids, str(tmp))
    os.replace(tmp, shard)


def _tokenise_shard(job: tuple[str, int, Path, list[Session]]) -> str:
    """One shard in a worker process (module level, so that a spawned process can import it)."""
    import torch

    torch.set_num_threads(1)
    ckpt, codebooks, shard, part = job
    codec = _worker_codec(ckpt)
    _write_shard(shard, {s.id: torch.from_numpy(token_grid(s, codec, codebooks)) for s in part})
    return str(shard)


@lru_cache(maxsize=1)
def _worker_codec(ckpt: str):
    from reference_model import load_codec

    return load_codec("tiny", ckpt)
