"""The dialogue measurement on a user's own conversations (--data): Full-Duplex-Bench and M3-DuplexBench
layouts (``data/duplex_layouts.py``), streamed live through the variant, scored under each benchmark's
rules beside ours (``evaluators/duplex_rules.py``), and exported so that their scorers read the model's
output unchanged.

Per sample: the user's stream (``prepend_silence_s`` of silence first, where a greeting can go: M3's
``--prepend-silence-sec``) goes through the live loop; the model's channel, cut back to the input's
length, is its output. With ``ignore_before_first_turn``, what the model says before the user first speaks
(M3: the first TURN; FDB: the input's first speech by Silero VAD) is dropped from the words, the audio and
the exports, each stretch of its speech (an ASR segment) that started before then to its end. The
model's words come from two places: its text stream (decoded by the run's tokenizer,
``source=text``) and the suite's ASR on its audio, span by span of Silero VAD (``source=asr``: the words
``output.json`` holds, and M3's segments).

Records carry ``task=`` (smooth_turn_taking, pause_handling, user_interruption, backchannel,
user_backchannel, barge_in, reference_reply) and ``rule=`` (fdb, m3, vemi) in their condition:

- ``turn_over_rate`` (smooth turns and interruptions: higher is better; pauses and the model's
  backchannel task: lower), ``response_latency_s`` (fdb, m3: mean as they report it; vemi: median);
- ``stop_latency_s`` (m3) after a user's backchannel (higher is better: the model should go on), a
  barge-in and an FDB interruption (lower is better);
- ``backchannel_frequency_hz`` and ``backchannel_jsd`` (fdb; the JSD against ``backchannel_distribution``,
  FDB's ``icc_gt_distribution.json`` format ``{sample folder name: [histogram]}``);
- ``answer_accuracy`` (the text stream's first words after the user's turn against ``reference.txt``) and
  ``answer_wer`` (the ASR of the reply against it);
- ``speaker_similarity`` of the model's speech to the voice reference;
- ``relevance`` (FDB's interruption) and ``behavior`` (FDB v1.5) are LLM-judged: recorded as skipped with
  that reason, never scored.

FDB's rules read a sample's whole output, so they are scored on FDB-layout samples only; M3's and ours
read windows and are scored on both. M3 teacher-forces the original partner's channel before each event;
here the model speaks for itself the whole conversation, so a stop latency is scored only where the model
was speaking when the user backchannelled or barged in (not scored otherwise, and counted).

A latency is a statistic given an event (a response latency given a take-over, a stop latency given the
model speaking): its n counts those events (``conditional_on``), an event that did not happen is no
failure, and fewer events than the suite's ``min_samples`` make the record underpowered (shown with n and
the threshold, never a verdict) instead of the run invalid; the rates over samples carry the verdict.

Exports, under ``<run>/dialogue/<variant>/<sample id>/``: ``output.wav`` (the model's channel, as long as
``input.wav`` and at its rate), ``output.json`` (FDB's format: the ASR words of ``output.wav``; for an
interruption, those after it ends, as FDB's ``get_transcript/asr.py --task user_interruption`` writes),
``text_stream.json`` (the text stream's words with their times) and copies of the sample's annotation
files. FDB's ``eval_smooth_turn_taking.py`` / ``eval_pause_handling.py`` run on the task's folder as they are.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataError
from ..data.duplex_layouts import (
    BACKCHANNEL,
    BARGE_IN,
    INTERRUPTION,
    PAUSE,
    SMOOTH_TURN,
    USER_BACKCHANNEL,
    DuplexSample,
    load_duplex_data,
)
from ..data.text_stream import SentencePieceTokenizer, TimedWord, decode_words
from ..evaluators import EvaluatorError, all_specs, overlap_split
from ..evaluators import duplex_rules as rules
from ..records import SKIPPED, MetricRecord
from ..storage import write_atomic
from . import MeasureContext
from ._duplex import (
    Streamed,
    dialogue_record,
    frame_seconds,
    has_speech,
    stream_batch,
    text_pad_ids,
    text_tokenizer,
    voice_reference,
    weights_of,
)

REFERENCE_TASK = "reference_reply"
LLM_JUDGED = "LLM-judged in its benchmark (an online model): cannot run offline, not scored"
# metric -> (unit, statistic by rule, higher_is_better by task)
UNITS = {
    "turn_over_rate": "fraction",
    "response_latency_s": "s",
    "stop_latency_s": "s",
    "backchannel_frequency_hz": "Hz",
    "backchannel_jsd": "distance",
    "answer_accuracy": "fraction",
    "answer_wer": "fraction",
}
LOWER_TOR = {PAUSE, BACKCHANNEL}  # tasks where taking the turn is the failure
# statistics taken given an event, and the events their n counts (few of them: underpowered, not invalid)
CONDITIONAL = {
    "response_latency_s": "take-overs",
    "stop_latency_s": "events the model was speaking at",
    **{m: f"parts with {'voiced ' if m.startswith('pitch') else ''}speech" for m in overlap_split.MEASURES},
}
UNITS.update(overlap_split.MEASURES)


@dataclass(frozen=True)
class Outcome:
    """One event of one sample under one rule: a value, or None with why it was not scored."""

    sample: str
    task: str
    rule: str
    source: str
    metric: str
    value: float | None
    why: str | None = None
    no_event: bool = False  # the event a conditional statistic needs did not happen: not a failure
    part: str = ""  # FDB v1.5's before/after split: "before" or "after" the overlap


# --- before any work ----------------------------------------------------------------------------------
def load_distribution(path: str | Path) -> dict[str, list[float]]:
    """FDB's backchannel reference distribution: ``{sample folder name: [histogram of 200 ms bins]}``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"backchannel_distribution {p}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"backchannel_distribution {p}: malformed JSON (line {e.lineno}: {e.msg})") from None
    ok = isinstance(doc, dict) and all(
        isinstance(v, list) and len(v) >= 2 and all(isinstance(x, (int, float)) for x in v)
        for v in doc.values()
    )
    if not ok or not doc:
        raise DataError(f"backchannel_distribution {p}: expected {{sample: [histogram, >= 2 numbers]}}")
    return {str(k): [float(x) for x in v] for k, v in doc.items()}


