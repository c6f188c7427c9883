"""Measurement kind ``dialogue``: the model's own conversation, through the live full-duplex loop.

Each held-out session of the dialogue corpus (user voices and carrier phrasings never seen in training)
is streamed into the variant frame by frame (80 ms of user audio in; a text token and 80 ms of model
audio out, played at the same frame). Per turn ("what comes after seven" -> "eight"):

- ``answer_accuracy``: the first word of the text stream after the user's turn ends (until the next
  turn starts) is the expected number; along an SNR ladder on the user channel (condition {"snr_db"}).
- ``answer_wer``: faster-whisper's transcript of the model's decoded speech in that window (of the speech
  Silero VAD finds in it, as M3-DuplexBench transcribes; from measurement version 4) against the
  expected word (total errors / total words), with ``answer_wer_median`` and ``answer_wer_runaway_share``
  (turns above ``RUNAWAY_WER``) beside it: over one-word references a few turns where the ASR writes a
  sentence (a repetition loop, babble) can carry the mean, and these two say whether they do.
- ``corpus_answer_wer``: the ceilings of ``answer_wer``, the same ASR in the same windows on the corpus's
  own answers as synthesised ({"source": "corpus_speech"}) and through the variant's codec with the LM's
  codebooks ({"source": "corpus_codec"}): an LM that said every answer as the corpus does scores the latter;
  with its median and runaway share as ``answer_wer``.
- ``response_latency_s`` (median): start of the model's first word minus the end of the user's turn,
  clipped at 0 as Full-Duplex-Bench; from the text stream (the frame of the first word token, condition
  {"source": "text"}) and from the speech onset in the model's audio by Silero VAD ({"source": "vad"}).
  The training corpus's own gap is ``ANSWER_GAP_S`` (recorded in extra). A latency is taken given an
  answer (``conditional_on``): a turn with none is no event, not a failure; too few answers make the
  record underpowered (shown, no verdict) rather than the run invalid: accuracy carries the verdict.
- ``pause_turn_over_rate``: over turns with a pause inside them (before the number), the share where
  the model takes the turn during the pause (Full-Duplex-Bench's pause-handling TOR; lower is better).
  The model's answers are one word long, so "takes the turn" means any word token in the text stream
  or any ASR word in the model's audio during the pause, not FDB's ">= 1 s or > 3 words".
- ``speaker_similarity`` of the model's speech (its answers of a session, concatenated) to a reference
  recording of the model's voice (resemblyzer), and ``speaker_similarity_drift``: similarity of the
  second half of a session's answers minus the first half (paired over sessions).
- ``dnsmos_ovrl`` / ``dnsmos_sig`` / ``dnsmos_bak`` of the model's answers of a session.
  The voice measures are taken given speech (``conditional_on``): a session in which the model said
  nothing (a drift: nothing in one half) has no voice to score, so it is no event rather than a failure,
  and too few speaking sessions make these records underpowered, not the run invalid.

Each record has a bootstrap interval over turns (or sessions) and says "scored N of M"; a turn or
session that could not be scored (an evaluator error) is counted as a failure, never scored.

The text stream is read through one tokenizer interface (``data/text_stream.py``): the tiny LM's word
vocabulary, or the SentencePiece model a run names (``--text-tokenizer`` or ``text_tokenizer``); padding
ids come from the LM's config. ``batch_size`` conversations stream at once, one per batch item.

With ``--data`` (a user's own conversations in Full-Duplex-Bench's or M3-DuplexBench's layout) the
measurement streams those instead and scores each benchmark's rules beside ours: ``_dialogue_data.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import dialogue as dlg
from ..data.codec_roundtrip import roundtrip
from ..data.text_stream import decode_words
from ..evaluators import EvaluatorError, all_specs
from ..evaluators.dialogue_scoring import TurnResult, answer_windows, corpus_words, normalize_word, score_text  # noqa: F401
from ..records import MetricRecord
from ..stats import counts_by_group
from . import MeasureContext, at_least, measurement, merged_params, one_of
from ._dialogue_data import check_inputs, measure_on_data
from ._duplex import (
    Streamed,
    dialogue_record,
    frame_seconds,
    has_speech,
    stream_batch,
    stream_session,
    text_pad_ids,
    text_tokenizer,
    voice_reference,
    weights_of,
)

PARAMS: dict[str, Any] = {
    "sessions": 0,  # held-out sessions to stream (0: all of them)
    "snr_db": ["clean", 20, 10, 5],  # the SNR ladder on the user channel ("clean": no noise added)
    "noise": "pink",
    "asr_model": "",  # local faster-whisper folder; "" = the bundled tiny.en
    "beam_size": 5,
    "batch_size": 1,  # conversations streamed at once, one per batch item
    "text_tokenizer": "",  # SentencePiece model of the LM's text stream ("": the tiny word vocabulary)
    "voice_reference": "",  # WAV of the model's voice ("": the tiny model's, festival ked_diphone)
    # --- with --data (a user's own conversations; see data/duplex_layouts.py and _dialogue_data.py)
    "samples": 0,  # samples of the data directory to stream (0: all of them)
    "user_channel": 0,  # M3: the user's channel of the 2-channel wav (the model replaces the other)
    "prepend_silence_s": 0.0,  # silence streamed before each input (a greeting can go there; M3's option)
    "ignore_before_first_turn": False,  # drop the model's output before the user first speaks
    "backchannel_distribution": "",  # FDB's reference distribution JSON for the backchannel JSD
}
CLEAN = "clean"
# The voice measures are taken given the model's speech: a session it was silent in is no event.
SPOKE = "sessions in which the model spoke"
SPOKE_BOTH_HALVES = "sessions in which the model spoke in both halves"
__all__ = ["PARAMS", "Streamed", "measure_dialogue", "stream_session"]


# Every reference answer is one word: a turn above this WER heard more wrong words than the answer has
# (a repetition loop or babble), not one wrong word.
RUNAWAY_WER = 1.0

# --- scoring one session -----------------------------------------------------------------------------------
_record = dialogue_record


def wer_records(
    ctx: MeasureContext,
    metric: str,
    rows: list[float],
    of: int,
    *,
    condition: dict[str, Any],
    failures: list[str],
    extra: dict[str, Any],
) -> list[MetricRecord]:
    """Per-turn word errors three ways: the mean (``metric``: total errors / total words, every
    reference being one word), the median (``metric``_median) and the share of turns above
    ``RUNAWAY_WER`` (``metric``_runaway_share), each over the same scored turns."""
    common = dict(condition=condition, higher_is_better=False, failures=failures, extra=extra)
    runaway = [float(r > RUNAWAY_WER) for r in rows]
    return [
        _record(ctx, metric, "fraction", rows, of, **common),
        _record(ctx, f"{metric}_median", "fraction", rows, of, statistic="median", **common),
        _record(ctx, f"{metric}_runaway_share", "share", runaway, of, **common),
    ]


def _snr_label(x: Any) -> str:
    return CLEAN if str(x).lower() == CLEAN else f"{float(x):g}"


def _answer_audio(audio: np.ndarray, windows: list[tuple[int, int]]) -> list[np.ndarray]:
    return [audio[lo:hi] for lo, hi in windows]


# The model's own voice and speech quality stand for these claim metrics (the training-side enhancements
# 6.2 speaker consistency and 6.1 prosody are measured on the model's output, not on the codec's).
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "speaker_similarity": [("speaker_similarity", {})],
    "naturalness": [("dnsmos_ovrl", {})],
}


def accuracy_by_voice(turns: list[TurnResult], voice_of: dict[str, str]) -> dict[str, dict[str, int]]:
    """Correct answers and turns per held-out user voice (or per engine, with ``voice_of`` the engines)."""
    return counts_by_group(((voice_of[t.session], bool(t.correct), 1) for t in turns), total="turns")


def check_params(params: dict[str, Any]) -> None:
    at_least(params, "batch_size", 1)
    at_least(params, "prepend_silence_s", 0)
    one_of(params, "user_channel", (0, 1))
    one_of(params, "ignore_before_first_turn", (True, False))


def check_data(data: dict[str, Any], params: dict[str, Any]) -> None:
    """Before any work: the user's data directory (every sample read and checked; nothing usable is a
    DataError), the text tokenizer and the voice reference files the run names."""
    check_inputs(data, {**PARAMS, **params})


@measurement(
    "dialogue",
    params=PARAMS,
    # 2: latency and pause TOR per user engine; 3: a silent session is no voice event; 4: the ASR decodes
    # only the speech VAD finds in a window (answer WER, the corpus's answer WER and the ASR pause TOR)
    version=4,
    claims=CLAIMS,
    check=check_params,
    check_data=check_data,
    exact=("*",),
)
def measure_dialogue(ctx: MeasureContext) -> list[MetricRecord]:
    """The built-in held-out split, or the user's data directory (--data) when the run has one."""
    params = merged_params(ctx, PARAMS)
    if (ctx.data or {}).get("dir"):
        return measure_on_data(ctx, params)
    return measure_heldout(ctx, params)


