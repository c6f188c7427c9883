"""The dialogue measurement on a user's own FDB-layout folder, with a scripted stand-in model whose words
and their times are known: each rule gives exactly its figures (they disagree on a greeting and on a short
backchannel), the exports are what FDB's scorers read, and B conversations stream in B batch items."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.duplex_fixtures import fdb_sample, pause, speechlike, turn_taking
from vemi_eval.aggregate import apply_validity
from vemi_eval.data import dialogue as dlg
from vemi_eval.measurements import MeasureContext, VariantRef
from vemi_eval.measurements._duplex import stream_batch
from vemi_eval.measurements.dialogue import measure_dialogue

SR, FS = 24000, 1920
V = dlg.vocab()


@pytest.fixture(autouse=True)
def one_thread():
    """As the runner runs a suite (threads = 1): two torch threads on a busy 2-core machine make one
    speaker embedding take seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Echo:
    """Plays back each item's own input ``max_delay`` frames late, and logs every reset."""

    sample_rate, frame_size, max_delay, device = SR, FS, 2, "cpu"

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.resets = []
        self.past = [[np.zeros(FS, np.float32)] * self.max_delay for _ in range(batch_size)]

    def reset(self, mask=None):
        rows = (
            range(self.batch_size) if mask is None else [i for i in range(self.batch_size) if bool(mask[i])]
        )
        self.resets.append(list(rows))
        for i in rows:
            self.past[i] = [np.zeros(FS, np.float32)] * self.max_delay

    def step(self, pcm):
        out = torch.zeros(self.batch_size, 1, FS)
        for i in range(self.batch_size):
            self.past[i].append(pcm[i, 0].numpy().copy())
            out[i, 0] = torch.from_numpy(self.past[i].pop(0))
        return torch.full((self.batch_size,), V.pad_id), out


def test_b_items_stream_b_different_conversations_each_reset_on_its_own():
    inputs = [np.full(n * FS - 100, 0.1 * (k + 1), np.float32) for k, n in enumerate((5, 2, 3, 1))]
    model = Echo(batch_size=2)
    got = {}
    stream_batch(model, len(inputs), lambda i: inputs[i], lambda i, s: got.setdefault(i, s))
    assert sorted(got) == [0, 1, 2, 3]
    for i, x in enumerate(inputs):
        s = got[i]
        frames = -(-x.size // FS) + model.max_delay
        assert len(s.tokens) == frames and s.audio.size == frames * FS
        played = s.audio[model.max_delay * FS :][: x.size]
        assert np.array_equal(played, x)  # its own conversation, from its own start
    # a full reset first; item 1 ends first (4 frames) and alone is reset for conversation 2 while item 0
    # goes on; then item 0 (7 frames) alone for conversation 3; a full reset at the end
    assert model.resets == [[0, 1], [1], [0], [0, 1]]


WORD_SPANS = {  # scripted speech of the stand-in: (start s, end s) -> words (the fake ASR's transcript)
    "turn_greeting": [((0.08, 1.28), ["hello", "there", "friend"]), ((2.0, 2.48), ["eight"])],
    "turn_backchannel": [((2.0, 2.32), ["mhm"])],
    "pause_talk": [((0.96, 2.16), ["well", "i", "think", "so"])],
}


class Scripted:
    """Says each sample's script: every word's token on the frame its span starts (spread over the span),
    and a buzz over its spans."""

    sample_rate, frame_size, max_delay, batch_size, device = SR, FS, 1, 1, "cpu"

    def __init__(self, order):
        self.order = list(order)
        self.o = -1
        self.lm = SimpleNamespace(
            text_padding_token_id=V.pad_id, end_of_text_padding_id=V.epad_id, text_card=32
        )
        self.codec = None

    def reset(self, mask=None):
        self.o = -1

    def _start(self):
        name = self.order.pop(0)
        n = 200
        self.tokens = [V.pad_id] * n
        self.audio = np.zeros(n * FS, np.float32)
        for (a, b), words in WORD_SPANS[name]:
            for k, w in enumerate(words):
                f = int(round((a + k * (b - a) / len(words)) * SR / FS))
                self.tokens[f] = V.id(w) if w in V.tokens else V.id("one")
            self.audio[int(a * SR) : int(b * SR)] = speechlike(b - a + 0.01, [(0, b - a + 0.01)], rate=SR)[
                : int(b * SR) - int(a * SR)
            ]

    def step(self, pcm):
        if self.o < 0:
            self._start()
        self.o += 1
        o = self.o
        if o == 0:  # inside its delay (the script starts later)
            return None, torch.zeros(1, 1, FS)
        return torch.tensor([self.tokens[o]]), torch.from_numpy(
            self.audio[o * FS : (o + 1) * FS].copy()
        ).view(1, 1, FS)


def fake_transcribe_spans(audio, sr, **kw):
    """The ASR of the scripted buzz: each loud stretch with the script's words spread over it."""
    loud = np.abs(audio) > 0.02
    # stretches of loud samples, gaps under 10 ms bridged
    idx = np.flatnonzero(loud)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 240)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks] + 1, idx[-1] + 1]
    spans_all = [span for spans in WORD_SPANS.values() for span in spans]
    out = []
    for a, b in zip(starts / sr, ends / sr):
        words = next(ws for (sa, sb), ws in spans_all if abs(sa - a) < 0.02 and abs(sb - b) < 0.05)
        step = (b - a) / len(words)
        out.append((a, b, [(w, a + k * step, a + (k + 1) * step) for k, w in enumerate(words)]))
    return out


