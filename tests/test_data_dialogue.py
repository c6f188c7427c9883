"""The dialogue corpus: word timings and text alignment, the task's timing rules, held-out voices and
prompts, the cache, and tokenisation into the trainer's token-grid format."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vemi_eval.data import DataError, dialogue, espeak_mix
from vemi_eval.training.lm import load_token_folder

FRAME = 1920


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("dialogue-cache")


@pytest.fixture(scope="module")
def train2(cache):
    return dialogue.dialogue_sessions("train", limit=2, cache_dir=cache)


def test_text_alignment_at_word_onsets():
    v = dialogue.vocab()
    words = [dialogue.Word("eight", 3 * FRAME + 5, 5 * FRAME), dialogue.Word("twelve", 9 * FRAME, 11 * FRAME)]
    text = dialogue.align_text(words, 12)
    expected = [v.pad_id] * 12
    expected[3], expected[2] = v.id("eight"), v.epad_id
    expected[9], expected[8] = v.id("twelve"), v.epad_id
    assert text.tolist() == expected
    assert v.word(v.id("eight")) == "eight" and v.word(v.pad_id) is None and v.word(v.epad_id) is None


def test_vocab_matches_the_tiny_preset():
    from reference_model.config import load_lm_config

    cfg, v = load_lm_config("tiny"), dialogue.vocab()
    assert cfg.text_card == v.text_card and cfg.existing_text_padding_id == v.pad_id
    assert cfg.existing_text_end_padding_id == v.epad_id and len(v.tokens) <= v.text_card
    assert all(n in v.tokens for n in dialogue.NUMBERS)


def test_session_timing_rules(train2):
    gap = int(round(dialogue.ANSWER_GAP_S * dialogue.SAMPLE_RATE))
    for s in train2:
        user, model = s.user_audio(with_noise=False), s.model_audio()
        assert user.size == model.size == s.n_samples
        prev_end = 0
        for t in s.turns:
            assert (
                t.words[-1].text == dialogue.NUMBERS[t.number]
                and t.expected == dialogue.NUMBERS[t.number + 1]
            )
            assert t.answer.text == t.expected and t.answer.start % FRAME == 0
            assert t.user_end + gap <= t.answer.start < t.user_end + gap + FRAME
            for w in t.words:
                assert w.start >= prev_end and w.end > w.start  # words never overlap
                prev_end = w.end
            if t.pause is not None:  # the pause lies just before the number, longer than the gap
                assert t.pause[1] <= t.words[-1].start and t.pause[1] - t.pause[0] > gap
                assert np.abs(user[t.pause[0] + 200 : t.pause[1] - 200]).max() < 1e-3
            prev_end = t.answer.end
        # the model is silent outside its answers, and speaks in them
        speaking = np.zeros(s.n_samples, bool)
        for t in s.turns:
            speaking[t.answer.start : t.answer.end] = True
            assert np.sqrt(np.mean(model[t.answer.start : t.answer.end] ** 2)) > 0.01
        assert np.abs(model[~speaking]).max() < 1e-3
        text = s.text_tokens()
        words = [dialogue.vocab().word(int(x)) for x in text]
        assert [w for w in words if w] == [t.expected for t in s.turns]
        for t in s.turns:
            assert words[t.answer.start // FRAME] == t.expected


def test_heldout_voices_and_prompts_are_disjoint(cache):
    train_v = {v.variant for v in dialogue.voices("train")}
    held_v = {v.variant for v in dialogue.voices("heldout")}
    assert held_v and train_v and not train_v & held_v
    assert not set(dialogue.TRAIN_PROMPTS) & set(dialogue.HELDOUT_PROMPTS)
    held = dialogue.dialogue_sessions("heldout", limit=2, cache_dir=cache)
    assert all(s.voice.variant in held_v for s in held)
    assert all(t.prompt in dialogue.HELDOUT_PROMPTS for s in held for t in s.turns)
    assert any(t.pause for s in held for t in s.turns) and any(not t.pause for s in held for t in s.turns)


def test_cache_hit_and_determinism(cache, train2, monkeypatch):
    def no_synthesis(*a, **k):
        raise AssertionError("synthesised again")

    monkeypatch.setattr(dialogue.synth, "_espeak_word", no_synthesis)
    monkeypatch.setattr(dialogue.synth, "festival_say", no_synthesis)
    again = dialogue.dialogue_sessions("train", limit=2, cache_dir=cache)
    assert dialogue.sessions_sha256(again) == dialogue.sessions_sha256(train2)
    assert np.array_equal(again[0].user_audio(), train2[0].user_audio())
    figures = dialogue.corpus_figures(again)
    assert figures["sessions"] == 2 and figures["turns"] == sum(len(s.turns) for s in again)


def test_unknown_split():
    with pytest.raises(DataError, match="unknown dialogue split"):
        dialogue.dialogue_sessions("dev")


def test_tokenised_split_is_the_trainer_format(cache, train2, monkeypatch):
    folder = dialogue.tokenised_split("train", limit=2, cache_dir=cache, shard_size=1, log=lambda m: None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sessions"] == 2 and len(manifest["codec_sha256"]) == 64
    data = load_token_folder(folder, 17)
    assert len(data.grids) == 2
    for grid, s in zip(data.grids, train2):
        assert grid.shape == (17, dialogue.n_frames(s.n_samples))
        assert np.array_equal(grid[0].numpy(), s.text_tokens())
        assert (grid[1:] >= 0).all() and (grid[1:] < 2048).all()
    # cached: a second call neither loads the codec nor encodes
    import reference_model.codec as codec_pkg

    monkeypatch.setattr(codec_pkg, "load_codec", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert dialogue.tokenised_split("train", limit=2, cache_dir=cache) == folder
    # each grid's user voice, for the trainer's per-voice held-out accuracy
    assert data.groups() == ("user voice", [s.voice.variant for s in train2])


def test_a_manifest_without_voices_is_rewritten_not_its_shards(cache, train2, monkeypatch):
    folder = dialogue.tokenised_split("train", limit=2, cache_dir=cache, shard_size=1, log=lambda m: None)
    path = folder / "manifest.json"
    new = json.loads(path.read_text())
    old = {k: v for k, v in new.items() if k != "groups"}  # as caches built before it was recorded
    path.write_text(json.dumps(old))
    shards = {f.name: f.read_bytes() for f in folder.glob("*.safetensors")}
    import reference_model.codec as codec_pkg

    monkeypatch.setattr(codec_pkg, "load_codec", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert dialogue.tokenised_split("train", limit=2, cache_dir=cache, shard_size=1) == folder
    assert json.loads(path.read_text()) == new
    assert {f.name: f.read_bytes() for f in folder.glob("*.safetensors")} == shards


def test_sessions_at_another_gap_move_only_the_answers(cache, train2):
    far = dialogue.dialogue_sessions("train", limit=2, cache_dir=cache, answer_gap_s=0.8)
    same = dialogue.dialogue_sessions("train", limit=2, cache_dir=cache, answer_gap_s=dialogue.ANSWER_GAP_S)
    assert dialogue.sessions_sha256(same) == dialogue.sessions_sha256(train2)  # the default corpus
    gap = int(0.8 * dialogue.SAMPLE_RATE)
    for s, f in zip(train2, far):
        assert f.voice == s.voice and f.noise == s.noise and f.gain_db == s.gain_db
        for a, b in zip(s.turns, f.turns):
            assert [w.text for w in a.words] == [w.text for w in b.words] and a.number == b.number
            assert a.pause is None or b.pause[1] - b.pause[0] == a.pause[1] - a.pause[0]
            assert b.user_end + gap <= b.answer.start < b.user_end + gap + FRAME
        assert f.n_samples > s.n_samples
    assert dialogue.gap_suffix(None) == dialogue.gap_suffix(dialogue.ANSWER_GAP_S) == ""
    assert dialogue.gap_suffix(0.8) == "-gap800ms"
    with pytest.raises(DataError, match="answer gap"):
        dialogue.dialogue_sessions("train", limit=1, cache_dir=cache, answer_gap_s=-0.1)


def test_user_channel_under_noise_is_tokenised_and_cached(cache, train2, monkeypatch):
    from vemi_eval.data import dialogue_noise as dn

    clean = load_token_folder(dialogue.tokenised_split("train", limit=2, cache_dir=cache), 17).grids
    white = dn.fixed(dn.UserCondition("white", snr_db=0.0))
    codes = dn.user_codes("train", white, {"name": "t-white0"}, limit=2, cache_dir=cache, log=lambda m: None)
    assert len(codes) == 2
    for c, g in zip(codes, clean):
        assert c.shape[0] == 8 and c.shape[1] >= g.shape[1]
        assert (c[:, : g.shape[1]] != g[9:].numpy()).mean() > 0.3  # the user's codes moved
    with pytest.raises(DataError, match="RT60"):
        dn.UserCondition("reverb")
    with pytest.raises(DataError, match="unknown user-channel condition"):
        dn.UserCondition("rain", snr_db=3)
    import reference_model.codec as codec_pkg

    monkeypatch.setattr(codec_pkg, "load_codec", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = dn.user_codes("train", white, {"name": "t-white0"}, limit=2, cache_dir=cache)
    assert all(np.array_equal(a, b) for a, b in zip(codes, again))


class Stopped(Exception):
    pass


def test_user_channel_tokenising_interrupted_goes_on_from_its_partial_file(cache, train2, monkeypatch):
    from vemi_eval.data import dialogue_noise as dn

    white = dn.fixed(dn.UserCondition("white", snr_db=5.0))
    key = {"name": "t-white5-resume"}
    whole = dn.user_codes("train", white, {"name": "t-white5-whole"}, limit=2, cache_dir=cache, log=print)
    calls = []
    die_at = [2]
    real = dn.apply_condition

    def second_one_dies(*a, **k):
        calls.append(1)
        if len(calls) == die_at[0]:
            raise Stopped  # a training stopped while it tokenises
        return real(*a, **k)

    monkeypatch.setattr(dn, "apply_condition", second_one_dies)
    with pytest.raises(Stopped):
        dn.user_codes("train", white, key, limit=2, cache_dir=cache, log=lambda m: None, save_every=1)
    assert len(list(cache.rglob("*.partial.safetensors"))) == 1  # the first session, saved
    calls.clear()
    said = []
    again = dn.user_codes("train", white, key, limit=2, cache_dir=cache, log=said.append, save_every=1)
    assert len(calls) == 1, said  # only the session the interrupted run had not finished
    assert any("1/2 sessions done" in m for m in said)
    assert all(np.array_equal(a, b) for a, b in zip(whole, again))  # same as the uninterrupted run
    assert not list(cache.rglob("*.partial.safetensors"))
    # a partial file made under other conditions with the same key (a changed recipe) is not used
    other = dn.fixed(dn.UserCondition("white", snr_db=6.0))
    key = {"name": "t-white-changed"}
    calls.clear()
    with pytest.raises(Stopped):
        dn.user_codes("train", other, key, limit=2, cache_dir=cache, log=lambda m: None, save_every=1)
    calls.clear()
    said.clear()
    die_at[0] = 0
    dn.user_codes("train", white, key, limit=2, cache_dir=cache, log=said.append, save_every=1)
    assert len(calls) == 2 and any("other conditions" in m for m in said)


def test_heldout_plan_does_not_depend_on_the_training_split():
    rec = dialogue.recipe({"espeak": "e", "festival": "f"})
    grown = json.loads(json.dumps(rec))
    grown["splits"]["train"]["sessions"] *= 2
    grown["styles_per_voice"]["train"] += 4
    grown["train_prompts"].append("and after {n}")
    assert dialogue.split_hash("heldout", grown) == dialogue.split_hash("heldout", rec)
    assert dialogue.split_hash("train", grown) != dialogue.split_hash("train", rec)
    assert dialogue.recipe_hash(grown) != dialogue.recipe_hash(rec)  # the cache folder still moves
    moved = json.loads(json.dumps(rec))
    moved["splits"]["heldout"]["sessions"] += 1
    assert dialogue.split_hash("heldout", moved) != dialogue.split_hash("heldout", rec)


def test_tokenising_in_worker_processes_writes_the_same_shards(tmp_path):
    serial = dialogue.tokenised_split(
        "train", limit=2, cache_dir=tmp_path / "a", shard_size=1, log=lambda m: None
    )
    pooled = dialogue.tokenised_split(
        "train", limit=2, cache_dir=tmp_path / "b", shard_size=1, workers=2, log=lambda m: None
    )
    names = sorted(p.name for p in serial.glob("shard_*.safetensors"))
    assert names == sorted(p.name for p in pooled.glob("shard_*.safetensors")) and len(names) == 2
    for n in names:
        assert (serial / n).read_bytes() == (pooled / n).read_bytes()
    with pytest.raises(DataError, match="workers"):
        dialogue.tokenised_split("train", limit=2, cache_dir=tmp_path / "c", workers=0)


def test_voice_perturbation_resamples_words_and_tilts_the_channel():
    t = np.arange(2400) / dialogue.SAMPLE_RATE
    clip = (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    fast, slow = dialogue.Augment(speed=1.2).word(clip), dialogue.Augment(speed=0.8).word(clip)
    assert fast.size == 2000 and slow.size == 3000  # 1/speed as long

    def peak_hz(x: np.ndarray) -> float:
        return float(np.argmax(np.abs(np.fft.rfft(x))) * dialogue.SAMPLE_RATE / x.size)

    assert peak_hz(fast) == pytest.approx(240, abs=13) and peak_hz(slow) == pytest.approx(160, abs=9)
    noise = np.random.default_rng(0).standard_normal(24000).astype(np.float32)

    def high_share(x: np.ndarray) -> float:
        p = np.abs(np.fft.rfft(x)) ** 2
        return float(p[p.size // 2 :].sum() / p.sum())

    bright, dull = dialogue.Augment(tilt=0.5).channel(noise), dialogue.Augment(tilt=-0.5).channel(noise)
    for x in (bright, dull):
        assert np.sqrt(np.mean(x**2)) == pytest.approx(np.sqrt(np.mean(noise**2)), rel=1e-4)
    assert high_share(bright) > high_share(noise) + 0.1 > high_share(dull) + 0.2
    assert dialogue.NO_AUGMENT.word(clip) is clip and dialogue.NO_AUGMENT.channel(noise) is noise


def test_echo_adds_decaying_copies_at_the_delay_at_the_same_rms():
    click = np.zeros(24000, np.float32)
    click[100] = 1.0
    a = dialogue.Augment(echo_delay_s=0.05, echo_gain=0.5)
    assert a.has_echo and not a.identity
    out = a.channel(click)
    taps = np.nonzero(np.abs(out) > 1e-6)[0]
    assert list(taps) == [100 + k * 1200 for k in range(dialogue.ECHO_TAPS + 1)]
    assert out[taps] / out[100] == pytest.approx([0.5**k for k in range(dialogue.ECHO_TAPS + 1)])
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(click**2)), rel=1e-4)
    assert not dialogue.Augment(echo_delay_s=0.05).has_echo  # no gain, no echo


def test_augmented_split_times_the_perturbed_words_and_leaves_the_other_plans(cache, train2):
    rec = dialogue.recipe({"espeak": "e", "festival": "f"})
    without = json.loads(json.dumps(rec))
    for extra in ("train_aug", "train_aug_echo", "train_aug_mix"):
        del without["splits"][extra]
    for split in ("train", "heldout"):
        assert dialogue.split_hash(split, without) == dialogue.split_hash(split, rec)
    # the echo arm leaves train_aug's plan as it was
    no_echo = json.loads(json.dumps(rec))
    del no_echo["splits"]["train_aug_echo"], no_echo["splits"]["train_aug_mix"]
    assert dialogue.split_hash("train_aug", no_echo) == dialogue.split_hash("train_aug", rec)
    aug = dialogue.dialogue_sessions("train_aug", limit=6, cache_dir=cache)
    perturbed = [s for s in aug if not s.augment.identity]
    assert perturbed and all(s.augment.identity for s in train2)
    lo, hi = dialogue.SPLITS["train_aug"]["augment"]["speed"]
    train_voices = {v.id for v in dialogue.voices("train")}
    for s in aug:
        assert s.voice.id in train_voices and lo <= s.augment.speed <= hi
        for t in s.turns:
            for w in t.words:
                clip = dialogue.synth._user_clip(s.folder, s.voice, w.text)
                assert w.end - w.start == s.augment.word(clip).size
        assert s.user_audio(with_noise=False).size == s.n_samples
    plain = [dataclasses.replace(s, augment=dialogue.NO_AUGMENT) for s in perturbed]
    assert dialogue.sessions_sha256(perturbed) != dialogue.sessions_sha256(plain)


def test_echo_split_draws_echoes_in_some_perturbed_sessions(cache):
    cfg = dialogue.SPLITS["train_aug_echo"]["augment"]
    draws = [dialogue.sessions._draw_augment(cfg, "key", "train_aug_echo", i) for i in range(200)]
    echoed = [a for a in draws if a.has_echo]
    assert 40 < len(echoed) < 120  # p 0.8 x echo_p 0.5 of 200
    for a in echoed:
        assert cfg["echo_delay_s"][0] <= a.echo_delay_s <= cfg["echo_delay_s"][1]
        assert cfg["echo_gain"][0] <= a.echo_gain <= cfg["echo_gain"][1]
    # train_aug's draws are what they were: no echo, same speed and tilt
    plain = [
        dialogue.sessions._draw_augment(dialogue.SPLITS["train_aug"]["augment"], "k", "s", i)
        for i in range(50)
    ]
    assert not any(a.has_echo for a in plain)
    sessions = dialogue.dialogue_sessions("train_aug_echo", limit=4, cache_dir=cache)
    for s in sessions:
        assert s.user_audio(with_noise=False).size == s.n_samples


def test_crossovers_take_every_setting_from_one_parent_and_jitter_the_formants():
    parents = {
        "a": {"pitch": "pitch 80 120", "formant 1": "formant 1 100 100 100", "echo": "echo 50 80"},
        "b": {"pitch": "pitch 150 220", "formant 1": "formant 1 120 80 90", "tone": "tone 600 70"},
        "c": {"pitch": "pitch 100 150", "formant 1": "formant 1 0 90 100", "klatt": "klatt 3"},
    }
    mixes = espeak_mix.crossovers(parents, 40, 0.1)
    assert mixes == espeak_mix.crossovers(parents, 40, 0.1)  # each from its own seed
    assert [m.id for m in mixes[:2]] == ["mix0000", "mix0001"] and all(
        espeak_mix.is_mixed(m.id) for m in mixes
    )
    assert len({m.settings for m in mixes}) > 20
    for m in mixes:
        a, b = m.parents
        assert a != b and m.text().startswith(f"language variant\nname {m.id}\n")
        for line in m.settings:
            key = line.split()[0]
            if key != "formant":
                assert line in (parents[a].get(key), parents[b].get(key))
                continue
            options = [parents[p]["formant 1"].split() for p in (a, b)]
            freq, height = (int(w) for w in line.split()[2:4])
            assert any(
                (freq == 0 if int(o[2]) == 0 else 0.9 * int(o[2]) - 1 <= freq <= 1.1 * int(o[2]) + 1)
                and 0.9 * int(o[3]) - 1 <= height <= 1.1 * int(o[3]) + 1
                and line.split()[4] == o[4]
                for o in options
            )
    # the voice source travels whole: a whisper's "voicing 0" never without its parent's klatt breath
    whisper = {"klatt": "klatt 6", "breath": "breath 100", "voicing": "voicing 0", "pitch": "pitch 90 130"}
    voiced = {"pitch": "pitch 150 220", "formant 1": "formant 1 120 80 90"}
    for m in espeak_mix.crossovers({"w": whisper, "v": voiced}, 30, 0.1):
        source = [line.split()[0] for line in m.settings if line.split()[0] in espeak_mix.SOURCE_KEYS]
        assert source in ([], ["breath", "klatt", "voicing"])
    with pytest.raises(DataError, match="two parent"):
        espeak_mix.crossovers({"a": parents["a"]}, 1, 0.1)


def test_mixed_split_adds_crossover_speakers_bred_from_training_voices_only(cache, tmp_path):
    cfg = dialogue.SPLITS["train_aug_mix"]["mixed_voices"]
    mixes = dialogue.mixed_variants("train_aug_mix")
    held = {v.variant for v in dialogue.voices("heldout")}
    assert len(mixes) == cfg["count"] and not held & {p for m in mixes for p in m.parents}
    pool, train = dialogue.voices("train_aug_mix"), dialogue.voices("train")
    assert pool[: len(train)] == train  # the training voices, then one style per mix
    assert sorted(v.variant for v in pool if espeak_mix.is_mixed(v.variant)) == [m.id for m in mixes]
    assert dialogue.mixed_variants("train") == [] and dialogue.mixed_variants("heldout") == []
    sessions = dialogue.dialogue_sessions("train_aug_mix", limit=6, cache_dir=cache)
    mixed = [s for s in sessions if espeak_mix.is_mixed(s.voice.variant)]
    assert mixed and all(s.voice in pool for s in sessions)
    s = mixed[0]
    word = s.turns[0].words[0].text
    said = dialogue.synth._user_clip(s.folder, s.voice, word)
    for parent in mixes[int(s.voice.variant[3:])].parents:
        other = dataclasses.replace(s.voice, id=f"{parent}-x", variant=parent)
        assert not np.array_equal(said, dialogue.synth._espeak_word(other, word, s.folder))
    # a data folder built by other crossovers is refused, not reused with its word clips
    espeak_mix.data_dir(tmp_path, mixes[:2])
    with pytest.raises(DataError, match="other crossover voices"):
        espeak_mix.data_dir(tmp_path, mixes[:3])


def test_every_base_voice_keeps_its_variant(monkeypatch):
    dialogue.check_bases_take_variants(["m3", "f2"])  # the recipe's bases: each variant is its own speaker
    # espeak-ng 1.51 says "en-gb+m3" exactly as "en-gb" (recipe v2's British styles were one speaker)
    monkeypatch.setattr(dialogue.synth, "BASE_VOICES", ("en-us", "en-gb"))
    with pytest.raises(DataError, match="ignores variant 'm3' of base voice 'en-gb'"):
        dialogue.check_bases_take_variants(["m3"])