def check_inputs(data: dict[str, Any], params: dict[str, Any]) -> None:
    """Every file the run names, read and checked (DataError: exit 2 before any work)."""
    from ..data.audio import AudioError, load_audio

    tokenizer = data.get("text_tokenizer") or params["text_tokenizer"]
    if tokenizer:
        SentencePieceTokenizer(tokenizer)
    if params["voice_reference"]:
        try:
            load_audio(params["voice_reference"], 16000)
        except AudioError as e:
            raise DataError(f"voice_reference {params['voice_reference']}: {e}") from None
    if params["backchannel_distribution"]:
        load_distribution(params["backchannel_distribution"])
    if data.get("dir"):
        load_duplex_data(data["dir"], user_channel=int(params["user_channel"]), limit=int(params["samples"]))


# --- scoring one sample -------------------------------------------------------------------------------
def first_user_speech_s(sample: DuplexSample, user: np.ndarray, sr: int) -> float:
    """When the user first speaks: M3's first TURN, else the input's first speech (Silero VAD)."""
    if sample.user_turns:
        return sample.user_turns[0][0]
    from ..evaluators import asr as asr_ev

    onset = asr_ev.speech_onset_s(user, sr)
    return 0.0 if onset is None else onset


def window_end(sample: DuplexSample, t: float) -> float:
    """Where a response to a turn ending at ``t`` can be: until the user's next turn (M3), else the end."""
    return next((a for a, _ in sample.user_turns if a > t), sample.duration_s)


def normalize(text: str) -> list[str]:
    return ["".join(c for c in w.lower() if c.isalnum() or c == "'") for w in text.split()]


