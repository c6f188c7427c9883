"""Festival's recorded voices (the festvox packages scripts/setup.sh installs) and speech from them.

The voices of both corpora that use them: the codec corpus (``FESTIVAL_VOICES``, its own held-out ones
``heldout``) and the dialogue corpus (its users: those of ``ALL_VOICES`` that say English intelligibly,
vemi_eval/data/festival_intelligibility.json). A voice festival lacks is an error naming the voice and
the Debian package that holds it: festival itself answers an unknown ``(voice_X)`` with a SIOD error
and goes on in its default voice, which would put another speaker under the missing one's name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import DataError


@dataclass(frozen=True)
class FestivalVoice:
    name: str  # festival voice_<name>
    language: str
    script: str  # latin | devanagari | telugu | cyrillic
    heldout: bool  # never in the codec corpus's training split (held out there, or not in it at all)


# The codec corpus's voices (codec_corpus.py). The list and its fields are part of that corpus's recipe
# hash: a voice or a field added here would move its cache and change its audio.
FESTIVAL_VOICES: tuple[FestivalVoice, ...] = (
    FestivalVoice("kal_diphone", "en", "latin", False),
    FestivalVoice("ked_diphone", "en", "latin", True),
    FestivalVoice("czech_dita", "cs", "latin", False),
    FestivalVoice("czech_krb", "cs", "latin", False),
    FestivalVoice("czech_machac", "cs", "latin", False),
    FestivalVoice("czech_ph", "cs", "latin", True),
    FestivalVoice("suo_fi_lj_diphone", "fi", "latin", False),
    FestivalVoice("hy_fi_mv_diphone", "fi", "latin", True),
    FestivalVoice("lp_diphone", "it", "latin", False),
    FestivalVoice("pc_diphone", "it", "latin", True),
    FestivalVoice("upc_ca_ona_hts", "ca", "latin", False),
    FestivalVoice("msu_ru_nsh_clunits", "ru", "cyrillic", False),
    FestivalVoice("hindi_NSK_diphone", "hi", "devanagari", False),
    FestivalVoice("marathi_NSK_diphone", "mr", "devanagari", True),
    FestivalVoice("telugu_NSK_diphone", "te", "telugu", False),
)
# Installed beside them, read by the dialogue corpus only: a second English speaker for its users (every
# non-English voice says the English prompts unintelligibly: festival_intelligibility.json). The codec
# corpus never trains on it, so as a held-out dialogue user it is new to codec and LM alike.
DIALOGUE_ONLY_VOICES: tuple[FestivalVoice, ...] = (
    FestivalVoice("cmu_us_slt_arctic_hts", "en", "latin", True),
)
ALL_VOICES = FESTIVAL_VOICES + DIALOGUE_ONLY_VOICES

# The Debian package of each voice (what `dpkg -S /usr/share/festival/voices/*/<name>` names).
DEBIAN_PACKAGES: dict[str, str] = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "czech_dita": "festvox-czech-dita",
    "czech_krb": "festvox-czech-krb",
    "czech_machac": "festvox-czech-machac",
    "czech_ph": "festvox-czech-ph",
    "suo_fi_lj_diphone": "festvox-suopuhe-lj",
    "hy_fi_mv_diphone": "festvox-suopuhe-mv",
    "lp_diphone": "festvox-italp16k",
    "pc_diphone": "festvox-itapc16k",
    "upc_ca_ona_hts": "festvox-ca-ona-hts",
    "msu_ru_nsh_clunits": "festvox-ru",
    "hindi_NSK_diphone": "festvox-hi-nsk",
    "marathi_NSK_diphone": "festvox-mr-nsk",
    "telugu_NSK_diphone": "festvox-te-nsk",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}


# Which voices say the dialogue corpus's English prompts intelligibly (scripts/festival_intelligibility.py)
INTELLIGIBILITY_PATH = Path(__file__).with_name("festival_intelligibility.json")
USE = "use"  # the decision that makes a voice a dialogue user


@dataclass(frozen=True)
class Intelligibility:
    """One voice's line of the intelligibility file."""

    name: str
    language: str
    wer: float
    words: int
    decision: str  # "use" | "leave out" | "model voice"


def intelligibility(path: Path = INTELLIGIBILITY_PATH) -> tuple[tuple[Intelligibility, ...], str]:
    """Every voice's measured intelligibility and decision, and the file's sha256 (read, never measured:
    the ASR runs once, in the script)."""
    if not path.is_file():
        raise DataError(f"{path} is missing (python scripts/festival_intelligibility.py writes it)")
    raw = path.read_bytes()
    try:
        rows = json.loads(raw)["voices"]
        out = tuple(
            Intelligibility(r["name"], r["language"], float(r["wer"]), int(r["words"]), r["decision"])
            for r in rows
        )
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not an intelligibility file ({type(e).__name__}: {e})") from None
    return out, hashlib.sha256(raw).hexdigest()