def fake_onset(audio, sr):
    """The VAD onset of the scripted buzz (Silero does not call a buzz speech)."""
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return None if loud.size == 0 else loud[0] / sr


@pytest.fixture()
def fdb_root(tmp_path):
    root = tmp_path / "fdb"
    fdb_sample(root / "turn" / "1", "turn_taking.json", turn_taking(1.6), reference="eight")
    fdb_sample(root / "turn" / "2", "turn_taking.json", turn_taking(1.6))
    fdb_sample(root / "pause" / "1", "pause.json", pause(0.8, 1.2))
    fdb_sample(root / "turn" / "3", "turn_taking.json", None)  # a broken one: listed and skipped
    (root / "turn" / "3" / "turn_taking.json").write_text("[")
    sf.write(str(tmp_path / "voice.wav"), speechlike(2.0, [(0.1, 1.9)], rate=SR), SR)
    return root


def run(root, tmp_path, monkeypatch, order, **params):
    from vemi_eval.evaluators import asr

    monkeypatch.setattr(asr, "transcribe_spans", fake_transcribe_spans)
    monkeypatch.setattr(asr, "speech_onset_s", fake_onset)
    model = Scripted(order)
    ref = VariantRef("scripted", [], build=lambda **k: model, is_baseline=True)
    table = {"voice_reference": str(tmp_path / "voice.wav"), **params}
    ctx = MeasureContext("dialogue", "dialogue", ref, ref, table, 0, False, "cpu", data={"dir": str(root)})
    ctx.artifacts = tmp_path / "run" / "dialogue" / "scripted"
    records = measure_dialogue(ctx)
    by = {
        (r.metric, r.condition.get("task"), r.condition.get("rule"), r.condition.get("source"))
        + ((r.condition["part"],) if "part" in r.condition else ()): r
        for r in records
    }
    return ctx, by


ORDER = ["pause_talk", "turn_greeting", "turn_backchannel"]  # sorted sample folders: pause/1, turn/1, turn/2