def score_sample(
    sample: DuplexSample,
    text_words: list[TimedWord],
    segments: list[rules.Segment] | None,
    asr_error: str | None,
    distribution: dict[str, list[float]] | None,
    vad_spans: list[tuple[float, float]] | None = None,
) -> list[Outcome]:
    """Every rule on every event of a sample. ``segments`` None: the ASR failed (``asr_error``), so its
    rules are counted and not scored. ``vad_spans``: Silero VAD's speech spans of the output (FDB's
    backchannel task)."""
    out: list[Outcome] = []
    sid, fdb = sample.id, sample.layout == "fdb"
    asr_words = [w for s in segments for w in s.words] if segments is not None else []
    sources = {"text": text_words, "asr": asr_words}

    def add(task: str, rule: str, source: str, metric: str, value: float | None, why: str | None = None):
        no_event = value is None and why is not None and metric in CONDITIONAL
        if source == "asr" and segments is None:
            value, why, no_event = None, f"ASR failed: {asr_error}", False
        out.append(Outcome(sid, task, rule, source, metric, value, why, no_event))

    def turn(task: str, rule: str, source: str, score: rules.TurnScore) -> None:
        add(task, rule, source, "turn_over_rate", float(score.taken))
        why = None if score.taken else "the turn was not taken"
        add(task, rule, source, "response_latency_s", score.latency_s, why)

    def stop(task: str, t: float) -> None:
        lat = rules.m3_stop_latency(segments or [], t)
        why = None if lat is not None else "the model was not speaking"
        add(task, "m3", "asr", "stop_latency_s", lat, why)

    for ev in sample.events:
        if ev.task == SMOOTH_TURN:
            if fdb:
                turn(ev.task, "fdb", "asr", rules.fdb_smooth_turn(asr_words, ev.start))
            turn(ev.task, "m3", "asr", rules.m3_smooth_turn(segments or [], ev.start))
            for src, words in sources.items():
                turn(ev.task, "vemi", src, rules.vemi_response(words, ev.start, window_end(sample, ev.start)))
        elif ev.task == PAUSE:
            if fdb:
                add(ev.task, "fdb", "asr", "turn_over_rate", float(rules.fdb_pause(asr_words)))
            add(
                ev.task,
                "m3",
                "asr",
                "turn_over_rate",
                float(rules.m3_pause(segments or [], ev.start, ev.end)),
            )
            for src, words in sources.items():
                add(ev.task, "vemi", src, "turn_over_rate", float(rules.vemi_pause(words, ev.start, ev.end)))
        elif ev.task == INTERRUPTION:
            if fdb:
                turn(ev.task, "fdb", "asr", rules.fdb_interruption(asr_words, ev.end))
            stop(ev.task, ev.start)
            for src, words in sources.items():
                turn(ev.task, "vemi", src, rules.vemi_response(words, ev.end, sample.duration_s))
        elif ev.task == BACKCHANNEL:
            key = Path(sid).name
            ref = None if distribution is None else distribution.get(key)
            bc = rules.fdb_backchannel(vad_spans or [], asr_words, sample.duration_s, ref)
            add(ev.task, "fdb", "asr", "turn_over_rate", float(bc.take_over))
            add(ev.task, "fdb", "asr", "backchannel_frequency_hz", bc.frequency_hz)
            if distribution is not None:
                why = None if ref is not None else f"no reference distribution for {key!r}"
                add(ev.task, "fdb", "asr", "backchannel_jsd", bc.jsd, why)
        elif ev.task in (USER_BACKCHANNEL, BARGE_IN):
            stop(ev.task, ev.start)
    if sample.reference:
        t = next((e.start for e in sample.events if e.task == SMOOTH_TURN), max(e.end for e in sample.events))
        end = window_end(sample, t)
        ref = normalize(sample.reference)
        said = [w for w in normalize(" ".join(w.text for w in text_words if t <= w.start < end)) if w]
        add(REFERENCE_TASK, "vemi", "text", "answer_accuracy", float(said[: len(ref)] == ref))
        if segments is not None:
            from ..evaluators.wer import error_counts

            heard = " ".join(w.text for w in asr_words if t <= w.start < end)
            r = error_counts(sample.reference, heard)
            add(REFERENCE_TASK, "vemi", "asr", "answer_wer", r["word_errors"] / max(1, r["words"]))
        else:
            add(REFERENCE_TASK, "vemi", "asr", "answer_wer", None)
    return out


