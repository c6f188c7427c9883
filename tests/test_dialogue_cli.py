"""`vemi-eval run dialogue-fdb --data FOLDER` on the tiny preset: bad data or a bad tokenizer is one line and
exit 2 before any work; a good folder gives rule=fdb, rule=m3 and rule=vemi records and the exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from tests.duplex_fixtures import fdb_sample, pause, speechlike, turn_taking
from vemi_eval.cli import main

SUITE = Path(__file__).resolve().parents[1] / "suites" / "dialogue-fdb.toml"


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def _suite(tmp_path: Path) -> Path:
    """dialogue-fdb with a voice reference of its own (no festival needed) and no sample minimum."""
    voice = tmp_path / "voice.wav"
    sf.write(str(voice), speechlike(2.0, [(0.1, 1.9)], rate=24000), 24000)
    text = SUITE.read_text().replace('voice_reference = ""', f'voice_reference = "{voice}"')
    text = text.replace("min_samples = 4", "min_samples = 1")
    path = tmp_path / "dialogue-fdb.toml"
    path.write_text(text)
    return path


def test_bad_data_and_tokenizer_stop_before_any_work(tmp_path, capsys):
    suite = _suite(tmp_path)
    bad = tmp_path / "bad"
    fdb_sample(bad / "1", "pause.json", None)
    (bad / "1" / "pause.json").write_text("[{")
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", str(suite), "--data", str(bad), "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "no usable sample" in err and "1: pause.json: malformed JSON" in err
    assert not out.exists()  # nothing was started
    good = tmp_path / "good"
    fdb_sample(good / "1", "turn_taking.json", turn_taking(1.6))
    code, _, err = _run(
        capsys,
        "run",
        str(suite),
        "--data",
        str(good),
        "--text-tokenizer",
        str(tmp_path / "no.model"),
        "--out",
        str(out),
    )
    assert code == 2 and "text tokenizer not found" in err and not out.exists()


@pytest.mark.slow
def test_an_fdb_folder_on_the_tiny_preset(tmp_path, capsys):
    data = tmp_path / "fdb"
    fdb_sample(data / "turn_taking" / "1", "turn_taking.json", turn_taking(1.6), reference="eight")
    fdb_sample(data / "turn_taking" / "2", "turn_taking.json", turn_taking(1.6))
    fdb_sample(data / "pause" / "1", "pause.json", pause(0.8, 1.2))
    out = tmp_path / "run"
    args = ("--out", str(out), "--no-report", "--no-history")
    code, stdout, err = _run(capsys, "run", str(_suite(tmp_path)), "--data", str(data), *args)
    assert code in (0, 3), err  # VALID, or INVALID for what the random-input model said: never a crash
    doc = json.loads((out / "results.json").read_text())
    rules = {(m["metric"], m["condition"].get("task"), m["condition"].get("rule")) for m in doc["metrics"]}
    for rule in ("fdb", "m3", "vemi"):
        assert ("turn_over_rate", "smooth_turn_taking", rule) in rules
        assert ("turn_over_rate", "pause_handling", rule) in rules
    assert ("answer_accuracy", "reference_reply", "vemi") in rules
    tor = next(
        m for m in doc["metrics"] if m["metric"] == "turn_over_rate" and m["condition"]["rule"] == "fdb"
    )
    assert tor["status"] == "ok" and 0 <= tor["value"] <= 1
    for sid in ("turn_taking/1", "turn_taking/2", "pause/1"):
        folder = out / "dialogue" / "baseline" / sid
        inp, rate = sf.read(str(data / sid / "input.wav"))
        wav, out_rate = sf.read(str(folder / "output.wav"))
        assert out_rate == rate and wav.shape == inp.shape
        assert set(json.loads((folder / "output.json").read_text())) == {"text", "chunks"}
        assert (folder / "text_stream.json").is_file()