def test_each_rule_gives_its_known_figures(fdb_root, tmp_path, monkeypatch):
    ctx, by = run(fdb_root, tmp_path, monkeypatch, ORDER)
    assert ctx.skipped_inputs == [
        {"input": "turn/3", "reason": "turn_taking.json: malformed JSON (line 1: Expecting value)"}
    ]
    st = "smooth_turn_taking"
    # FDB: the greeting takes the turn with latency 0; the lone backchannel is no take-over
    assert by[("turn_over_rate", st, "fdb", "asr")].value == 0.5
    lat = by[("response_latency_s", st, "fdb", "asr")]
    assert lat.value == 0.0 and lat.n == 1 and lat.extra["of"] == 2
    # a latency is taken given a take-over: the turn not taken is no failure, n counts take-overs, and
    # below min_samples the record is underpowered (no verdict) while the rate over samples stays valid
    assert lat.conditional_on == "take-overs" and lat.extra["failures"] == []
    assert lat.reason == "take-overs: 1 of 2"
    tor = by[("turn_over_rate", st, "fdb", "asr")]
    for r in (lat, tor):
        apply_validity(r, {"min_samples": 2})
    assert lat.status == "underpowered" and lat.value == 0.0
    assert lat.reason == "take-overs: 1 of 2; underpowered: n=1 take-overs < min_samples=2, no verdict"
    assert tor.status == "ok"
    # M3: the greeting ends before the turn end; the backchannel counts (short utterances allowed)
    assert by[("turn_over_rate", st, "m3", "asr")].value == 1.0
    assert by[("response_latency_s", st, "m3", "asr")].value == pytest.approx(0.4)
    # ours, from the text stream and from the ASR: the first word after the turn end, 0.4 s later
    for src in ("text", "asr"):
        assert by[("turn_over_rate", st, "vemi", src)].value == 1.0
        assert by[("response_latency_s", st, "vemi", src)].value == pytest.approx(0.4)
    for rule in ("fdb", "m3"):
        assert by[("turn_over_rate", "pause_handling", rule, "asr")].value == 1.0
    assert by[("turn_over_rate", "pause_handling", "vemi", "text")].value == 1.0
    assert by[("answer_accuracy", "reference_reply", "vemi", "text")].value == 1.0
    assert by[("answer_wer", "reference_reply", "vemi", "asr")].value == 0.0
    assert by[("speaker_similarity", None, None, "audio")].n == 3
    for r in by.values():
        assert r.condition.get("rule") in (None, "fdb", "m3", "vemi")


def test_exports_are_what_fdb_reads(fdb_root, tmp_path, monkeypatch):
    ctx, _ = run(fdb_root, tmp_path, monkeypatch, ORDER)
    out = ctx.artifacts
    for sid in ("turn/1", "turn/2", "pause/1"):
        folder = out / sid
        inp, rate = sf.read(str(fdb_root / sid / "input.wav"))
        wav, out_rate = sf.read(str(folder / "output.wav"))
        assert out_rate == rate and wav.shape == inp.shape  # as long as the input, at its rate
        doc = json.loads((folder / "output.json").read_text())
        assert isinstance(doc["text"], str) and doc["chunks"]
        for c in doc["chunks"]:
            assert set(c) == {"text", "timestamp"} and len(c["timestamp"]) == 2
            assert 0 <= c["timestamp"][0] <= c["timestamp"][1] <= len(wav) / rate
        stream = json.loads((folder / "text_stream.json").read_text())
        assert stream["words"] and stream["tokenizer"].startswith("tiny word vocabulary")
    assert (out / "turn/1/turn_taking.json").read_text() == (fdb_root / "turn/1/turn_taking.json").read_text()
    assert (out / "turn/1/reference.txt").read_text() == "eight"
    assert (out / "pause/1/pause.json").is_file()
    # what FDB's smooth turn-taking scorer reads: the first chunk's start against timestamp[0]
    first = json.loads((out / "turn/1/output.json").read_text())["chunks"][0]["timestamp"][0]
    assert first == pytest.approx(0.08, abs=0.01)


def test_the_greeting_can_be_ignored_and_both_options_are_recorded(fdb_root, tmp_path, monkeypatch):
    _, by = run(fdb_root, tmp_path, monkeypatch, ORDER, ignore_before_first_turn=True)
    # the user starts at 0.3 s: the greeting (0.08 s to 1.28 s) is dropped whole; what is left is a
    # one-word answer, under FDB's size rule no take-over: its TOR falls from 0.5 to 0 (the greeting was
    # the take-over) while ours keeps the answer's 0.4 s
    rec = by[("turn_over_rate", "smooth_turn_taking", "fdb", "asr")]
    assert rec.value == 0.0
    assert by[("response_latency_s", "smooth_turn_taking", "vemi", "text")].value == pytest.approx(0.4)
    assert rec.extra["greeting"] == {"prepend_silence_s": 0.0, "ignore_before_first_turn": True}


def test_interruption_relevance_is_said_to_be_llm_judged(tmp_path, monkeypatch):
    root = tmp_path / "fdb"
    fdb_sample(
        root / "int" / "1", "interrupt.json", [{"context": "a", "interrupt": "b", "timestamp": [0.3, 1.5]}]
    )
    sf.write(str(tmp_path / "voice.wav"), speechlike(2.0, [(0.1, 1.9)], rate=SR), SR)
    _, by = run(root, tmp_path, monkeypatch, ["turn_greeting"])
    rel = by[("relevance", "user_interruption", "fdb", None)]
    assert rel.status == "skipped" and rel.value is None and "cannot run offline" in rel.reason
    # after the interruption ends (1.5 s) the model says "eight" at 2.0 s
    assert by[("response_latency_s", "user_interruption", "fdb", "asr")].value is None  # one short word
    assert by[("response_latency_s", "user_interruption", "vemi", "text")].value == pytest.approx(0.5)
    # M3's stop latency: the greeting was playing at 0.3 s and ends at 1.28 s
    assert by[("stop_latency_s", "user_interruption", "m3", "asr")].value == pytest.approx(0.98, abs=0.02)