def is_v15(sample: DuplexSample) -> bool:
    """An FDB v1.5 overlap sample (its annotation is ``metadata.json``)."""
    return sample.layout == "fdb" and any(f.name == "metadata.json" for f in sample.annotation_files)


def before_after_outcomes(
    sample: DuplexSample,
    audio: np.ndarray,
    sr: int,
    segments: list[rules.Segment] | None,
    vad: list[tuple[float, float]] | None,
    asr_error: str | None,
) -> list[Outcome]:
    """FDB v1.5's general_before_after on an overlap sample: each measure of the output before and after
    the overlap (``evaluators/overlap_split.py``); a part without speech is no event, an ASR or VAD
    failure is counted, neither is scored."""
    if not is_v15(sample):
        return []
    out = []
    for ev in sample.events:
        ba = None
        if segments is not None and vad is not None:
            words = [w for seg in segments for w in seg.words]
            ba = overlap_split.before_after(audio, sr, words, vad, ev.end)
        for part in ("before", "after"):
            measures = None if ba is None else getattr(ba, part)
            for metric in overlap_split.MEASURES:
                source = "asr" if metric == "speaking_rate_wpm" else "audio"
                if measures is None:
                    value, why, none = None, f"ASR failed: {asr_error}", False
                else:
                    value = getattr(measures, metric)
                    what = "voiced speech" if metric.startswith("pitch") else "speech"
                    why, none = (None, False) if value is not None else (f"no {what} {part} the split", True)
                out.append(Outcome(sample.id, ev.task, "fdb", source, metric, value, why, none, part))
    return out


# --- exports ------------------------------------------------------------------------------------------
def _word_list(words: list[TimedWord]) -> list[dict[str, Any]]:
    return [{"text": w.text, "timestamp": [round(w.start, 4), round(w.end, 4)]} for w in words]


def export_sample(
    folder: Path,
    sample: DuplexSample,
    audio: np.ndarray,
    sr: int,
    asr_words: list[TimedWord] | None,
    text_words: list[TimedWord],
    text_info: dict[str, Any],
) -> None:
    """The files FDB's scorers read (``output.wav``, ``output.json``), the text stream, and the sample's
    annotations, written whole (through a temporary file) into ``folder``."""
    import soundfile as sf

    from ..data.audio import resample

    folder.mkdir(parents=True, exist_ok=True)
    out = resample(audio, sr, sample.native_rate)[: sample.n_native]
    out = np.pad(out, (0, sample.n_native - out.size))
    tmp = folder / "output.wav.tmp"
    sf.write(str(tmp), np.clip(out, -1.0, 1.0), sample.native_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, folder / "output.wav")
    if asr_words is not None:
        after = next((e.end for e in sample.events if e.task == INTERRUPTION), None)
        words = rules.fdb_after(asr_words, after) if after is not None else asr_words
        doc = {"text": " ".join(w.text for w in words), "chunks": _word_list(words)}
        write_atomic(folder / "output.json", json.dumps(doc, indent=1))
    write_atomic(
        folder / "text_stream.json", json.dumps({**text_info, "words": _word_list(text_words)}, indent=1)
    )
    if sample.layout == "m3":  # the conversation's own line of the events file
        write_atomic(folder / sample.annotation_files[0].name, json.dumps(sample.annotation) + "\n")
    else:
        for f in sample.annotation_files:
            shutil.copyfile(f, folder / f.name)


