"""The dialogue corpus's users: espeak-ng voice variants and styles, festival's recorded voices, which
are held out, and which engine a session's user comes from."""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import DataError, espeak_mix, festival
from ..seeds import seed_of
from .spec import (
    _EXCLUDED_VARIANTS,
    ASKED,
    BASE_VOICES,
    ESPEAK,
    FESTIVAL,
    FESTIVAL_STRETCH,
    HELDOUT_EVERY,
    HELDOUT_PROMPTS,
    MODEL_VOICE,
    NUMBERS,
    SPLITS,
    STYLES_PER_VOICE,
    TRAIN_PROMPTS,
    UserVoice,
)


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
    pitched = SPLITS[split].get("festival_pitch") if split in SPLITS else None
    for u in users:
        if u.heldout == (split == "heldout"):
            if pitched and festival.takes_f0(u.name):
                out += _festival_pitched_styles(u.name, int(pitched["styles"]), pitched["f0_hz"])
                continue
            rng = np.random.default_rng(seed_of("voice", FESTIVAL, u.name))
            for s in range(n):
                stretch = round(float(rng.uniform(*FESTIVAL_STRETCH)), 2)
                out.append(UserVoice(f"{u.name}-{s}", u.name, FESTIVAL, 0, 0, FESTIVAL, stretch))
    for m in mixed_variants(split, variants):
        out += _espeak_styles(m.id, 1)  # one style: the mix is the speaker
    return out


def _festival_pitched_styles(name: str, n: int, f0_hz: tuple[float, float]) -> list[UserVoice]:
    """A festival voice's ``n`` (rate, mean F0) styles, from a seed of their own; their ids ("-f0-") never
    name a plain style, so their word clips are cached apart."""
    rng = np.random.default_rng(seed_of("voice", FESTIVAL, name, "f0"))
    out = []
    for s in range(n):
        stretch = round(float(rng.uniform(*FESTIVAL_STRETCH)), 2)
        f0 = int(round(float(rng.uniform(*f0_hz))))
        out.append(UserVoice(f"{name}-f0-{s}", name, FESTIVAL, f0, 0, FESTIVAL, stretch))
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
