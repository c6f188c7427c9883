"""What the dialogue measurement's two paths share (the built-in corpus and a user's own data): streaming
conversations through the live loop, B at a time, decoding the text stream, and one record's shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import DataError
from ..data import dialogue as dlg
from ..data.text_stream import (
    SentencePieceTokenizer,
    TextTokenizer,
    WordVocabTokenizer,
    padding_ids,
)
from ..records import FAILED, UNDERPOWERED, MetricRecord
from ..stats import bootstrap_ci
from . import MeasureContext


# --- streaming ------------------------------------------------------------------------------------------
@dataclass
class Streamed:
    """What the model did on one conversation: a text token per frame (None while inside its delays) and
    its audio, frame o at samples [o * frame_size, (o + 1) * frame_size)."""

    tokens: list[int | None]
    audio: np.ndarray


@torch.no_grad()
def stream_batch(
    model,
    count: int,
    load: Callable[[int], np.ndarray],
    done: Callable[[int, Streamed], None],
) -> None:
    """Stream conversations 0..count-1 (``load(i)``: the user's audio at the model's rate) through the
    variant's ``batch_size`` items at once, each item its own conversation: an item that finishes is reset
    on its own (``reset(mask)``) and takes the next conversation while the others go on; idle items hear
    silence. Each conversation runs one frame past its audio for every frame of delay, so its last frames'
    outputs come out; ``done(i, streamed)`` hears it as soon as it ends. With batch_size 1 this is one
    full reset per conversation."""
    fs = int(model.frame_size)
    b = int(getattr(model, "batch_size", 1))
    delay = int(getattr(model, "max_delay", 0))
    dev = getattr(model, "device", "cpu")
    todo = list(range(count))
    item: list[int | None] = [None] * b
    audio_in: list[np.ndarray] = [np.zeros(0, np.float32)] * b
    frame_of = [0] * b
    length = [0] * b  # frames to run per item
    tokens: list[list[int | None]] = [[] for _ in range(b)]
    audio_out: list[list[np.ndarray]] = [[] for _ in range(b)]
    model.reset()
    started = False
    while todo or any(i is not None for i in item):
        fresh = [s for s in range(b) if item[s] is None and todo]
        for s in fresh:
            i = todo.pop(0)
            user = np.asarray(load(i), np.float32)
            item[s], audio_in[s], frame_of[s] = i, user, 0
            length[s] = -(-user.size // fs) + delay
            tokens[s], audio_out[s] = [], []
        if fresh and started:
            if len(fresh) == b:
                model.reset()
            else:
                mask = torch.zeros(b, dtype=torch.bool)
                mask[fresh] = True
                model.reset(mask)
        started = True
        x = np.zeros((b, fs), np.float32)
        for s in range(b):
            if item[s] is not None:
                chunk = audio_in[s][frame_of[s] * fs : (frame_of[s] + 1) * fs]
                x[s, : chunk.size] = chunk
        text, pcm = model.step(torch.from_numpy(x).view(b, 1, fs).to(dev))
        for s in range(b):
            i = item[s]
            if i is None:
                continue
            tok = None if text is None else int(text[s])
            tokens[s].append(tok if tok is not None and tok >= 0 else None)  # -2: not generated yet
            audio_out[s].append(pcm[s, 0].float().cpu().numpy())
            frame_of[s] += 1
            if frame_of[s] >= length[s]:
                done(i, Streamed(tokens[s], np.concatenate(audio_out[s])))
                item[s] = None
    model.reset()


def stream_session(model, user_audio: np.ndarray) -> Streamed:
    """One conversation through batch item 0 (the others idle)."""
    out: list[Streamed] = []
    stream_batch(model, 1, lambda i: user_audio, lambda i, s: out.append(s))
    return out[0]


# --- the text stream ----------------------------------------------------------------------------------
def text_tokenizer(model, path: str | None) -> TextTokenizer:
    """The tokenizer that reads the variant's text stream: a SentencePiece model when ``path`` is given
    (--text-tokenizer or the suite's ``text_tokenizer``), else the tiny corpus's word vocabulary, which
    only an LM of that vocabulary's text card can speak (a Moshi LM needs its own tokenizer)."""
    card = getattr(getattr(model, "lm", None), "text_card", None)
    if path:
        tok: TextTokenizer = SentencePieceTokenizer(path)
        if card is not None and tok.size() > card:  # the LM could never say some pieces: another model's
            raise DataError(f"{tok.name} has {tok.size()} pieces; the LM's text card is only {card}")
        return tok
    v = dlg.vocab()
    if card is not None and card != v.text_card:
        raise DataError(
            f"the LM's text card is {card}, not the tiny word vocabulary's {v.text_card}: give its "
            "SentencePiece model with --text-tokenizer (Moshi: tokenizer_spm_32k_3.model)"
        )
    return WordVocabTokenizer(v.tokens)


def text_pad_ids(model) -> tuple[int, int]:
    return padding_ids(getattr(model, "lm", None))


def frame_seconds(model) -> float:
    return int(model.frame_size) / int(model.sample_rate)


# --- records ----------------------------------------------------------------------------------------------
def dialogue_record(
    ctx: MeasureContext,
    metric: str,
    unit: str,
    values: list[float],
    of: int,
    *,
    statistic: str = "mean",
    condition: dict[str, Any] | None = None,
    higher_is_better: bool | None = None,
    failures: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    conditional_on: str = "",
) -> MetricRecord:
    """One record with a bootstrap interval over its values and "scored N of M"; FAILED when nothing was
    scored (a value is never made up).

    ``conditional_on`` names the events a statistic is taken given ("take-overs" for a latency): each
    value is one such event, ``of`` the chances for one, ``failures`` only what broke (an event that did
    not happen is not a failure). No event at all, and nothing broke, is UNDERPOWERED with no value;
    the runner marks too few of them (below min_samples) the same way."""
    scored = f"{conditional_on}: {len(values)} of {of}" if conditional_on else f"scored {len(values)} of {of}"
    ex = {
        **(extra or {}),
        "scored": len(values),
        "of": of,
        "scored_text": scored,
        "failures": (failures or [])[:5],
    }
    base = dict(
        suite=ctx.suite,
        variant=ctx.variant.name,
        metric=metric,
        unit=unit,
        condition=dict(condition or {}),
        higher_is_better=higher_is_better,
        statistic=statistic,
        data=ex.pop("data", {}),
        evaluator=ex.pop("evaluator", None),
        conditional_on=conditional_on,
    )
    if not values and conditional_on and not failures:
        why = f"{scored}: nothing to take the statistic over, no verdict"
        return MetricRecord(value=None, n=0, status=UNDERPOWERED, reason=why, extra=ex, **base)
    if not values:
        why = f"nothing scored of {of}" + (f": {failures[0]}" if failures else "")
        return MetricRecord(value=None, n=0, status=FAILED, reason=why, extra=ex, **base)
    a = np.asarray(values, np.float64)
    value = float(np.median(a) if statistic == "median" else a.mean())
    lo, hi = bootstrap_ci(a, statistic, seed=ctx.seed)
    samples = [float(x) for x in a]
    rec = MetricRecord(value=value, n=len(values), ci_low=lo, ci_high=hi, samples=samples, extra=ex, **base)
    if len(values) < of:
        rec.reason = scored + (f"; {failures[0]}" if failures else "")
    return rec


def voice_reference(path: str | None, sample_rate: int) -> tuple[np.ndarray, str]:
    """The model's voice to compare its speech with: the suite's WAV, else the tiny model's own voice
    (festival's ked_diphone, as the dialogue corpus says its answers)."""
    if path:
        from ..data.audio import AudioError, load_audio

        try:
            return load_audio(Path(path), sample_rate), str(path)
        except AudioError as e:
            raise DataError(f"voice_reference {path}: {e}") from None
    return dlg.model_reference_audio(), f"festival {dlg.MODEL_VOICE}"


def weights_of(model) -> dict[str, str | None]:
    """Which weights the variant runs: the checkpoint files, or "random"."""
    out = {}
    for name in ("lm", "codec"):
        part = getattr(model, name, None)
        ck = getattr(part, "checkpoint", None)
        out[name] = "random" if ck is None else str(ck)
    return out


def has_speech(audio: np.ndarray) -> bool:
    """Whether a clip of the model's output holds more than silence. A model that said nothing has no voice
    to score: its voice measures are taken given speech (no event, not a failure)."""
    from ..data.audio import SILENCE_RMS

    return audio.size > 0 and float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) >= SILENCE_RMS


def heldout_user_codes(sessions: list[dlg.Session], codec_checkpoint, n_user: int) -> list[torch.Tensor]:
    """The held-out sessions' user codes [n_user, T] as the corpus tokenised them (cached)."""
    from safetensors.torch import load_file

    folder = dlg.tokenised_split("heldout", codec_checkpoint, log=lambda m: None)
    by_id: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        by_id.update(load_file(str(f)))
    missing = [s.id for s in sessions if s.id not in by_id]
    if missing:
        raise ValueError(f"held-out session {missing[0]} is not in the tokenised split {folder}")
    return [by_id[s.id][-n_user:].to(torch.long) for s in sessions]
