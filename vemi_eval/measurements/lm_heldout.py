"""Measurement kind ``lm_heldout``: the variant's LM scored teacher-forced on the held-out dialogue split.

Cheap and deterministic (no sampling, no ASR): the held-out sessions of the dialogue corpus (user voices
and carrier phrasings never in training), tokenised with the variant's codec checkpoint (cached by
hash), are fed to the LM with Moshi's delays and teacher forcing exactly as the trainer's objective
(vemi_eval.training.lm), in consecutive windows of ``seq_len`` frames. Per condition of the user channel:

- ``tf_answer_accuracy``: at every frame where the model's text target is an answer word, is the
  LM's argmax that word (one sample per answer word; the text stream holds nothing but answers);
  ``tf_answer_error_rate`` = 1 - that (the noisy-condition claim metric reads it);
- ``tf_text_ce``: the trainer's text cross-entropy (padding targets weighted ``text_padding_weight``),
  one sample per window.
Clean only (the depth transformer runs): ``tf_audio_ce`` (the trainer's audio CE, semantic codebook
weighted up) and ``tf_answer_audio_accuracy`` (the semantic codebook's argmax over the frames where the
model speaks its answer; one sample per answer).

Conditions (``condition["user_channel"]``): "clean", then every noise of ``noise_types`` at every SNR of
``snr_db`` (``{"user_channel": kind, "snr_db": s}``) and reverberation at every RT60 of
``reverb_rt60_s`` (``{"user_channel": "reverb", "rt60_s": t}``): the user's codes are re-tokenised
from the noisy audio (vemi_eval.data.dialogue_noise, cached), the model's channel is untouched.
``answer_gap_s`` renders the held-out sessions at another response gap ("corpus": the corpus's own).

The data are tokenised by the codec *checkpoint* in fp32: flags of the codec do not apply here (this
kind measures the LM); flags of the LM apply as far as they change its modules (not the streaming path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import dialogue as dlg
from ..records import FAILED, MetricRecord
from ..stats import bootstrap_ci, counts_by_group
from . import MeasureContext, at_least, measurement, merged_params

PARAMS: dict[str, Any] = {
    "sessions": 0,  # held-out sessions (0: all 48)
    "seq_len": 256,  # frames per teacher-forced window (the trainer's)
    "answer_gap_s": "corpus",  # or seconds: the held-out sessions rendered at this response gap
    "noise_types": ["white", "babble"],  # [] for none
    "snr_db": [20, 10, 5, 0],
    "reverb_rt60_s": [0.3, 0.6, 1.0],  # [] to skip reverberation
    "audio": True,  # clean condition: also the depth transformer's audio figures
}
CLEAN = "clean"

# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "task_accuracy": [
        ("tf_answer_accuracy", {"user_channel": CLEAN}),
        ("tf_answer_audio_accuracy", {"user_channel": CLEAN}),
    ],
    "wer_noisy": [("tf_answer_error_rate", {"snr_db": "*"}), ("tf_answer_error_rate", {"rt60_s": "*"})],
}


def check(p: dict[str, Any]) -> None:
    from ..data.dialogue_noise import NOISE_KINDS

    at_least(p, "sessions", 0)
    at_least(p, "seq_len", 8)
    if p["answer_gap_s"] != "corpus":
        at_least(p, "answer_gap_s", 0)
    bad = [k for k in p["noise_types"] if k not in NOISE_KINDS or k == "reverb"]
    if bad:
        raise ValueError(
            f"noise_types: unknown {bad} (known: white, pink, brown, babble; reverb: reverb_rt60_s)"
        )
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p["snr_db"]):
        raise ValueError(f"snr_db must be a list of numbers, got {p['snr_db']!r}")
    if not all(isinstance(x, (int, float)) and x > 0 for x in p["reverb_rt60_s"]):
        raise ValueError(f"reverb_rt60_s must be a list of numbers > 0, got {p['reverb_rt60_s']!r}")
    if not isinstance(p["audio"], bool):
        raise ValueError(f"audio must be true or false, got {p['audio']!r}")


@dataclass
class Scores:
    """One condition's samples."""

    answer_hits: list[float]  # per answer word
    answer_grid: list[int]  # which grid each answer word is in
    text_ce: list[float]  # per window
    audio_ce: list[float]  # per window (clean only)
    answer_audio_acc: list[float]  # per answer (clean only)


