"""A user's own conversations for the dialogue suite, in the layouts of the full-duplex benchmarks.

**Full-Duplex-Bench v1 / v1.5** (github.com/DanielLin94144/Full-Duplex-Bench, ``v1_v1.5/dataset/README.md``
and ``v1_v1.5/evaluation/eval_*.py``): one folder per sample, anywhere under the data directory, holding
``input.wav`` (the user's stream) and one annotation file:

- ``turn_taking.json`` ``[{"text": "[TURN-TAKING]", "timestamp": [user turn end, ...]}]``: smooth
  turn-taking, the user's turn ends at ``timestamp[0]`` (what ``eval_smooth_turn_taking.py`` reads);
- ``pause.json`` ``[{"text": "[PAUSE]", "timestamp": [start, end]}]``: a pause inside the user's turn;
- ``interrupt.json`` ``[{"context", "interrupt", "timestamp": [start, end]}]``: the user interrupts;
- v1.5 ``metadata.json`` ``{"context_text", "current_turn_text", "timestamps": [start, end]}``: an overlap
  event; its task is the subset folder's name (``user_interruption``, ``user_backchannel``,
  ``talking_to_other``, ``background_speech``);
- no annotation, under a folder whose name holds ``backchannel`` (v1's ICC set): the backchannel task.

An optional ``reference.txt`` beside ``input.wav`` is the expected reply (scored when present).

**M3-DuplexBench** (github.com/nttcslab-sp/m3-duplexbench, ``m3_duplexbench/inference/events.py``): a
``.jsonl`` file at the top of the data directory, one conversation a line, ``{"id": ..., "events":
{"0": [{"event": "TURN", "time": [start, end]}, ...], "1": [...]}}`` with events TURN, TURN_SHIFT,
TURN_HOLD, SHORTPAUSE, BC, BARGE_IN, and its audio ``audio/<id>.wav`` with two channels. One channel is
the user's (``user_channel``); the model replaces the other. As M3 assigns them: a TURN_SHIFT on the
model's channel ends the user's turn at its start; TURN_HOLD and SHORTPAUSE on the user's channel are
pauses; BC and BARGE_IN on the user's channel are a backchannel and a barge-in at their start.

Everything is checked before any work: a sample without ``input.wav``, with an unreadable or unusable
wav, or with malformed JSON / JSONL is listed by name with the reason and skipped; when nothing usable is
left, ``DataError`` (one line). Audio at any rate is resampled to the codec's rate by
:meth:`DuplexSample.user_audio`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import DataError
from .audio import AudioError, resample, validate

FDB_ANNOTATIONS = ("turn_taking.json", "pause.json", "interrupt.json", "metadata.json")
REFERENCE_FILE = "reference.txt"
INPUT_WAV = "input.wav"

# tasks (the records' ``task=``)
SMOOTH_TURN = "smooth_turn_taking"
PAUSE = "pause_handling"
INTERRUPTION = "user_interruption"
BACKCHANNEL = "backchannel"  # FDB v1: the model's backchannels while the user talks
USER_BACKCHANNEL = "user_backchannel"  # the user backchannels while the model talks (M3 BC, FDB v1.5)
BARGE_IN = "barge_in"  # M3 BARGE_IN
OVERLAP_V15 = {  # FDB v1.5 subsets -> task
    "user_interruption": INTERRUPTION,
    "user_backchannel": USER_BACKCHANNEL,
    "talking_to_other": "talking_to_other",
    "background_speech": "background_speech",
}
M3_EVENTS = {"TURN", "TURN_SHIFT", "TURN_HOLD", "SHORTPAUSE", "BC", "BARGE_IN"}
M3_EVAL_WINDOW_S = 10.0  # M3's eval_window_len: the input runs this long past the user's turn


@dataclass(frozen=True)
class Event:
    """One annotated moment of a sample, in seconds of its input."""

    task: str
    start: float
    end: float


@dataclass(frozen=True)
class DuplexSample:
    id: str  # the sample folder relative to the data directory (FDB), or the conversation id (M3)
    layout: str  # "fdb" or "m3"
    wav: Path
    channel: int | None  # the user's channel of a multi-channel wav (M3); None: downmix
    native_rate: int
    n_native: int  # samples of the input at its own rate
    events: tuple[Event, ...]
    reference: str | None = None  # reference.txt: the expected reply
    user_turns: tuple[tuple[float, float], ...] = ()  # M3's TURN spans on the user's channel
    annotation_files: tuple[Path, ...] = ()
    annotation: dict[str, Any] = field(default_factory=dict, compare=False)  # M3: the conversation's record

    @property
    def duration_s(self) -> float:
        return self.n_native / self.native_rate

    @property
    def tasks(self) -> list[str]:
        return sorted({e.task for e in self.events})

    def user_audio(self, sample_rate: int) -> np.ndarray:
        """The user's stream at ``sample_rate`` (float32 mono)."""
        audio, rate = read_channel(self.wav, self.channel)
        return resample(audio, rate, sample_rate)


