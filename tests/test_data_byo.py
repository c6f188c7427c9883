"""Bring-your-own data: every bad file is reported by name with its reason and never scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from vemi_eval.data import DataError
from vemi_eval.data.byo import load_dataset

SR_IN = 44100


def voice(seconds: float = 1.0, rate: int = SR_IN) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)


@pytest.fixture
def folder(tmp_path):
    stereo = np.stack([voice(), 0.5 * voice()], axis=1)
    sf.write(tmp_path / "good.wav", stereo, SR_IN)
    (tmp_path / "good.txt").write_text("hello world\n")
    spk = tmp_path / "alice"
    spk.mkdir()
    sf.write(spk / "a1.flac", voice(0.8, 16000), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(256)))
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "silent.wav", np.zeros(SR_IN, np.float32), SR_IN)
    bad = voice()
    bad[100:110] = np.nan
    sf.write(tmp_path / "nan.wav", bad, SR_IN, subtype="FLOAT")
    sf.write(tmp_path / "clipped.wav", np.clip(8 * voice(), -1, 1), SR_IN)
    sf.write(tmp_path / "short.wav", voice(0.05), SR_IN)
    (tmp_path / "song.mp3").write_bytes(b"ID3not really")
    return tmp_path


EXPECTED = {
    "corrupt.wav": "unreadable audio",
    "empty.wav": "empty file",
    "silent.wav": "silent",
    "nan.wav": "NaN/inf",
    "clipped.wav": "clipped",
    "short.wav": "too short",
    "song.mp3": "not an audio file",
}


def test_folder_reports_each_bad_file_by_name(folder):
    heard = []
    ds = load_dataset(folder, sample_rate=24000, report=heard.append)
    assert sorted(u.id for u in ds.utterances) == ["alice/a1", "good"]
    assert ds.total == 2 + len(EXPECTED)
    reasons = dict(ds.skipped)
    assert set(reasons) == set(EXPECTED)
    for name, why in EXPECTED.items():
        assert why in reasons[name], (name, reasons[name])
        assert any(name in line and why in line for line in heard)
    good = {u.id: u for u in ds.utterances}
    assert good["good"].text == "hello world" and good["good"].speaker is None
    assert good["alice/a1"].speaker == "alice" and good["alice/a1"].text is None
    assert good["good"].audio.ndim == 1 and good["good"].audio.size == 24000  # downmixed, resampled
    assert good["alice/a1"].audio.size == int(0.8 * 24000)
    assert "2 usable of 9" in ds.summary()


def test_manifests_csv_and_jsonl(folder):
    (folder / "m.csv").write_text("path,text,speaker\ngood.wav,hi there,bob\nempty.wav,x,bob\n")
    ds = load_dataset(folder / "m.csv", sample_rate=16000)
    assert [(u.id, u.text, u.speaker) for u in ds.utterances] == [("good", "hi there", "bob")]
    assert ds.skipped == [("empty.wav", "empty file (0 bytes)")]
    lines = [{"path": str(folder / "alice" / "a1.flac"), "text": "one"}, {"path": "missing.wav"}]
    (folder / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    ds = load_dataset(folder / "m.jsonl", sample_rate=16000)
    assert len(ds.utterances) == 1 and ds.skipped == [("missing.wav", "file not found")]


def test_nothing_usable_is_one_line_error(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    assert "no usable audio" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "bad.csv").write_text("file,text\nx.wav,hi\n")
    with pytest.raises(DataError, match="needs a 'path'"):
        load_dataset(tmp_path / "bad.csv")
