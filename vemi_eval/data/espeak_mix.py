"""New espeak-ng speakers for training: crossovers of the installed variants' voice files.

An espeak-ng variant (``voices/!v/<id>``) is a list of settings: formant frequency/height/width scales,
pitch range, echo, tone, flutter, roughness, breath, a klatt synthesiser... A crossover of two parents
takes each setting from one of them at random (the voice source's settings together) and jitters the
formants' frequency and height scales: a speaker neither parent is. The files are written into private
copies of espeak-ng's data folder (every other entry a link to the installed one) that ``espeak-ng
--path`` points at, so the system's data is never touched. Only the variants a caller passes are
parents: the held-out ones never are.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import DataError
from .seeds import seed_of

PREFIX = "mix"  # a crossover's id: "mix0042"; espeak's own variant ids never start so
_SKIPPED = {"language", "name"}  # identity lines; a crossover names itself
PER_FOLDER = 128
# The voice source's settings, inherited together from one parent: apart, a parent's "voicing 0" (a
# whisper made by its klatt source's "breath 100") says nothing at all.
SOURCE_KEYS = ("klatt", "voicing", "breath", "breathw")


@dataclass(frozen=True)
class MixedVariant:
    id: str
    parents: tuple[str, str]
    settings: tuple[str, ...]  # the voice file's lines after its header

    def text(self) -> str:
        return "\n".join(["language variant", f"name {self.id}", *self.settings]) + "\n"


def is_mixed(variant: str) -> bool:
    return re.fullmatch(rf"{PREFIX}\d+", variant) is not None


def installed_data_dir() -> Path:
    """espeak-ng's data folder, as the installed binary reports it ("Data at: ...")."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("espeak-ng is not installed (needed for the dialogue corpus; apt install espeak-ng)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Data at:\s*(\S+)", out)
    if m is None or not Path(m.group(1)).is_dir():
        raise DataError(f"espeak-ng did not report a data folder: {out.strip()[:200]}")
    return Path(m.group(1))


def read_settings(path: Path) -> dict[str, str]:
    """A voice file's settings by key ("formant 3" for a formant line, else the line's first word)."""
    out: dict[str, str] = {}
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split("//")[0].split("#")[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] in _SKIPPED:
            continue
        key = f"formant {words[1]}" if words[0] == "formant" and len(words) > 1 else words[0]
        out[key] = " ".join(words)
    return out


def _jitter_formant(line: str, rng: np.random.Generator, jitter: float) -> str:
    # "formant N freq height width [freqadd]": frequency and height are percent scales (0 = off)
    words = line.split()
    for i in (2, 3):
        if i < len(words) and re.fullmatch(r"-?\d+", words[i]) and int(words[i]) != 0:
            words[i] = str(max(1, int(round(int(words[i]) * rng.uniform(1 - jitter, 1 + jitter)))))
    return " ".join(words)


def crossovers(parents: dict[str, dict[str, str]], count: int, jitter: float) -> list[MixedVariant]:
    """``count`` crossovers of two distinct ``parents`` each (id -> settings); each from its own seed."""
    names = sorted(parents)
    if len(names) < 2:
        raise DataError("a crossover needs at least two parent variants")
    out = []
    for k in range(count):
        rng = np.random.default_rng(seed_of("espeak-mix", k, jitter))
        a, b = (names[int(i)] for i in rng.choice(len(names), size=2, replace=False))
        lines = []
        source = parents[a] if rng.random() < 0.5 else parents[b]
        for key in sorted(set(parents[a]) | set(parents[b])):
            if key in SOURCE_KEYS:
                line = source.get(key)
            else:
                line = (parents[a] if rng.random() < 0.5 else parents[b]).get(key)
            if line is not None:
                lines.append(_jitter_formant(line, rng, jitter) if key.startswith("formant ") else line)
        out.append(MixedVariant(f"{PREFIX}{k:04d}", (a, b), tuple(lines)))
    return out