def answer_frames(session: dlg.Session, frame_size: int, frames: int) -> list[tuple[int, int]]:
    """[first, last) frame of each of the model's answers."""
    out = []
    for t in session.turns:
        a, b = t.answer.start // frame_size, -(-t.answer.end // frame_size)
        if a < frames:
            out.append((a, min(b, frames)))
    return out


@torch.no_grad()
def score_grids(
    lm,
    grids: list[torch.Tensor],
    spans: list[list[tuple[int, int]]],
    seq_len: int,
    with_audio: bool,
) -> Scores:
    """Teacher-forced figures over consecutive windows of every grid (the trainer's objective)."""
    from ..training.lm_objective import LossWeights, moshi_loss, temporal_forward, text_terms, valid_targets

    weights = LossWeights()
    s = Scores([], [], [], [], [])
    dev = next(lm.parameters()).device
    for i, (g, answers) in enumerate(zip(grids, spans)):
        sem = torch.full((g.shape[1],), -1, dtype=torch.long)  # semantic-codebook argmax per frame
        for w0 in range(0, g.shape[1], seq_len):
            w = g[None, :, w0 : w0 + seq_len].to(dev)
            if with_audio:
                parts = moshi_loss(lm, w, weights)
                text_logits, text_ce = parts.text_logits, parts.text
                s.audio_ce.append(parts.audio)
                T = w.shape[2]
                # audio logits [T, dep_q, card]; the semantic codebook's target at t is column t of the
                # delayed grid, i.e. frame t - delay of the undelayed one
                d = lm.delays[1]
                pred = parts.audio_logits[:, 0].argmax(-1).cpu()
                sem[w0 : w0 + T - d] = pred[d:T]
            else:
                _, text_logits, targets = temporal_forward(lm, w)
                terms = text_terms(lm, text_logits, targets, valid_targets(lm, targets), weights)
                text_ce = float(terms.loss)
            targets = w[:, 0]
            pad = (targets == lm.text_padding_token_id) | (targets == lm.end_of_text_padding_id)
            words = (~pad) & (targets >= 0)
            # text delay is 0: text position t predicts frame t of the undelayed grid
            hits = (text_logits.argmax(-1) == targets)[words]
            s.answer_hits += [float(h) for h in hits.cpu()]
            s.answer_grid += [i] * int(hits.numel())
            s.text_ce.append(float(text_ce))
        if with_audio:
            truth = g[1]
            for a, b in answers:
                seg = slice(a, b)
                known = sem[seg] >= 0
                if known.any():
                    s.answer_audio_acc.append(float((sem[seg][known] == truth[seg][known]).float().mean()))
    return s


def hits_by_voice(s: Scores, voices: list[str]) -> dict[str, dict[str, int]]:
    """Answer words right and scored per user voice (``voices``: each grid's)."""
    items = ((voices[i], hit, 1) for hit, i in zip(s.answer_hits, s.answer_grid))
    return counts_by_group(items, total="words")


def _record(
    ctx: MeasureContext,
    metric: str,
    unit: str,
    values: list[float],
    condition: dict[str, Any],
    higher: bool,
    extra: dict[str, Any],
    data: dict[str, str],
) -> MetricRecord:
    base = dict(
        suite=ctx.suite,
        variant=ctx.variant.name,
        metric=metric,
        unit=unit,
        condition=condition,
        higher_is_better=higher,
        statistic="mean",
        data=data,
        extra=extra,
    )
    if not values:
        return MetricRecord(value=None, n=0, status=FAILED, reason="nothing to score", **base)
    a = np.asarray(values, np.float64)
    lo, hi = bootstrap_ci(a, "mean", seed=ctx.seed)
    return MetricRecord(
        value=float(a.mean()), n=a.size, ci_low=lo, ci_high=hi, samples=list(map(float, a)), **base
    )