def measure_heldout(ctx: MeasureContext, params: dict[str, Any]) -> list[MetricRecord]:
    from ..data.noise import make_noise, mix_at_snr
    from ..evaluators import asr as asr_ev
    from ..evaluators import dnsmos as dnsmos_ev
    from ..evaluators import speaker as spk

    model = ctx.variant.build(batch_size=int(params["batch_size"]))
    sr, fs = int(model.sample_rate), int(model.frame_size)
    tokenizer = text_tokenizer(model, (ctx.data or {}).get("text_tokenizer") or params["text_tokenizer"])
    pads = text_pad_ids(model)
    if sr != dlg.SAMPLE_RATE:
        raise ValueError(
            f"the dialogue corpus is at {dlg.SAMPLE_RATE} Hz; the variant's codec runs at {sr} Hz"
        )
    limit = int(params["sessions"]) or None
    sessions = dlg.dialogue_sessions("heldout", limit=limit)
    data = {"dialogue_heldout": dlg.sessions_sha256(sessions), "recipe_hash": sessions[0].folder.name}
    ladder = [_snr_label(x) for x in params["snr_db"]]
    specs = all_specs()
    corpus_gaps = [(t.answer.start - t.user_end) / sr for s in sessions for t in s.turns]
    common = {
        "data": data,
        "answer_gap_s": dlg.ANSWER_GAP_S,
        "corpus_latency_median_s": float(np.median(corpus_gaps)),  # what the corpus's model does
        "weights": weights_of(model),
        "text_tokenizer": tokenizer.name,
        "batch_size": int(params["batch_size"]),
    }

    # every (session, SNR) is its own conversation, streamed batch_size at a time
    jobs = [(sess, snr) for sess in sessions for snr in ladder]
    by_job: dict[int, list[TurnResult]] = {}
    clean_audio: dict[str, np.ndarray] = {}

    def load(j: int) -> np.ndarray:
        sess, snr = jobs[j]
        ctx.progress(f"dialogue: {sess.id} snr={snr} ({j + 1}/{len(jobs)})")
        user = sess.user_audio()
        if snr != CLEAN:
            noise = make_noise(str(params["noise"]), user.size, sr, sess.seed + 17)
            user = mix_at_snr(user, noise, float(snr), sr)
        return user

    def done(j: int, streamed: Streamed) -> None:
        sess, snr = jobs[j]
        words = decode_words(streamed.tokens, tokenizer, pads, frame_seconds(model))
        by_job[j] = score_text(sess, words, snr, fs, sr)
        if snr == ladder[0]:
            clean_audio[sess.id] = streamed.audio[: sess.n_samples]

    stream_batch(model, len(jobs), load, done)
    results: dict[str, list[TurnResult]] = {s: [] for s in ladder}
    for j, (_, snr) in enumerate(jobs):
        results[snr] += by_job[j]
    ctx.add_samples(
        {
            "session": t.session,
            "turn": t.turn,
            "snr_db": t.snr_db,
            "expected": t.expected,
            "said": t.said,
            "correct": t.correct,
            "latency_text_s": t.latency_text_s,
            "pause_words": t.pause_words,
        }
        for turns in results.values()
        for t in turns
    )
    records: list[MetricRecord] = []
    voice_of = {s.id: s.voice.variant for s in sessions}
    engine_of = {s.id: s.voice.engine for s in sessions}
    for snr in ladder:
        turns = results[snr]
        records.append(
            _record(
                ctx,
                "answer_accuracy",
                "fraction",
                [float(t.correct) for t in turns],
                len(turns),
                condition={"snr_db": snr, "source": "text"},
                higher_is_better=True,
                extra={
                    **common,
                    "by_voice": accuracy_by_voice(turns, voice_of),
                    "by_engine": accuracy_by_voice(turns, engine_of),
                },
            )
        )
    first = results[ladder[0]]
    cond0 = {"snr_db": ladder[0]}

    def text_timing(
        turns: list[TurnResult], condition: dict[str, Any], pause_always: bool
    ) -> list[TurnResult]:
        """Response latency and pause turn-over rate of ``turns`` from the text stream; returns the turns
        that paused. The pause record is FAILED when none paused if ``pause_always``; otherwise it is left
        out (no chance, no record)."""
        lat = [t.latency_text_s for t in turns if t.latency_text_s is not None]
        records.append(
            _record(
                ctx,
                "response_latency_s",
                "s",
                lat,
                len(turns),
                statistic="median",
                condition=condition,
                higher_is_better=False,
                extra=common,
                conditional_on="answers",  # a turn with no word in its window has no latency: not a failure
            )
        )
        paused = [t for t in turns if t.pause_words is not None]
        if paused or pause_always:
            records.append(
                _record(
                    ctx,
                    "pause_turn_over_rate",
                    "fraction",
                    [float(t.pause_words > 0) for t in paused],
                    len(paused),
                    condition=condition,
                    higher_is_better=False,
                    extra=common,
                )
            )
        return paused

    paused = text_timing(first, {**cond0, "source": "text"}, pause_always=True)
    # The same per user engine: a model that cannot follow one engine's users talks into their pauses (the
    # bundled pair on corpus v4: 2 of 48 espeak pauses, 21 of 48 festival ones), which the pooled rate hides
    # behind the other engine's. A few sessions may give an engine no pause at all.
    for engine in sorted(set(engine_of.values())):
        mine = [t for t in first if engine_of[t.session] == engine]
        text_timing(mine, {**cond0, "source": "text", "engine": engine}, pause_always=False)

    # The model's speech: ASR for WER against the expected word and for words inside pauses; its onset
    # by VAD for the latency (whisper's word times put a short clip's first word at its start: every turn
    # read 0 s when they were used).
    by_id = {s.id: s for s in sessions}
    wer_rows, asr_lat, asr_fail, pause_asr = [], [], [], []
    for t in first:
        sess = by_id[t.session]
        lo, hi = t.window
        try:
            wer_rows.append(turn_wer(t.expected, transcript(clean_audio[t.session][lo:hi], sr, params)))
            onset = asr_ev.speech_onset_s(clean_audio[t.session][lo:hi], sr)
            if onset is not None:
                asr_lat.append(onset)
            turn = sess.turns[t.turn]
            if turn.pause is not None:
                p0, p1 = turn.pause
                pause_asr.append(float(len(transcript(clean_audio[t.session][p0:p1], sr, params)) > 0))
        except EvaluatorError as e:
            asr_fail.append(f"{t.session}/{t.turn}: {e}")
    asr_extra = {**common, "evaluator": {"name": "asr", **specs["asr"].info()}}
    # every reference is one word, so WER (total errors / total words) is the mean of per-turn errors
    records += wer_records(
        ctx,
        "answer_wer",
        wer_rows,
        len(first),
        condition={**cond0, "source": "asr"},
        failures=asr_fail,
        extra=asr_extra,
    )
    records.append(
        _record(
            ctx,
            "response_latency_s",
            "s",
            asr_lat,
            len(first),
            statistic="median",
            condition={**cond0, "source": "vad"},
            higher_is_better=False,
            failures=asr_fail,  # a turn not scored either broke or had no speech (no answer: no event)
            extra=asr_extra,
            conditional_on="answers with speech",
        )
    )
    records.append(
        _record(
            ctx,
            "pause_turn_over_rate",
            "fraction",
            pause_asr,
            len(paused),
            condition={**cond0, "source": "asr"},
            higher_is_better=False,
            failures=asr_fail,
            extra=asr_extra,
        )
    )

    records += corpus_answer_wer(ctx, model, sessions, first, params, cond0, asr_extra)

    # The model's voice: similarity to its reference, drift over the session, DNSMOS.
    spk_extra = {**common, "evaluator": {"name": "speaker", **specs["speaker"].info()}}
    mos_extra = {**common, "evaluator": {"name": "dnsmos", **specs["dnsmos"].info()}}
    sims, drifts, spk_fail = [], [], []
    mos: dict[str, list[float]] = {"ovrl": [], "sig": [], "bak": []}
    mos_fail = []
    ref_audio, ref_name = voice_reference(params["voice_reference"], sr)
    try:
        ref = spk.embed(ref_audio, sr)
    except EvaluatorError as e:
        ref, spk_fail = None, [f"reference: {e}"]
    drift_fail: list[str] = []
    for sess in sessions:
        pieces = _answer_audio(clean_audio[sess.id], answer_windows(sess))
        whole = np.concatenate(pieces)
        if not has_speech(whole):
            continue  # silent in every answer window: no voice to score in this session (no event)
        half = len(pieces) // 2
        early, late = np.concatenate(pieces[:half]), np.concatenate(pieces[half:])
        if ref is not None:
            try:
                sims.append(spk.similarity(spk.embed(whole, sr), ref))
            except EvaluatorError as e:
                spk_fail.append(f"{sess.id}: {e}")
            if has_speech(early) and has_speech(late):  # a drift needs speech in both halves
                try:
                    sim_early, sim_late = (spk.similarity(spk.embed(c, sr), ref) for c in (early, late))
                    drifts.append(sim_late - sim_early)
                except EvaluatorError as e:
                    drift_fail.append(f"{sess.id}: {e}")
        try:
            m = dnsmos_ev.dnsmos(whole, sr)
            for key in mos:
                mos[key].append(float(m[key]))
        except EvaluatorError as e:
            mos_fail.append(f"{sess.id}: {e}")
    n = len(sessions)
    records.append(
        _record(
            ctx,
            "speaker_similarity",
            "cosine",
            sims,
            n,
            condition=cond0,
            higher_is_better=True,
            failures=spk_fail,
            extra={**spk_extra, "reference": ref_name},
            conditional_on=SPOKE,
        )
    )
    records.append(
        _record(
            ctx,
            "speaker_similarity_drift",
            "cosine",
            drifts,
            n,
            condition=cond0,
            higher_is_better=None,
            failures=spk_fail if ref is None else drift_fail,
            extra={**spk_extra, "definition": "second half of the answers - first half"},
            conditional_on=SPOKE_BOTH_HALVES,
        )
    )
    for key, vals in mos.items():
        records.append(
            _record(
                ctx,
                f"dnsmos_{key}",
                "MOS",
                vals,
                n,
                condition=cond0,
                higher_is_better=True,
                failures=mos_fail,
                extra=mos_extra,
                conditional_on=SPOKE,
            )
        )
    return records


