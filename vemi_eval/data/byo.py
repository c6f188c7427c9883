"""Bring your own data: a folder of audio files or a manifest, checked file by file.

Accepted layouts:
- a folder (searched recursively) of ``.wav``/``.flac``/``.ogg`` files, each with an optional transcript
  ``<same name>.txt`` beside it; the speaker is the first sub-folder under the root (files at the root
  have no speaker label, so speaker-verification metrics skip them);
- a manifest ``.csv`` (header ``path,text,speaker``; text and speaker optional) or ``.jsonl`` (one object
  per line with those keys); relative paths are relative to the manifest. A folder holding
  ``manifest.csv`` or ``manifest.jsonl`` is read through that manifest.

Any rate and channel count is accepted (downmixed, resampled with a polyphase filter). A file that is
corrupt, empty, silent, non-finite, clipped or not audio is reported BY NAME with the reason and skipped;
it is never scored. If nothing usable remains, ``DataError`` (one line) is raised.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import DataError
from .audio import AUDIO_SUFFIXES, AudioError, load_audio
from .corpus import Utterance

log = logging.getLogger("vemi_eval.data")
MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass
class Dataset:
    """Usable utterances plus what was refused and why."""

    name: str
    utterances: list[Utterance]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    total: int = 0  # entries found, usable or not

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for u in self.utterances:
            h.update(u.id.encode())
            h.update((u.text or "").encode())
            h.update(np.ascontiguousarray(u.audio, dtype=np.float32).tobytes())
        return h.hexdigest()

    def summary(self) -> str:
        return f"{self.name}: {len(self.utterances)} usable of {self.total} ({len(self.skipped)} skipped)"


def _read_manifest(path: Path) -> list[dict]:
    try:
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path.name} line {i}: invalid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read manifest {path}: {e}") from None
    if rows and not all(isinstance(r, dict) and r.get("path") for r in rows):
        raise DataError(f"manifest {path.name}: every entry needs a 'path' (columns: path,text,speaker)")
    base = path.parent
    out = []
    for r in rows:
        p = Path(str(r["path"]))
        text = r.get("text")
        spk = r.get("speaker")
        out.append(
            {
                "path": p if p.is_absolute() else base / p,
                "name": str(r["path"]),
                "text": None if text in (None, "") else str(text),
                "speaker": None if spk in (None, "") else str(spk),
            }
        )
    return out


def _scan_folder(root: Path) -> list[dict]:
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix.lower() == ".txt" or p.name.startswith("."):
            continue
        rel = p.relative_to(root)
        txt = p.with_suffix(".txt")
        text = None
        if txt.exists():
            try:
                text = txt.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError) as e:
                text = None
                log.warning("%s: transcript unreadable (%s)", txt.name, e)
        out.append(
            {
                "path": p,
                "name": str(rel),
                "text": text,
                "speaker": rel.parts[0] if len(rel.parts) > 1 else None,
            }
        )
    return out


def count_audio_entries(source: str | Path) -> int:
    """How many entries of a folder or manifest name an audio file, without decoding any: an upper bound
    of the inputs a measurement can score, known before any work."""
    src = Path(source)
    manifests = [src / f"manifest{ext}" for ext in MANIFEST_SUFFIXES] if src.is_dir() else []
    manifest = next((m for m in manifests if m.is_file()), None)
    if manifest is not None:
        entries = _read_manifest(manifest)
    elif src.is_dir():
        entries = _scan_folder(src)
    elif src.suffix.lower() in MANIFEST_SUFFIXES:
        entries = _read_manifest(src)
    else:
        return 0
    return sum(1 for e in entries if Path(e["name"]).suffix.lower() in AUDIO_SUFFIXES)


def load_dataset(
    source: str | Path, *, sample_rate: int = 24000, limit: int | None = None, report=None
) -> Dataset:
    """Load a folder or manifest. ``report(msg)`` (default: the log) hears each skipped file's reason."""
    src = Path(source)
    if not src.exists():
        raise DataError(f"data not found: {src}")
    manifests = [src / f"manifest{ext}" for ext in MANIFEST_SUFFIXES] if src.is_dir() else []
    manifest = next((m for m in manifests if m.is_file()), None)
    if manifest is not None:
        entries = _read_manifest(manifest)  # a folder may carry its own manifest (--data takes folders)
    elif src.is_dir():
        entries = _scan_folder(src)
    elif src.suffix.lower() in MANIFEST_SUFFIXES:
        entries = _read_manifest(src)
    else:
        raise DataError(f"{src}: expected a folder of audio files or a .csv/.jsonl manifest")
    if limit is not None:
        entries = entries[:limit]
    say = report or log.warning
    utts, skipped = [], []
    for e in entries:
        name = e["name"]
        if Path(name).suffix.lower() not in AUDIO_SUFFIXES:
            reason = f"not an audio file (expected {', '.join(AUDIO_SUFFIXES)})"
        else:
            try:
                audio = load_audio(e["path"], sample_rate)
                uid = str(Path(name).with_suffix("")).replace("\\", "/")
                utts.append(Utterance(uid, e["speaker"], e["text"], audio, sample_rate))
                continue
            except AudioError as err:
                reason = str(err)
        skipped.append((name, reason))
        say(f"skipped {name}: {reason}")
    ds = Dataset(name=src.name, utterances=utts, skipped=skipped, total=len(entries))
    if not utts:
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"no usable audio in {src}: {len(entries)} entries, {len(skipped)} skipped{first}")
    return ds


def dataset_for(
    data: dict | None, *, sample_rate: int, quick: bool, split: str = "heldout", report=None
) -> Dataset:
    """The data a quality measurement runs on: ``data["dir"]`` (BYO, from --data or the suite's [data]
    table) when given, else the espeak corpus split. ``data["limit"]`` caps the number of utterances."""
    from .corpus import espeak_corpus, recipe_hash

    data = dict(data or {})
    limit = data.get("limit")
    source = data.get("dir") or data.get("path")
    if source:
        return load_dataset(source, sample_rate=sample_rate, limit=limit, report=report)
    corpus = data.get("corpus", "espeak")
    if corpus in ("espeak-voices", "festival-voices"):  # the codec corpus's held-out voices, one engine
        from .codec_corpus import heldout_utterances

        engine = corpus.split("-")[0]
        utts = heldout_utterances(engine, sample_rate=sample_rate, quick=bool(quick or data.get("quick")))
        if limit is not None:
            utts = utts[: int(limit)]
        return Dataset(name=f"codec-corpus-heldout-{engine}", utterances=utts, total=len(utts))
    if corpus != "espeak":
        raise DataError(
            f"unknown corpus {corpus!r} (known: 'espeak', 'espeak-voices', 'festival-voices'; "
            "or give a data directory)"
        )
    split = data.get("split", split)
    utts = espeak_corpus(split, quick=bool(quick or data.get("quick")), sample_rate=sample_rate)
    if limit is not None:
        utts = utts[: int(limit)]
    return Dataset(name=f"espeak-{recipe_hash()}-{split}", utterances=utts, total=len(utts))
