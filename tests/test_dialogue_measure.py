"""The dialogue measurement with a scripted stand-in model whose answers, latencies and pause behaviour
are known: the records must give exactly those figures (and score real evaluators on its audio)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vemi_eval.data import dialogue as dlg
from vemi_eval.measurements import MeasureContext, VariantRef
from vemi_eval.measurements.dialogue import answer_windows, measure_dialogue

FS = 1920
SESSIONS = 2
LADDER = ["clean", 10]


class LosslessCodec:
    """A stand-in codec whose "codes" are the waveform itself: its round trip changes nothing."""

    def encode(self, wav):
        return wav.clone()

    def decode(self, codes):
        return codes.clone()


class ScriptedModel:
    """Plays a script per (session, SNR) stream: the answer token (right or wrong) ``delay`` frames after
    the frame in which the user's turn ends, the model voice's clip of that word from the same frame, and
    optionally a word in the middle of a turn's pause."""

    sample_rate, frame_size, batch_size, max_delay = 24000, FS, 1, 1
    device = "cpu"

    def __init__(self, schedule):
        self.schedule = schedule  # [(session, script)] in streaming order
        self.stream = -1
        self.o = 0
        # the LM's config as far as the text stream needs it: its padding ids and text card
        self.lm = SimpleNamespace(text_padding_token_id=3, end_of_text_padding_id=0, text_card=32)
        self.codec = None

    def reset(self, mask=None):
        self.o = 0

    def _start(self):
        self.stream += 1
        sess, script = self.schedule[self.stream]
        n = -(-sess.n_samples // FS) + 4
        self.tokens = [None] + [dlg.vocab().pad_id] * (n - 1)
        self.audio = np.zeros(n * FS, np.float32)
        folder = sess.folder
        for k, turn in enumerate(sess.turns):
            word = script["words"][k]
            o = turn.user_end // FS + script["delays"][k]
            self.tokens[o] = dlg.vocab().id(word)
            clip = dlg._model_clip(folder, word)
            self.audio[o * FS : o * FS + clip.size] += clip
            if k in script["pause_talk"]:
                p0, p1 = turn.pause
                self.tokens[(p0 + p1) // 2 // FS] = dlg.vocab().id("one")

    def step(self, pcm):
        if self.o == 0:
            self._start()
        o = self.o
        self.o += 1
        tok = self.tokens[o] if o < len(self.tokens) else dlg.vocab().pad_id
        out = torch.from_numpy(self.audio[o * FS : (o + 1) * FS].copy()).view(1, 1, FS)
        return (None if tok is None else torch.tensor([tok])), out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("dlg-measure")


def test_scripted_model_gives_exactly_its_figures(cache, monkeypatch):
    monkeypatch.setenv("VEMI_CACHE", str(cache))
    sessions = dlg.dialogue_sessions("heldout", limit=SESSIONS)
    schedule, expect = [], {"clean": [], "10": []}
    latencies, pause_flags = [], []
    flags_by_engine: dict[str, list[float]] = {}
    for si, sess in enumerate(sessions):
        for snr in LADDER:
            words, delays, talk = [], [], set()
            for k, turn in enumerate(sess.turns):
                wrong = (snr == 10 and k % 2 == 1) or (si == 0 and k == 3)
                # a wrong answer: another number than N + 1 (wrapping past "twenty")
                words.append(dlg.NUMBERS[(turn.number + (2 if wrong else 1)) % len(dlg.NUMBERS)])
                delays.append(2 + k)  # 2..5 frames after the frame holding the user's end
                if snr == "clean":
                    latencies.append(((turn.user_end // FS + 2 + k) * FS - turn.user_end) / 24000)
                    if turn.pause is not None:
                        pause_flags.append(float(k == 0 or si == 1))
                        flags_by_engine.setdefault(sess.voice.engine, []).append(pause_flags[-1])
                        if k == 0 or si == 1:
                            talk.add(k)
                expect[str(snr)].append(not wrong)
            schedule.append((sess, {"words": words, "delays": delays, "pause_talk": talk}))
    model = ScriptedModel(schedule)
    model.codec = LosslessCodec()
    ref = VariantRef("scripted", [], build=lambda **k: model, is_baseline=True)
    ctx = MeasureContext(
        "dialogue", "dialogue", ref, ref, {"sessions": SESSIONS, "snr_db": LADDER}, 0, True, "cpu"
    )
    records = {(r.metric, tuple(sorted(r.condition.items()))): r for r in measure_dialogue(ctx)}

    def rec(metric, **cond):
        return records[(metric, tuple(sorted(cond.items())))]

    n_turns = sum(len(s.turns) for s in sessions)
    for snr in ("clean", "10"):
        r = rec("answer_accuracy", snr_db=snr, source="text")
        assert r.value == pytest.approx(np.mean(expect[snr])) and r.n == n_turns
        assert r.extra["scored_text"] == f"scored {n_turns} of {n_turns}" and r.ci_low <= r.value <= r.ci_high
        # per voice: the scripted right answers, counted by the session's user voice
        want: dict[str, list[int]] = {}
        flat = iter(expect[snr])
        for sess in sessions:
            for _ in sess.turns:
                w = want.setdefault(sess.voice.variant, [0, 0])
                w[0] += int(next(flat))
                w[1] += 1
        assert r.extra["by_voice"] == {v: {"correct": c, "turns": n} for v, (c, n) in sorted(want.items())}
    lat = rec("response_latency_s", snr_db="clean", source="text")
    assert lat.value == pytest.approx(float(np.median(latencies)))
    tor = rec("pause_turn_over_rate", snr_db="clean", source="text")
    assert tor.value == pytest.approx(np.mean(pause_flags)) and tor.n == len(pause_flags)
    # per user engine (session 0 is an espeak user's, session 1 a festival user's): each its own figure
    assert set(flags_by_engine) == {dlg.ESPEAK, dlg.FESTIVAL}
    for engine, flags in flags_by_engine.items():
        mine = rec("pause_turn_over_rate", snr_db="clean", source="text", engine=engine)
        assert mine.value == pytest.approx(np.mean(flags)) and mine.n == len(flags)
        assert rec("response_latency_s", snr_db="clean", source="text", engine=engine).n > 0
    # real evaluators on the scripted audio: scored, and what they say is about that audio
    wer = rec("answer_wer", snr_db="clean", source="asr")
    assert wer.n > 0 and wer.extra["of"] == n_turns and 0 <= wer.value <= 1
    # beside the mean, over the same turns: the median and the share of runaway turns (WER above 1)
    med = rec("answer_wer_median", snr_db="clean", source="asr")
    runaway = rec("answer_wer_runaway_share", snr_db="clean", source="asr")
    assert med.n == runaway.n == wer.n
    assert med.value == pytest.approx(float(np.median(wer.samples)))
    assert runaway.value == pytest.approx(float(np.mean(np.asarray(wer.samples) > 1.0)))
    # the onset of the scripted speech by VAD: after the user's end (whisper's word times read 0 here)
    vad_lat = rec("response_latency_s", snr_db="clean", source="vad")
    assert vad_lat.n > 0 and vad_lat.value > 0.1 and abs(vad_lat.value - lat.value) < 0.3
    # the ceilings: the corpus's own answers (the words the script plays, at the corpus's gap), as
    # synthesised and through a lossless codec, scored on every turn alike
    speech = rec("corpus_answer_wer", snr_db="clean", source="corpus_speech")
    through = rec("corpus_answer_wer", snr_db="clean", source="corpus_codec")
    assert speech.n == through.n == n_turns and speech.samples == through.samples
    assert 0 <= speech.value <= 1
    sim = rec("speaker_similarity", snr_db="clean")
    assert sim.n == SESSIONS and sim.value > 0.6
    assert rec("dnsmos_ovrl", snr_db="clean").n == SESSIONS
    assert rec("speaker_similarity_drift", snr_db="clean").n == SESSIONS


def test_silent_model_is_never_scored_as_a_value(cache, monkeypatch):
    """A model that says nothing: accuracy 0 (every turn counted), latency/voice figures not scored."""
    monkeypatch.setenv("VEMI_CACHE", str(cache))

    class Silent(ScriptedModel):
        def step(self, pcm):
            return torch.tensor([dlg.vocab().pad_id]), torch.zeros(1, 1, FS)

    model = Silent([])
    ref = VariantRef("silent", [], build=lambda **k: model, is_baseline=True)
    ctx = MeasureContext(
        "dialogue", "dialogue", ref, ref, {"sessions": 1, "snr_db": ["clean"]}, 0, True, "cpu"
    )
    records = {(r.metric, r.condition.get("source")): r for r in measure_dialogue(ctx)}
    assert records[("answer_accuracy", "text")].value == 0.0
    lat = records[("response_latency_s", "text")]
    # no answer, no latency to take: underpowered (no value, no verdict), not a failure of the measurement
    assert lat.value is None and lat.status == "underpowered"
    assert lat.extra["scored_text"] == "answers: 0 of 4"
    # no speech, no voice to score: each voice record is underpowered with no value, not failed
    for metric in ("speaker_similarity", "speaker_similarity_drift", "dnsmos_ovrl"):
        voice = records[(metric, None)]
        assert voice.value is None and voice.status == "underpowered" and voice.extra["failures"] == []
        assert (
            voice.extra["scored_text"].startswith("sessions in which the model spoke")
            and voice.extra["of"] == 1
        )
    assert records[("answer_wer", "asr")].value == 1.0
    # silence is one error per one-word answer: WER 1 on every turn, none of them a runaway
    assert records[("answer_wer_median", "asr")].value == 1.0
    assert records[("answer_wer_runaway_share", "asr")].value == 0.0
    # no codec on this stand-in: the speech ceiling only, scored on every turn whatever the model says
    assert records[("corpus_answer_wer", "corpus_speech")].n == 4
    assert ("corpus_answer_wer", "corpus_codec") not in records


def test_answer_windows_cover_the_gaps(cache):
    sess = dlg.dialogue_sessions("heldout", limit=1, cache_dir=cache)[0]
    wins = answer_windows(sess)
    for (lo, hi), turn, nxt in zip(wins, sess.turns, list(sess.turns[1:]) + [None]):
        assert lo == turn.user_end and lo < turn.answer.start < hi
        assert hi == (nxt.words[0].start if nxt else sess.n_samples)