def transcript(clip: np.ndarray, sr: int, params: dict[str, Any]) -> list[tuple[str, float, float]]:
    """The suite's ASR (its model folder and beam) on one clip: the words, with their times, of the speech
    Silero VAD finds in it (faster-whisper's VAD filter with M3-DuplexBench's settings, as ``--data``
    conversations are transcribed). Whisper on a whole window writes words into its silence: on the
    corpus's own answers as synthesised, WER 0.151 on whole windows against 0.057 on their speech
    (scripts/answer_asr_check.py, reports/training/answer-asr-check-istft-full2.json)."""
    from ..evaluators import asr as asr_ev

    model_dir = str(params["asr_model"]) or None
    spans = asr_ev.transcribe_spans(clip, sr, model_dir=model_dir, beam_size=int(params["beam_size"]))
    return [w for _, _, words in spans for w in words]


def turn_wer(expected: str, words: list[tuple[str, float, float]]) -> float:
    """Word errors of a transcript against one turn's expected answer, per reference word."""
    from ..evaluators.wer import error_counts

    r = error_counts(expected, " ".join(w for w, _, _ in words))
    return float(r["word_errors"]) / r["words"]


def corpus_answer_wer(
    ctx: MeasureContext,
    model,
    sessions: list[dlg.Session],
    turns: list[TurnResult],
    params: dict[str, Any],
    condition: dict[str, Any],
    extra: dict[str, Any],
) -> list[MetricRecord]:
    """The ceilings of ``answer_wer``: the same ASR, in the same answer windows, on the corpus's own
    answers (the model voice as synthesised: what the LM was trained to say) and on those answers through
    the variant's codec with the LM's codebooks. An LM that said every answer exactly as the corpus does
    would score the second; what is left above it is the codec's and the ASR's, not the LM's."""

    codec = getattr(model, "codec", None)
    sources: dict[str, dict[str, np.ndarray]] = {"corpus_speech": {}}
    if codec is not None:
        sources["corpus_codec"] = {}
    for sess in sessions:
        ref = sess.model_audio()
        sources["corpus_speech"][sess.id] = ref
        if codec is not None:
            sources["corpus_codec"][sess.id] = roundtrip(codec, ref, int(getattr(model, "dep_q", 8)))
    out = []
    for source, audio in sources.items():
        ctx.progress(f"dialogue: ASR of the corpus's answers ({source})")
        rows, fails = [], []
        for t in turns:
            lo, hi = t.window
            try:
                words = transcript(audio[t.session][lo:hi], dlg.SAMPLE_RATE, params)
                rows.append(turn_wer(t.expected, words))
            except EvaluatorError as e:
                fails.append(f"{t.session}/{t.turn}: {e}")
        out += wer_records(
            ctx,
            "corpus_answer_wer",
            rows,
            len(turns),
            condition={**condition, "source": source},
            failures=fails,
            extra=extra,
        )
    return out
