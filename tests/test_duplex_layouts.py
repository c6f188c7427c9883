"""Full-Duplex-Bench and M3-DuplexBench folders are read and checked before any work: every bad sample is
named with its reason and skipped; nothing usable is one DataError line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tests.duplex_fixtures import RATE, fdb_sample, m3_folder, pause, speechlike, turn_taking
from vemi_eval.data import DataError
from vemi_eval.data.duplex_layouts import (
    BARGE_IN,
    INTERRUPTION,
    PAUSE,
    SMOOTH_TURN,
    USER_BACKCHANNEL,
    Event,
    load_duplex_data,
)


def test_fdb_layout_tasks_and_bad_samples(tmp_path):
    root = tmp_path / "fdb"
    fdb_sample(root / "candor_turn_taking" / "1", "turn_taking.json", turn_taking(1.6), reference="eight")
    fdb_sample(root / "candor_pause_handling" / "7", "pause.json", pause(0.8, 1.2))
    interrupt = [{"context": "a", "interrupt": "b", "timestamp": [1.0, 1.6]}]
    fdb_sample(root / "synthetic_user_interruption" / "3", "interrupt.json", interrupt)
    fdb_sample(root / "user_interruption" / "v15", "metadata.json", {"timestamps": [1.0, 1.5]})
    fdb_sample(root / "icc_backchannel" / "12", "", None)
    # bad ones: no input.wav, an unreadable wav, malformed JSON, a span after the input, no annotation
    (root / "bad" / "no_wav").mkdir(parents=True)
    (root / "bad" / "no_wav" / "turn_taking.json").write_text(json.dumps(turn_taking(1.0)))
    fdb_sample(root / "bad" / "garbled", "turn_taking.json", turn_taking(1.0))
    (root / "bad" / "garbled" / "input.wav").write_bytes(b"RIFF....not audio")
    fdb_sample(root / "bad" / "json", "pause.json", None)
    (root / "bad" / "json" / "pause.json").write_text('[{"timestamp": [1.0, 2.0}')
    fdb_sample(root / "bad" / "late", "turn_taking.json", turn_taking(9.0))
    fdb_sample(root / "bad" / "plain", "", None)

    data = load_duplex_data(root)
    assert data.layout == "fdb"
    got = {s.id: s for s in data.samples}
    assert sorted(got) == [
        "candor_pause_handling/7",
        "candor_turn_taking/1",
        "icc_backchannel/12",
        "synthetic_user_interruption/3",
        "user_interruption/v15",
    ]
    tt = got["candor_turn_taking/1"]
    assert tt.events == (Event(SMOOTH_TURN, 1.6, 2.0),) and tt.reference == "eight"
    assert tt.native_rate == RATE and tt.duration_s == pytest.approx(3.0)
    assert {p.name for p in tt.annotation_files} == {"turn_taking.json", "reference.txt"}
    assert got["candor_pause_handling/7"].events == (Event(PAUSE, 0.8, 1.2),)
    assert got["synthetic_user_interruption/3"].events == (Event(INTERRUPTION, 1.0, 1.6),)
    assert got["user_interruption/v15"].events == (Event(INTERRUPTION, 1.0, 1.5),)
    assert got["icc_backchannel/12"].tasks == ["backchannel"]
    skipped = dict(data.skipped)
    assert skipped["bad/no_wav"] == "no input.wav"
    assert skipped["bad/garbled"].startswith("input.wav: unreadable audio")
    assert skipped["bad/json"].startswith("pause.json: malformed JSON (line 1")
    assert "after the input ends" in skipped["bad/late"]
    assert skipped["bad/plain"].startswith("no annotation")
    # any rate is resampled to the codec's
    audio = got["candor_turn_taking/1"].user_audio(24000)
    assert audio.size == 3 * 24000 and audio.dtype == np.float32


def test_nothing_usable_is_one_line(tmp_path):
    fdb_sample(tmp_path / "only" / "1", "pause.json", None)
    (tmp_path / "only" / "1" / "pause.json").write_text("{")
    with pytest.raises(DataError) as e:
        load_duplex_data(tmp_path / "only")
    msg = str(e.value)
    assert "\n" not in msg and "1 skipped (first: 1: pause.json: malformed JSON" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no Full-Duplex-Bench sample folders"):
        load_duplex_data(empty)
    with pytest.raises(DataError, match="not found"):
        load_duplex_data(tmp_path / "missing")


def test_m3_layout_channels_events_and_bad_lines(tmp_path):
    events = {
        "0": [
            {"event": "TURN", "time": [0.2, 1.5]},
            {"event": "SHORTPAUSE", "time": [0.6, 0.8]},
            {"event": "BC", "time": [2.3, 2.6]},
            {"event": "TURN", "time": [3.2, 3.9]},
            {"event": "BARGE_IN", "time": [3.2, 3.5]},
        ],
        "1": [{"event": "TURN_SHIFT", "time": [1.5, 2.0]}, {"event": "TURN", "time": [2.0, 3.0]}],
    }
    root = m3_folder(tmp_path / "m3", [{"id": "conv1", "events": events}, {"id": "conv2", "events": events}])
    with (root / "test.jsonl").open("a") as f:
        f.write('{"id": "conv3", "events": \n')  # malformed JSON
        f.write(json.dumps({"id": "conv4", "events": {"0": [{"event": "LAUGH", "time": [0, 1]}]}}) + "\n")
        f.write(json.dumps({"id": "../x", "events": {}}) + "\n")
        f.write(json.dumps({"id": "nowav", "events": events}) + "\n")
    sf.write(str(root / "audio" / "mono.wav"), speechlike(2.0, [(0.2, 1.0)]), RATE)
    with (root / "test.jsonl").open("a") as f:
        f.write(json.dumps({"id": "mono", "events": events}) + "\n")

    data = load_duplex_data(root, user_channel=0)
    assert data.layout == "m3" and [s.id for s in data.samples] == ["conv1", "conv2"]
    s = data.samples[0]
    assert s.channel == 0 and s.user_turns == ((0.2, 1.5), (3.2, 3.9))
    assert s.events == (
        Event(PAUSE, 0.6, 0.8),
        Event(SMOOTH_TURN, 1.5, 2.0),  # the model's channel takes the turn: the user's turn ends at 1.5
        Event(USER_BACKCHANNEL, 2.3, 2.6),
        Event(BARGE_IN, 3.2, 3.5),
    )
    # the user's channel, not the downmix
    user = s.user_audio(RATE)
    assert np.abs(user[int(2.2 * RATE) : int(2.9 * RATE)]).max() < 0.01
    why = {name.split(" (")[0]: reason for name, reason in data.skipped}
    assert why["test.jsonl line 3"].startswith("malformed JSON")
    assert "unknown event 'LAUGH'" in why["test.jsonl line 4"]
    assert "not a plain file name" in why["test.jsonl line 5"]
    assert why["test.jsonl line 6"] == "audio/nowav.wav: file not found"
    assert (
        why["test.jsonl line 7"] == "audio/mono.wav: has 1 channel(s), not 2 (the user's and the partner's)"
    )
    # channel 1 as the user's: it has no event of its own and channel 0 never takes a turn from it
    with pytest.raises(DataError, match="no scored event for the user on channel 1"):
        load_duplex_data(root, user_channel=1)