def fake_spans(audio, sr):
    """Silero's spans of the scripted buzz: its ASR segments' spans."""
    return [(a, b) for a, b, _ in fake_transcribe_spans(audio, sr)]


def test_fdb_v15_before_and_after_the_overlap_without_a_judge(tmp_path, monkeypatch):
    from vemi_eval.evaluators import asr

    monkeypatch.setattr(asr, "speech_spans_s", fake_spans)
    root = tmp_path / "fdb"
    meta = {"context_text": "a", "current_turn_text": "b", "timestamps": [0.3, 1.5]}
    fdb_sample(root / "user_interruption" / "1", "metadata.json", meta)
    sf.write(str(tmp_path / "voice.wav"), speechlike(2.0, [(0.1, 1.9)], rate=SR), SR)
    _, by = run(root, tmp_path, monkeypatch, ["turn_greeting"])
    by_part = {(r.metric, r.condition["part"]): r for r in by.values() if "part" in r.condition}
    # the overlap ends at 1.5 s: the split is at "eight" (2.0 s); before it "hello there friend" over
    # 1.2 s (150 words/min), after it "eight" over 0.48 s (125 words/min)
    before, after = by_part[("speaking_rate_wpm", "before")], by_part[("speaking_rate_wpm", "after")]
    assert before.value == pytest.approx(150, rel=0.05) and after.value == pytest.approx(125, rel=0.05)
    assert before.condition == {"task": "user_interruption", "rule": "fdb", "source": "asr", "part": "before"}
    for part in ("before", "after"):
        level = by_part[("level_mean_db", part)]
        assert level.n == 1 and level.value < 0 and level.higher_is_better is None
        assert level.conditional_on == "parts with speech"
    # the behaviour categories stay the judge's: said, not scored
    assert by[("behavior", "fdb_v1.5_overlap", "fdb", None)].status == "skipped"


def test_an_m3_conversation(tmp_path, monkeypatch):
    from tests.duplex_fixtures import m3_folder

    events = {
        "0": [
            {"event": "TURN", "time": [0.2, 1.6]},
            {"event": "BC", "time": [0.5, 0.7]},
            {"event": "TURN", "time": [3.2, 3.9]},
            {"event": "BARGE_IN", "time": [3.2, 3.5]},
        ],
        "1": [{"event": "TURN_SHIFT", "time": [1.6, 2.0]}],
    }
    root = m3_folder(tmp_path / "m3", [{"id": "conv1", "events": events}])
    sf.write(str(tmp_path / "voice.wav"), speechlike(2.0, [(0.1, 1.9)], rate=SR), SR)
    ctx, by = run(root, tmp_path, monkeypatch, ["turn_greeting"])
    st = "smooth_turn_taking"
    assert ("turn_over_rate", st, "fdb", "asr") not in by  # FDB's rules read a one-event sample's output
    assert by[("response_latency_s", st, "m3", "asr")].value == pytest.approx(0.4)
    assert by[("response_latency_s", st, "vemi", "text")].value == pytest.approx(0.4)
    # the user backchannels at 0.5 s over the greeting (until 1.28 s): the model went on for 0.78 s
    bc = by[("stop_latency_s", "user_backchannel", "m3", "asr")]
    assert bc.value == pytest.approx(0.78, abs=0.02) and bc.higher_is_better is True
    # the barge-in at 3.2 s finds the model silent ("eight" ended at 2.48 s): counted, not scored; no
    # event to take a stop latency over is no failure: underpowered, with no value
    barge = by[("stop_latency_s", "barge_in", "m3", "asr")]
    assert barge.value is None and barge.extra["of"] == 1 and barge.status == "underpowered"
    assert barge.reason.startswith("events the model was speaking at: 0 of 1")
    # the export holds the conversation's own line of the events file
    line = (ctx.artifacts / "conv1" / "test.jsonl").read_text()
    assert json.loads(line) == {"id": "conv1", "events": events}