def mixed_variants(train_variants: list[str], count: int, jitter: float) -> list[MixedVariant]:
    """The crossovers of the installed training variants (their voice files read from espeak-ng)."""
    folder = installed_data_dir() / "voices" / "!v"
    parents = {v: read_settings(folder / v) for v in train_variants if (folder / v).is_file()}
    return crossovers(parents, count, jitter)


def _subfolder(variant: str) -> str:
    return f"{int(variant[len(PREFIX) :]) // PER_FOLDER:03d}"


def espeak_path(folder: Path, variant: str) -> Path:
    """The ``espeak-ng --path`` folder that holds crossover ``variant`` (built by ``data_dir``)."""
    return folder / "espeak_mixed" / _subfolder(variant)


def data_dir(folder: Path, variants: list[MixedVariant]) -> Path:
    """Private espeak-ng data folders holding ``variants`` (for ``espeak-ng --path``), built once under
    ``folder``: links to every installed entry, with ``voices/!v`` holding ``PER_FOLDER`` crossovers (espeak
    lists at most 349 voices, and a variant that falls off its list is replaced, silently, by the plain
    base voice: so the folders leave out the mbrola voices and each is checked to speak its variants)."""
    root = folder / "espeak_mixed"
    digest = hashlib.sha256("".join(v.text() for v in variants).encode()).hexdigest()
    if root.exists():
        built = (root / "crossovers.sha256").read_text().strip()
        if built != digest:  # the word clips cached beside it were said by other voices
            raise DataError(f"{root} holds other crossover voices than this code makes; delete {folder}")
        return root
    installed = installed_data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix="espeak_mixed."))
    for v in variants:
        data = tmp / _subfolder(v.id) / "espeak-ng-data"
        if not data.exists():
            (data / "voices" / "!v").mkdir(parents=True)
            for entry in installed.iterdir():
                if entry.name != "voices":
                    os.symlink(entry, data / entry.name)
        (data / "voices" / "!v" / v.id).write_text(v.text())
    for sub in sorted(p for p in tmp.iterdir() if p.is_dir()):
        _check_speaks_its_variants(sub)
    (tmp / "crossovers.sha256").write_text(digest + "\n")
    try:
        os.rename(tmp, root)  # atomic; another process may have built it first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def say(voice: str, pitch: int, rate: int, word: str, path: Path | None = None) -> tuple[np.ndarray, int]:
    """espeak-ng says ``word`` (``path``: an ``--path`` data folder); (audio, sample rate). An error when
    espeak's voice list overflowed: it then speaks the plain base voice for the variants it dropped."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "w.wav")
        cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "-w", wav]
        if path is not None:
            cmd.append(f"--path={path}")
        done = subprocess.run([*cmd, word], capture_output=True, text=True)
        if done.returncode != 0 or "maximum number" in done.stderr:
            raise DataError(f"espeak-ng -v {voice} failed on {word!r}: {done.stderr.strip()[:200]}")
        audio, sr = sf.read(wav, dtype="float32")
    return audio, sr


def _check_speaks_its_variants(path: Path) -> None:
    """espeak-ng under ``--path=path`` says a word in its last variant unlike in the plain base voice, and
    every variant says a vowel-only word aloud (a crossover can be mute)."""
    names = sorted(p.name for p in (path / "espeak-ng-data" / "voices" / "!v").iterdir())

    def said(voice: str) -> np.ndarray:
        audio = say(voice, 50, 175, "one", path)[0]  # espeak's default pitch and rate
        if float(np.abs(audio).max(initial=0.0)) < 1e-3:
            raise DataError(f"crossover voice {voice} (under {path}) is mute")
        return audio

    if np.array_equal(said(f"en-us+{names[-1]}"), said("en-us")):
        raise DataError(f"espeak-ng speaks crossover {names[-1]} as its plain base voice (under {path})")
    for name in names[:-1]:
        said(f"en-us+{name}")