# --- the measurement ----------------------------------------------------------------------------------
def measure_on_data(ctx: MeasureContext, params: dict[str, Any]) -> list[MetricRecord]:
    from ..evaluators import asr as asr_ev
    from ..evaluators import speaker as spk

    data = load_duplex_data(
        ctx.data["dir"], user_channel=int(params["user_channel"]), limit=int(params["samples"]) or None
    )
    for name, why in data.skipped:
        ctx.skip_input(name, why)
    model = ctx.variant.build(batch_size=int(params["batch_size"]))
    sr = int(model.sample_rate)
    tokenizer = text_tokenizer(model, (ctx.data or {}).get("text_tokenizer") or params["text_tokenizer"])
    pads, frame_s = text_pad_ids(model), frame_seconds(model)
    prepend = int(round(float(params["prepend_silence_s"]) * sr))
    ignore_greeting = bool(params["ignore_before_first_turn"])
    dist = (
        load_distribution(params["backchannel_distribution"]) if params["backchannel_distribution"] else None
    )
    ref_audio, ref_name = voice_reference(params["voice_reference"], sr)
    asr_dir = str(params["asr_model"]) or None
    greeting = {
        "prepend_silence_s": float(params["prepend_silence_s"]),
        "ignore_before_first_turn": ignore_greeting,
    }
    text_info = {"tokenizer": tokenizer.name, "frame_s": frame_s, **greeting}

    outcomes: list[Outcome] = []
    cut_of: dict[int, float] = {}
    n_of: dict[int, int] = {}
    spoken: dict[str, np.ndarray] = {}

    def load(i: int) -> np.ndarray:
        s = data.samples[i]
        ctx.progress(f"dialogue: {s.id} ({i + 1}/{len(data.samples)})")
        user = s.user_audio(sr)
        n_of[i] = user.size
        cut_of[i] = first_user_speech_s(s, user, sr) if ignore_greeting else 0.0
        return np.concatenate([np.zeros(prepend, np.float32), user])

    def done(i: int, streamed: Streamed) -> None:
        s, n, cut = data.samples[i], n_of.pop(i), cut_of.pop(i)
        audio = streamed.audio[prepend : prepend + n].copy()
        words = decode_words(streamed.tokens, tokenizer, pads, frame_s, offset_s=prepend / sr)
        segments, asr_error = None, None
        try:
            spans = asr_ev.transcribe_spans(audio, sr, model_dir=asr_dir, beam_size=int(params["beam_size"]))
            segments = [rules.Segment(a, b, tuple(TimedWord(*w) for w in ws)) for a, b, ws in spans]
        except EvaluatorError as e:
            asr_error = str(e)
        if cut > 0:  # a greeting: every stretch of speech that started before the user, to its end
            early = [seg for seg in segments or [] if seg.start < cut]
            cut = max([cut] + [seg.end for seg in early])
            segments = None if segments is None else [seg for seg in segments if seg.start >= cut]
            audio[: int(round(cut * sr))] = 0.0
        words = [w for w in words if w.start >= cut]  # the prepended silence, and a greeting if ignored
        vad = None
        if BACKCHANNEL in s.tasks or is_v15(s):
            try:
                vad = asr_ev.speech_spans_s(audio, sr)
            except EvaluatorError as e:
                asr_error, segments = f"VAD: {e}", None
        outcomes.extend(score_sample(s, words, segments, asr_error, dist, vad))
        outcomes.extend(before_after_outcomes(s, audio, sr, segments, vad, asr_error))
        spoken[s.id] = audio[int(round(cut * sr)) :]
        if ctx.artifacts is not None:
            asr_words = None if segments is None else [w for seg in segments for w in seg.words]
            export_sample(ctx.artifacts / s.id, s, audio, sr, asr_words, words, text_info)

    stream_batch(model, len(data.samples), load, done)
    ctx.add_samples(
        {
            "sample": o.sample,
            "task": o.task,
            "rule": o.rule,
            "source": o.source,
            "metric": o.metric,
            "value": o.value,
            "why": o.why,
        }
        for o in outcomes
    )
    specs = all_specs()
    common = {
        "data": {"duplex_data": data.sha256},
        "layout": data.layout,
        "data_samples": len(data.samples),
        "data_skipped": len(data.skipped),
        "weights": weights_of(model),
        "text_tokenizer": tokenizer.name,
        "batch_size": int(params["batch_size"]),
        "greeting": greeting,
    }
    records = aggregate(ctx, outcomes, common, {"name": "asr", **specs["asr"].info()})
    records += llm_judged(ctx, data.samples, common)
    records.append(speaker_record(ctx, spoken, ref_audio, ref_name, sr, spk, common, specs))
    return records


