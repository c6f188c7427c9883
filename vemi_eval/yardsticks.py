"""Reference codecs a reader already knows, run on the same utterances as the model's codec: Codec2 (Debian
``codec2``: ``c2enc``/``c2dec``, 8 kHz) at 700C, 1200, 2400 and 3200 bps, and Opus (Debian ``opus-tools``:
``opusenc``/``opusdec`` over libopus) at 6 and 12 kbps, hard CBR.

Why the command-line tools and not Python bindings: both are Debian packages set-up installs, they are the
codecs' own reference front ends, and nothing needs compiling or downloading at run time. A tool that is
missing makes its rows "skipped" with the reason (never a score).

Each round trip returns audio at the caller's rate and length, aligned: the decoders' own delay (Codec2's
frame look-ahead; Opus's pre-skip is removed by ``opusdec``) is measured by cross-correlation against the
input within 100 ms and removed, and reported with the rows.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.audio import resample

CODEC2_RATE = 8000


@dataclass(frozen=True)
class ReferenceCodec:
    name: str  # "codec2-1200", "opus-6"
    family: str  # "codec2" | "opus"
    mode: str  # c2enc's mode, or opusenc's --bitrate in kbps
    bitrate_kbps: float
    tools: tuple[str, ...]
    package: str  # the Debian package that holds the tools

    def missing(self) -> str | None:
        """Why this codec cannot run here, or None."""
        gone = [t for t in self.tools if shutil.which(t) is None]
        if gone:
            return (
                f"{', '.join(gone)} not found (Debian package {self.package}; scripts/setup.sh installs it)"
            )
        return None

    def version(self) -> str:
        return package_version(self.package)


REFERENCE_CODECS: dict[str, ReferenceCodec] = {
    c.name: c
    for c in (
        *(ReferenceCodec(f"codec2-{m}", "codec2", m, kbps, ("c2enc", "c2dec"), "codec2")
          for m, kbps in (("700C", 0.7), ("1200", 1.2), ("2400", 2.4), ("3200", 3.2))),
        *(ReferenceCodec(f"opus-{k}", "opus", str(k), float(k), ("opusenc", "opusdec"), "opus-tools")
          for k in (6, 12)),
    )
}  # fmt: skip


class YardstickError(RuntimeError):
    """A reference codec's tool failed on an input (its stderr's last line is the message)."""


@functools.cache
def package_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def check_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in REFERENCE_CODECS]
    if unknown:
        raise ValueError(f"unknown reference codec(s) {unknown} (known: {', '.join(REFERENCE_CODECS)})")
    return names


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise YardstickError(f"{' '.join(cmd[:2])} exited {done.returncode}: {tail}")


def _codec2(codec: ReferenceCodec, audio: np.ndarray, sample_rate: int, tmp: Path) -> np.ndarray:
    (tmp / "in.raw").write_bytes(_pcm16(resample(audio, sample_rate, CODEC2_RATE)))
    _run(["c2enc", codec.mode, str(tmp / "in.raw"), str(tmp / "bits.c2")])
    _run(["c2dec", codec.mode, str(tmp / "bits.c2"), str(tmp / "out.raw")])
    out = np.frombuffer((tmp / "out.raw").read_bytes(), dtype="<i2").astype(np.float64) / 32767
    return resample(out, CODEC2_RATE, sample_rate)


def _opus(codec: ReferenceCodec, audio: np.ndarray, sample_rate: int, tmp: Path) -> np.ndarray:
    with wave.open(str(tmp / "in.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(_pcm16(audio))
    _run(
        [
            "opusenc",
            "--quiet",
            "--hard-cbr",
            "--bitrate",
            codec.mode,
            str(tmp / "in.wav"),
            str(tmp / "x.opus"),
        ]
    )
    _run(["opusdec", "--quiet", "--rate", str(sample_rate), str(tmp / "x.opus"), str(tmp / "out.wav")])
    with wave.open(str(tmp / "out.wav"), "rb") as r:
        return np.frombuffer(r.readframes(r.getnframes()), dtype="<i2").astype(np.float64) / 32767


def roundtrip(codec: ReferenceCodec, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """(decoded float32 audio at ``sample_rate``, aligned and cut to the input's length; the delay removed,
    in samples at ``sample_rate``)."""
    from .evaluators.scoring import align

    with tempfile.TemporaryDirectory(prefix="vemi-yardstick-") as d:
        run = _codec2 if codec.family == "codec2" else _opus
        out = run(codec, np.asarray(audio, dtype=np.float64), sample_rate, Path(d))
    aligned, lag = align(audio, out, sample_rate)
    return aligned.astype(np.float32), lag
