"""The dialogue corpus's users from two engines (espeak-ng and festival): a missing festival voice is an
error, whole voices of each engine are held out (checked by name), each engine's held-out split has
sessions, and held-out figures can be grouped per engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import librosa
import numpy as np
import pytest

from vemi_eval.data import DataError, dialogue, festival
from vemi_eval.data.dialogue import ESPEAK, FESTIVAL

ENGINES = (ESPEAK, FESTIVAL)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("dialogue-engines")


def _names(split: str, engine: str) -> set[str]:
    return {v.variant for v in dialogue.voices(split) if v.engine == engine}


def test_every_festival_voice_names_the_debian_package_that_setup_installs():
    setup = (Path(__file__).parents[1] / "scripts" / "setup.sh").read_text()
    assert set(festival.DEBIAN_PACKAGES) == {v.name for v in festival.ALL_VOICES}
    for package in festival.DEBIAN_PACKAGES.values():
        assert re.search(rf"\b{re.escape(package)}\b", setup), package


def test_a_missing_festival_voice_is_one_line_naming_the_voice_and_its_package(cache, monkeypatch):
    # festival itself: an unknown voice is an error, not its default voice under the unknown name
    with pytest.raises(DataError, match="no voice no_such_diphone"):
        festival.say_many("no_such_diphone", ["seven"])
    # the corpus: checked before any word is said
    users, _ = dialogue.festival_users()
    gone = next(u.name for u in users if u.heldout)
    monkeypatch.setattr(festival, "installed_voices", lambda: {v.name for v in festival.ALL_VOICES} - {gone})
    monkeypatch.setattr(
        dialogue.synth, "_espeak_word", lambda *a, **k: pytest.fail("synthesised before the check")
    )
    with pytest.raises(DataError) as e:
        dialogue.dialogue_sessions("heldout", limit=2, cache_dir=cache)
    message = str(e.value)
    assert "\n" not in message and gone in message and festival.DEBIAN_PACKAGES[gone] in message


def test_held_out_voices_of_each_engine_never_appear_in_training_by_name():
    for engine in ENGINES:
        train, held = _names("train", engine), _names("heldout", engine)
        assert train and held and not train & held, engine
    # nor in the training splits' crossover speakers, nor the model's voice anywhere
    mixed = {v.variant for v in dialogue.voices("train_aug_mix") if v.engine == ESPEAK}
    assert not mixed & _names("heldout", ESPEAK)
    every = {v.variant for split in ("train", "heldout") for v in dialogue.voices(split)}
    assert dialogue.MODEL_VOICE not in every
    # festival's held-out users are voices the codec never trains on either (unseen by codec and LM)
    codec_trains_on = {v.name for v in festival.FESTIVAL_VOICES if not v.heldout}
    assert not _names("heldout", FESTIVAL) & codec_trains_on
    assert _names("train", FESTIVAL) <= codec_trains_on


def test_festival_users_are_the_voices_the_intelligibility_file_accepts():
    rows, sha = festival.intelligibility()
    accepted = {r.name for r in rows if r.decision == festival.USE}
    users, same_sha = dialogue.festival_users()
    assert {u.name for u in users} == accepted - {dialogue.MODEL_VOICE} and same_sha == sha
    rec = dialogue.recipe({"espeak": "e", "festival": "f"})
    assert rec["festival_intelligibility_sha256"] == sha  # a new measurement moves the corpus's cache
    assert {u["name"] for u in rec["festival_users"]} == accepted - {dialogue.MODEL_VOICE}


def test_an_intelligibility_file_without_held_out_or_training_users_is_refused(tmp_path):
    raw = json.loads(festival.INTELLIGIBILITY_PATH.read_text())
    codec_held = {v.name for v in festival.ALL_VOICES if v.heldout}
    for keep in (lambda r: r["name"] in codec_held, lambda r: r["name"] not in codec_held):
        path = tmp_path / "file.json"
        rows = [{**r, "decision": r["decision"] if keep(r) else "leave out"} for r in raw["voices"]]
        path.write_text(json.dumps({**raw, "voices": rows}))
        with pytest.raises(DataError, match="both in training and held out"):
            dialogue.festival_users(path)


def test_the_engine_is_drawn_first_by_its_quota():
    for split, cfg in dialogue.SPLITS.items():
        n = cfg["sessions"]
        engines = [dialogue.session_engine(split, i) for i in range(n)]
        assert engines.count(FESTIVAL) == round(n * cfg["festival_share"]), split
    held = [dialogue.session_engine("heldout", i) for i in range(2)]
    assert held == [ESPEAK, FESTIVAL]  # even two held-out sessions hold both engines


def test_each_engines_held_out_sessions_and_their_grouping(cache):
    """Two held-out sessions (one per engine): festival's words come from its voice at its style's
    rate; the tokenised split's manifest maps every session to its voice and its engine."""
    from vemi_eval.training.lm import load_token_folder

    sessions = dialogue.dialogue_sessions("heldout", limit=2, cache_dir=cache)
    assert {s.voice.engine for s in sessions} == set(ENGINES)
    fest = next(s for s in sessions if s.voice.engine == FESTIVAL)
    assert fest.voice.variant in _names("heldout", FESTIVAL)
    assert dialogue.FESTIVAL_STRETCH[0] <= fest.voice.stretch <= dialogue.FESTIVAL_STRETCH[1]
    user = fest.user_audio(with_noise=False)
    for t in fest.turns:
        for w in t.words:
            assert abs(user[w.start : w.end]).max() > 0.01  # every word is said
    figures = dialogue.corpus_figures(sessions)
    assert figures["sessions_by_engine"] == {ESPEAK: 1, FESTIVAL: 1}
    folder = dialogue.tokenised_split("heldout", limit=2, cache_dir=cache, log=lambda m: None)
    data = load_token_folder(folder, 17)
    assert data.groups() == ("user voice", [s.voice.variant for s in sessions])
    assert data.groups("engine_groups") == ("user engine", [s.voice.engine for s in sessions])