@measurement(
    "lm_heldout", params=PARAMS, version=1, claims=CLAIMS, check=check, exact=("*",)
)  # teacher-forced on fixed data
def measure_lm_heldout(ctx: MeasureContext) -> list[MetricRecord]:
    from ..data import dialogue_noise as dn
    from ..training.lm_objective import load_token_folder

    p = merged_params(ctx, PARAMS)
    model = ctx.variant.build()
    lm, codec = model.lm, model.codec
    ckpt = getattr(codec, "checkpoint", None)
    if ckpt is None:
        raise ValueError(
            "lm_heldout tokenises the corpus with the variant's codec checkpoint; it has random weights"
        )
    if int(codec.sample_rate) != dlg.SAMPLE_RATE:
        raise ValueError(
            f"the dialogue corpus is at {dlg.SAMPLE_RATE} Hz; the variant's codec at {codec.sample_rate}"
        )
    codebooks = lm.n_q - lm.dep_q
    gap = None if p["answer_gap_s"] == "corpus" else float(p["answer_gap_s"])
    limit = int(p["sessions"]) or None
    sessions = dlg.dialogue_sessions("heldout", limit=limit, answer_gap_s=gap)
    folder = dlg.tokenised_split(
        "heldout", ckpt, limit=limit, codebooks=codebooks, answer_gap_s=gap, log=ctx.progress
    )
    tokens = load_token_folder(folder, lm.n_q + 1)
    if len(tokens.grids) != len(sessions):
        raise ValueError(f"{folder} holds {len(tokens.grids)} grids for {len(sessions)} sessions")
    fs = int(codec.frame_size)
    spans = [answer_frames(s, fs, g.shape[1]) for s, g in zip(sessions, tokens.grids)]
    data = {"dialogue_heldout_tokens": tokens.sha256, "dialogue_heldout": dlg.sessions_sha256(sessions)}
    common = {
        "sessions": len(sessions),
        "answer_gap_s": dlg.check_gap(gap),
        "codec_checkpoint": str(ckpt),
        "lm_checkpoint": str(getattr(lm, "checkpoint", None) or "random"),
        "seq_len": int(p["seq_len"]),
        # one of the 19 answers (two..twenty) at random: what a model that does not listen scores
        "chance_answer_accuracy": 1.0 / len(dlg.ASKED),
    }
    conditions: list[tuple[dict[str, Any], dn.UserCondition | None]] = [({"user_channel": CLEAN}, None)]
    for c in dn.ladder_conditions(p["noise_types"], p["snr_db"], p["reverb_rt60_s"]):
        cond = {
            "user_channel": c.kind,
            **({"rt60_s": c.rt60_s} if c.kind == "reverb" else {"snr_db": c.snr_db}),
        }
        conditions.append((cond, c))
    records: list[MetricRecord] = []
    user_from = 1 + lm.dep_q
    for cond, c in conditions:
        ctx.progress(f"lm_heldout: {cond}")
        grids = tokens.grids
        if c is not None:
            key = {"name": "lm_heldout", **{k: v for k, v in vars(c).items() if k != "seed"}}
            users = dn.user_codes("heldout", dn.fixed(c), key, ckpt, limit=limit, codebooks=codebooks,
                                  answer_gap_s=gap, log=ctx.progress)  # fmt: skip
            grids = []
            for g, u in zip(tokens.grids, users):
                g = g.clone()
                g[user_from:] = torch.from_numpy(u[:, : g.shape[1]])
                grids.append(g)
        with_audio = c is None and bool(p["audio"])
        s = score_grids(lm, grids, spans, int(p["seq_len"]), with_audio)
        ctx.add_samples({**cond, "metric": "tf_answer_hit", "value": v} for v in s.answer_hits)
        by_voice = {
            "by_voice": hits_by_voice(s, [x.voice.variant for x in sessions]),
            "by_engine": hits_by_voice(s, [x.voice.engine for x in sessions]),
        }
        records.append(
            _record(
                ctx, "tf_answer_accuracy", "fraction", s.answer_hits, cond, True, {**common, **by_voice}, data
            )
        )
        err = [1.0 - v for v in s.answer_hits]
        records.append(_record(ctx, "tf_answer_error_rate", "fraction", err, cond, False, common, data))
        records.append(_record(ctx, "tf_text_ce", "nats", s.text_ce, cond, False, common, data))
        if with_audio:
            records.append(_record(ctx, "tf_audio_ce", "nats", s.audio_ce, cond, False, common, data))
            records.append(
                _record(
                    ctx, "tf_answer_audio_accuracy", "fraction", s.answer_audio_acc, cond, True, common, data
                )
            )
    return records
