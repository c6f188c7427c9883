"""The dialogue corpus's recipe constants and value types: its numbers and prompts, the splits' settings,
a user's voice and its perturbation, a turn's words, and the text stream's vocabulary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import resample

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
VOCAB_PATH = Path(__file__).parent.with_name("dialogue_vocab.json")
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
    # train_aug with the festival users spread in pitch: the corpus's one festival training user is
    # kal_diphone (male, ~105 Hz), its held-out one slt (a female HTS voice), and the bundled pair hears 18
    # of slt's 96 answers. A diphone voice follows a target F0 (festival.takes_f0), so here kal speaks in
    # ``festival_pitch.styles`` styles, each at a mean F0 drawn in ``f0_hz`` (male to female), and
    # festival users take half of the sessions; train_aug's speed perturbation moves its formants too.
    # kal stays intelligible across the range: ASR WER 0.019 at its own F0, 0.113 / 0.000 / 0.104 / 0.028
    # / 0.009 at 90 / 130 / 170 / 210 / 245 Hz (scripts/festival_intelligibility.py's utterances and
    # scoring, session 19).
    "train_aug_f0": {
        **_TRAIN,
        "augment": _VOICE_PERTURBATION,
        "festival_share": 0.5,
        "festival_pitch": {"styles": 48, "f0_hz": (85.0, 250.0)},
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
    pitch: int  # espeak's pitch; festival: the target mean F0 in Hz (0: the voice's own)
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