def test_the_pitch_arm_spreads_festival_training_users_from_male_to_female_f0(cache):
    """train_aug_f0: festival's training users in styles of their own, each at a drawn mean F0; held-out
    users untouched; a word said at two target F0s measurably an octave apart; a voice that would ignore
    the target is refused (a setting that changes nothing is an error)."""
    cfg = dialogue.SPLITS["train_aug_f0"]["festival_pitch"]
    fest = [v for v in dialogue.voices("train_aug_f0") if v.engine == FESTIVAL]
    assert len(fest) == cfg["styles"] * len(_names("train", FESTIVAL))
    assert all(cfg["f0_hz"][0] <= v.pitch <= cfg["f0_hz"][1] and "-f0-" in v.id for v in fest)
    assert max(v.pitch for v in fest) - min(v.pitch for v in fest) > 100  # male to female
    assert not {v.variant for v in fest} & _names("heldout", FESTIVAL)
    assert all(v.pitch == 0 for v in dialogue.voices("heldout") if v.engine == FESTIVAL)
    (low, sr), (high, _) = (festival.say_many("kal_diphone", ["seven"], f0_hz=f)[0] for f in (100.0, 200.0))
    f0 = [np.nanmedian(librosa.pyin(a.astype(float), fmin=60, fmax=400, sr=sr)[0]) for a in (low, high)]
    assert 1.7 < f0[1] / f0[0] < 2.3, f0
    with pytest.raises(DataError, match="takes no target F0"):
        festival.say_many("cmu_us_slt_arctic_hts", ["seven"], f0_hz=200.0)
    with pytest.raises(DataError, match="must be > 0 Hz"):
        festival.say_many("kal_diphone", ["seven"], f0_hz=-100.0)
    sessions = dialogue.dialogue_sessions("train_aug_f0", limit=4, cache_dir=cache)
    assert {s.voice.engine for s in sessions} == set(ENGINES)  # half festival: 2 of 4
    for s in sessions:
        assert s.user_audio(with_noise=False).size == s.n_samples