def voice(name: str) -> FestivalVoice:
    for v in ALL_VOICES:
        if v.name == name:
            return v
    raise DataError(f"unknown festival voice {name!r} (known: {', '.join(v.name for v in ALL_VOICES)})")


def missing_voice(name: str) -> DataError:
    package = DEBIAN_PACKAGES.get(name, "its festvox package")
    return DataError(
        f"festival has no voice {name} (apt install {package}; scripts/setup.sh installs the festvox voices)"
    )


def _festival() -> str:
    exe = shutil.which("festival")
    if exe is None:
        raise DataError("festival is not installed (apt install festival; scripts/setup.sh installs it)")
    return exe


def installed_voices() -> set[str]:
    """The voices festival knows (its ``voice.list``)."""
    done = subprocess.run(
        [_festival(), "--pipe"], input="(print (voice.list))\n", text=True, capture_output=True, timeout=120
    )
    text = done.stdout.strip()
    if done.returncode != 0 or not text.startswith("("):
        raise DataError(f"festival did not list its voices: {(done.stderr or text).strip()[:200]}")
    return set(text.strip("()").split())


def check_voices(names: Sequence[str]) -> None:
    """Every voice in ``names`` is installed (one festival start, before any word is said)."""
    have = installed_voices()
    for name in names:
        if name not in have:
            raise missing_voice(name)


def takes_f0(name: str) -> bool:
    """Whether a voice follows a target F0 (festival's ``int_lr_params``): its diphone voices do; an HTS or
    clunits voice makes its own F0 whatever the parameters say (checked: slt's F0 does not move)."""
    return name.endswith("_diphone")


def say_many(
    name: str, texts: Sequence[str], stretch: float = 1.0, f0_hz: float = 0.0
) -> list[tuple[np.ndarray, int]]:
    """Each of ``texts`` said by voice ``name`` with festival's Duration_Stretch ``stretch`` (> 1 slower),
    in one festival process (its start-up dominates a word); (mono audio, sample rate) per text.
    ``f0_hz`` > 0: the intonation's target mean F0 (its spread in proportion, as kal's own: 14 Hz at 105);
    only a voice that ``takes_f0`` accepts one (elsewhere it would change nothing: a DataError)."""
    import soundfile as sf

    if not texts:
        return []
    if f0_hz < 0:
        raise DataError(f"festival target F0 must be > 0 Hz (0: the voice's own), got {f0_hz}")
    if f0_hz and not takes_f0(name):
        raise DataError(f"festival voice {name} takes no target F0 (only diphone voices follow one)")
    with tempfile.TemporaryDirectory() as tmp:
        lines = [f"(voice_{name})", f"(Parameter.set 'Duration_Stretch {stretch:.3f})"]
        if f0_hz:
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {f0_hz:.1f}) (target_f0_std {0.133 * f0_hz:.1f}) "
                "(model_f0_mean 170) (model_f0_std 34)))"
            )
        for i, t in enumerate(texts):
            t = t.replace("\\", " ").replace('"', " ")
            lines.append(f'(set! u (Utterance Text "{t}")) (utt.synth u) (utt.save.wave u "{tmp}/{i}.wav")')
        done = subprocess.run(
            [_festival(), "--pipe"],
            input="\n".join(lines) + "\n",
            text=True,
            capture_output=True,
            timeout=600,
        )
        said = done.stdout + done.stderr
        if f"unbound variable : voice_{name}" in said:
            raise missing_voice(name)
        out = []
        for i, t in enumerate(texts):
            path = Path(tmp) / f"{i}.wav"
            if not path.is_file():
                reason = said.strip().splitlines()[-1][:160] if said.strip() else f"exit {done.returncode}"
                raise DataError(f"festival {name} wrote no audio for {t!r} ({reason})")
            audio, rate = sf.read(path, dtype="float32")
            out.append((audio if audio.ndim == 1 else audio.mean(-1), int(rate)))
    return out


def text2wave(text: str, name: str) -> tuple[np.ndarray, int]:
    """``text`` said by voice ``name`` through festival's text2wave (the dialogue model's voice)."""
    import soundfile as sf

    if shutil.which("text2wave") is None:
        raise DataError("festival's text2wave is not installed (apt install festival)")
    with tempfile.TemporaryDirectory() as tmp:
        txt, wav = os.path.join(tmp, "w.txt"), os.path.join(tmp, "w.wav")
        Path(txt).write_text(text + "\n")
        done = subprocess.run(
            ["text2wave", "-eval", f"(voice_{name})", "-o", wav, txt], capture_output=True, text=True
        )
        if f"unbound variable : voice_{name}" in done.stderr:
            raise missing_voice(name)
        if done.returncode != 0 or not os.path.exists(wav):
            raise DataError(f"festival voice {name} failed: {done.stderr.strip()[:200]}")
        audio, rate = sf.read(wav, dtype="float32")
    return audio, rate