def aggregate(
    ctx: MeasureContext, outcomes: list[Outcome], common: dict[str, Any], asr_info: dict[str, Any]
) -> list[MetricRecord]:
    """One record per (task, rule, source, metric), in the order first met."""
    groups: dict[tuple[str, str, str, str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.task, o.rule, o.source, o.metric, o.part), []).append(o)
    records = []
    for (task, rule, source, metric, part), rows in groups.items():
        if metric == "turn_over_rate":
            higher: bool | None = task not in LOWER_TOR
        elif metric == "stop_latency_s":
            higher = task == USER_BACKCHANNEL  # the model should go on over a backchannel
        elif metric in ("answer_accuracy",):
            higher = True
        elif metric == "backchannel_frequency_hz" or metric in overlap_split.MEASURES:
            higher = None  # descriptive: how the speech changes across the overlap, no better side
        else:
            higher = False
        statistic = "median" if metric == "response_latency_s" and rule == "vemi" else "mean"
        extra = dict(common)
        if source == "asr":
            extra["evaluator"] = asr_info
        records.append(
            dialogue_record(
                ctx,
                metric,
                UNITS[metric],
                [o.value for o in rows if o.value is not None],
                len(rows),
                statistic=statistic,
                condition={"task": task, "rule": rule, "source": source, **({"part": part} if part else {})},
                higher_is_better=higher,
                failures=[
                    f"{o.sample}: {o.why}" for o in rows if o.value is None and o.why and not o.no_event
                ],
                extra=extra,
                conditional_on=CONDITIONAL.get(metric, ""),
            )
        )
    return records


def llm_judged(
    ctx: MeasureContext, samples: list[DuplexSample], common: dict[str, Any]
) -> list[MetricRecord]:
    """FDB's interruption relevance (GPT-4) and v1.5's behaviour categories: said, never faked (v1.5's
    general_before_after measures that need no judge are scored: ``before_after_outcomes``)."""
    tasks = {e.task for s in samples for e in s.events}
    out = []
    for metric, task in (("relevance", INTERRUPTION), ("behavior", None)):
        # v1.5's behaviour categories judge every overlap sample (its metadata.json), whatever the subset
        hit = task in tasks if task else any(is_v15(s) for s in samples)
        if not hit:
            continue
        out.append(
            MetricRecord(
                ctx.suite,
                ctx.variant.name,
                metric,
                None,
                "",
                0,
                status=SKIPPED,
                reason=LLM_JUDGED,
                condition={"task": task or "fdb_v1.5_overlap", "rule": "fdb"},
                data=dict(common["data"]),
                extra={k: v for k, v in common.items() if k != "data"},
            )
        )
    return out


def speaker_record(
    ctx: MeasureContext,
    spoken: dict[str, np.ndarray],
    ref_audio: np.ndarray,
    ref_name: str,
    sr: int,
    spk: Any,
    common: dict[str, Any],
    specs: dict[str, Any],
) -> MetricRecord:
    """The model's speech in each sample (after the user first speaks, when the greeting is ignored)
    against the voice reference."""
    sims, fails = [], []
    try:
        ref = spk.embed(ref_audio, sr)
    except EvaluatorError as e:
        ref, fails = None, [f"reference: {e}"]
    for sid, audio in spoken.items():
        if ref is None:
            break
        if not has_speech(audio):
            continue  # the model said nothing in this sample: no voice to score (no event)
        try:
            sims.append(spk.similarity(spk.embed(audio, sr), ref))
        except EvaluatorError as e:
            fails.append(f"{sid}: {e}")
    return dialogue_record(
        ctx,
        "speaker_similarity",
        "cosine",
        sims,
        len(spoken),
        condition={"source": "audio"},
        higher_is_better=True,
        failures=fails,
        extra={**common, "evaluator": {"name": "speaker", **specs["speaker"].info()}, "reference": ref_name},
        conditional_on="samples in which the model spoke",
    )