@dataclass
class DuplexData:
    root: Path
    layout: str
    samples: list[DuplexSample]
    skipped: list[tuple[str, str]]  # (name, reason)

    @property
    def sha256(self) -> str:
        """Hash of the audio and annotations used."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(s.id.encode())
            h.update(s.wav.read_bytes())
            h.update(json.dumps([[(e.task, e.start, e.end) for e in s.events], s.reference]).encode())
        return h.hexdigest()


def read_channel(path: Path, channel: int | None) -> tuple[np.ndarray, int]:
    """One channel (or the downmix) of a wav at its own rate, validated; AudioError with the reason."""
    import soundfile as sf

    if not path.is_file():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AudioError(f"unreadable audio ({msg})") from None
    if channel is None:
        mono = audio.mean(axis=1)
    elif channel >= audio.shape[1]:
        raise AudioError(f"has {audio.shape[1]} channel(s); the user's is channel {channel}")
    else:
        mono = audio[:, channel]
    validate(mono, rate)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def _audio_info(path: Path, channel: int | None, channels: int | None = None) -> tuple[int, int]:
    """(rate, frames) of a usable wav (with ``channels`` channels when given), reading and checking its
    samples."""
    if channels is not None and path.is_file():
        import soundfile as sf

        try:
            found = sf.info(str(path)).channels
        except Exception:  # unreadable: read_channel says why
            found = channels
        if found != channels:
            raise AudioError(f"has {found} channel(s), not {channels} (the user's and the partner's)")
    audio, rate = read_channel(path, channel)
    return rate, audio.size


# --- Full-Duplex-Bench ----------------------------------------------------------------------------
def _span(value: Any, what: str) -> tuple[float, float]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    ):
        raise ValueError(f"{what} must be [start, end] in seconds, got {value!r}")
    a, b = float(value[0]), float(value[1])
    if a < 0 or b < a:
        raise ValueError(f"{what} [{a:g}, {b:g}] is not a span (0 <= start <= end)")
    return a, b


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.name}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name}: malformed JSON (line {e.lineno}: {e.msg})") from None


def _fdb_events(folder: Path) -> tuple[list[Event], list[Path]]:
    """The events of one FDB sample folder from its annotation files (ValueError: the reason)."""
    events, files = [], []
    for name in FDB_ANNOTATIONS:
        path = folder / name
        if not path.is_file():
            continue
        files.append(path)
        doc = _load_json(path)
        if name == "metadata.json":
            if not isinstance(doc, dict) or "timestamps" not in doc:
                raise ValueError(f"{name}: expected an object with 'timestamps': [start, end]")
            a, b = _span(doc["timestamps"], f"{name} timestamps")
            task = next((t for k, t in OVERLAP_V15.items() if k in folder.parent.name), "overlap")
            events.append(Event(task, a, b))
            continue
        if not isinstance(doc, list) or not doc or not all(isinstance(x, dict) for x in doc):
            raise ValueError(f"{name}: expected a non-empty list of {{'timestamp': [start, end]}} objects")
        task = {"turn_taking.json": SMOOTH_TURN, "pause.json": PAUSE, "interrupt.json": INTERRUPTION}[name]
        for i, item in enumerate(doc):
            a, b = _span(item.get("timestamp"), f"{name} item {i} timestamp")
            events.append(Event(task, a, b))
    if not files and "backchannel" in folder.parent.name.lower():
        events.append(Event(BACKCHANNEL, 0.0, 0.0))  # the whole input: the model's backchannels
    return events, files


def _read_fdb(root: Path) -> DuplexData:
    samples, skipped = [], []
    folders = sorted(
        {p.parent for p in root.rglob(INPUT_WAV)} | {p.parent for n in FDB_ANNOTATIONS for p in root.rglob(n)}
    )
    for folder in folders:
        sid = folder.relative_to(root).as_posix() if folder != root else folder.name
        try:
            if not (folder / INPUT_WAV).is_file():
                raise ValueError(f"no {INPUT_WAV}")
            events, files = _fdb_events(folder)
            if not events:
                raise ValueError(
                    "no annotation (turn_taking.json, pause.json, interrupt.json or metadata.json; "
                    "or a folder named *backchannel*)"
                )
            try:
                rate, n = _audio_info(folder / INPUT_WAV, None)
            except AudioError as e:
                raise ValueError(f"{INPUT_WAV}: {e}") from None
            late = [e for e in events if e.start > n / rate]
            if late:
                raise ValueError(f"an annotation starts at {late[0].start:g} s, after the input ends")
            ref = None
            if (folder / REFERENCE_FILE).is_file():
                files.append(folder / REFERENCE_FILE)
                try:
                    ref = (folder / REFERENCE_FILE).read_text(encoding="utf-8").strip() or None
                except (OSError, UnicodeDecodeError) as e:
                    raise ValueError(f"{REFERENCE_FILE}: unreadable ({e})") from None
            samples.append(
                DuplexSample(
                    sid, "fdb", folder / INPUT_WAV, None, rate, n, tuple(events), ref, (), tuple(files)
                )
            )
        except ValueError as e:
            skipped.append((sid, str(e)))
    return DuplexData(root, "fdb", samples, skipped)


# --- M3-DuplexBench -------------------------------------------------------------------------------
def _m3_record(raw: Any) -> tuple[str, dict[str, list[tuple[str, float, float]]]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        raise ValueError("expected an object with an 'id' string and 'events'")
    if "/" in raw["id"] or "\\" in raw["id"] or raw["id"].startswith("."):
        raise ValueError(f"id {raw['id']!r} is not a plain file name (its audio is audio/<id>.wav)")
    ev = raw.get("events")
    if not isinstance(ev, dict) or not all(k in ("0", "1") and isinstance(v, list) for k, v in ev.items()):
        raise ValueError("'events' must map channel '0' / '1' to lists of events")
    out: dict[str, list[tuple[str, float, float]]] = {}
    for ch, items in ev.items():
        for i, item in enumerate(items):
            name = item.get("event") if isinstance(item, dict) else None
            if name not in M3_EVENTS:
                raise ValueError(
                    f"channel {ch} event {i}: unknown event {name!r} (known: {sorted(M3_EVENTS)})"
                )
            t = item.get("time")
            if not (isinstance(t, list) and len(t) == 2 and all(isinstance(x, (int, float)) for x in t)):
                raise ValueError(f"channel {ch} event {i}: 'time' must be [start, end]")
            # M3 writes some TURN_SHIFTs with end < start (an overlap); keep them as written
            out.setdefault(ch, []).append((name, float(t[0]), float(t[1])))
    return raw["id"], out


def m3_events(events: dict[str, list[tuple[str, float, float]]], user: int) -> tuple[list[Event], list]:
    """The scored events for the user on channel ``user`` (and the user's TURN spans), as M3's
    ``get_event_channels`` assigns channels: TURN_SHIFT names the channel that takes the turn."""
    model = 1 - user
    mine, theirs = events.get(str(user), []), events.get(str(model), [])
    turns = sorted((a, b) for n, a, b in mine if n == "TURN" and a <= b)
    out = [Event(SMOOTH_TURN, a, b) for n, a, b in theirs if n == "TURN_SHIFT"]
    out += [Event(PAUSE, a, b) for n, a, b in mine if n in ("TURN_HOLD", "SHORTPAUSE")]
    out += [Event(USER_BACKCHANNEL, a, b) for n, a, b in mine if n == "BC"]
    out += [Event(BARGE_IN, a, b) for n, a, b in mine if n == "BARGE_IN"]
    return sorted(out, key=lambda e: (e.start, e.task)), turns


def _read_m3(root: Path, manifests: list[Path], user_channel: int) -> DuplexData:
    samples, skipped = [], []
    for manifest in manifests:
        try:
            lines = manifest.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            skipped.append((manifest.name, f"unreadable ({e})"))
            continue
        for ln, line in enumerate(lines, 1):
            if not line.strip():
                continue
            name = f"{manifest.name} line {ln}"
            try:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"malformed JSON ({e.msg})") from None
                sid, events = _m3_record(raw)
                name = f"{manifest.name} line {ln} ({sid})"
                wav = root / "audio" / f"{sid}.wav"
                try:
                    rate, n = _audio_info(wav, user_channel, channels=2)
                except AudioError as e:
                    raise ValueError(f"audio/{sid}.wav: {e}") from None
                evs, turns = m3_events(events, user_channel)
                if not evs:
                    raise ValueError(f"no scored event for the user on channel {user_channel}")
                samples.append(
                    DuplexSample(
                        sid,
                        "m3",
                        wav,
                        user_channel,
                        rate,
                        n,
                        tuple(evs),
                        None,
                        tuple(turns),
                        (manifest,),
                        {"id": sid, "events": raw["events"]},
                    )
                )
            except ValueError as e:
                skipped.append((name, str(e)))
    return DuplexData(root, "m3", samples, skipped)


# --- either ---------------------------------------------------------------------------------------
def load_duplex_data(source: str | Path, *, user_channel: int = 0, limit: int | None = None) -> DuplexData:
    """Read and check a data directory in FDB's or M3's layout (M3 when a ``.jsonl`` file and ``audio/``
    sit at its top). Raises DataError when the layout is neither or nothing usable is left."""
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"data directory not found: {root}")
    manifests = sorted(root.glob("*.jsonl"))
    if manifests and (root / "audio").is_dir():
        if user_channel not in (0, 1):
            raise DataError(f"user_channel must be 0 or 1 for M3's 2-channel audio, got {user_channel}")
        data = _read_m3(root, manifests, user_channel)
    else:
        data = _read_fdb(root)
    if limit:
        data.samples = data.samples[:limit]
    if not data.samples:
        if not data.skipped:
            raise DataError(
                f"{root}: no Full-Duplex-Bench sample folders (input.wav + turn_taking.json / pause.json / "
                "interrupt.json / metadata.json) and no M3-DuplexBench events (.jsonl + audio/)"
            )
        name, why = data.skipped[0]
        raise DataError(f"no usable sample in {root}: {len(data.skipped)} skipped (first: {name}: {why})")
    return data
