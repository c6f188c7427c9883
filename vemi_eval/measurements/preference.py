"""Measurement kind ``preference``: the automatic reward of the model's own answers, and its win rate
against the suite's baseline, on held-out conversations (enhancement 4.2, automated preference).

The reward is the one the ``dpo`` recipe option ranks its preference pairs by (one definition, here):
per turn of a session, ``correct`` (the first word of the text stream after the user's turn is the
expected number, and the model said nothing during the mid-turn pause) and ``latency`` (1 when the
first word comes no later than the corpus's own gap after the user stops, decaying with
``exp(-delay / LATENCY_SCALE_S)`` after it; 0 without a word), averaged over the session's turns, plus
``speaker`` (resemblyzer cosine of the model's decoded answers to a reference recording of its voice; 0
when it said nothing); weighted by :class:`RewardWeights`. No human judged anything: "user satisfaction"
at this scale reads as this reward, on prompts and voices never trained on.

Every held-out session x ``draws`` is sampled in one batch by the variant's LM from the session's user
codes as the corpus tokenised them (frame by frame through the streamer, at the variant's sampling
temperatures; the same generator the dpo option draws its pairs with), the model's audio decoded by the
variant's codec; the baseline is sampled with the same torch seed and batch layout (common random
numbers), so the paired win rate (1 win, 0.5 tie, 0 loss; per session and draw) compares the two
models' behaviour and not two sampling draws. The baseline against itself is 0.5. Runtime transforms
that wrap the streamer's stages (speculative decoding) are not exercised: this kind measures weights.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..data import dialogue as dlg
from ..evaluators.dialogue_scoring import (  # noqa: F401  (the reward is defined there, for the dpo option too)
    LATENCY_SCALE_S,
    MIN_WINDOW_S,
    Reward,
    RewardWeights,
    answers_audio,
    reference_embedding,
    reward,
    score_turns,
    speaker_score,
)
from ..records import FAILED, MetricRecord
from ..stats import bootstrap_ci
from . import MeasureContext, at_least, measurement, merged_params
from ._duplex import heldout_user_codes

# --- the measurement --------------------------------------------------------------------------------
PARAMS: dict[str, Any] = {
    "sessions": 8,  # held-out sessions (0: all 48)
    "draws": 2,  # sampled conversations per session and model (one batch)
}


def check(p: dict[str, Any]) -> None:
    at_least(p, "sessions", 0)
    at_least(p, "draws", 1)


def sample_rewards(model, sessions: list[dlg.Session], users: list[torch.Tensor], draws: int, seed: int,
                   weights: RewardWeights, ref: np.ndarray | None) -> list[Reward]:  # fmt: skip
    """Every session x draw sampled in one batch by the model's LM (the dpo option's generator: the
    session's user codes in, frame by frame), scored; ordered session-major."""
    from ..training.lm_options.dpo import sample_conversations

    lm, sr, fs = model.lm, int(model.sample_rate), int(model.frame_size)
    T = max(u.shape[1] for u in users)
    user = torch.full((len(users), users[0].shape[0], T), -1, dtype=torch.long)
    for i, u in enumerate(users):
        user[i, :, : u.shape[1]] = u
    grids = sample_conversations(lm, user, draws, model.spec.temp, model.spec.temp_text, seed)
    out = []
    for j, g in enumerate(grids):
        sess = sessions[j // draws]
        n = users[j // draws].shape[1]
        spk = None
        if ref is not None:
            with torch.no_grad():
                audio = model.codec.decode(g[None, 1 : 1 + lm.dep_q, :n].clamp(min=0).to(model.device))
            spk = speaker_score(answers_audio(sess, audio[0, 0].float().cpu().numpy(), sr), sr, ref)
        out.append(reward(sess, [int(t) for t in g[0, :n]], fs, sr, weights, spk))
    return out


# The baseline's rewards, once per run: every variant is compared with the same draws of it.
_BASELINE_CACHE: dict[tuple, list[Reward]] = {}


CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {"user_satisfaction": [("preference_reward", {})]}


@measurement(
    "preference", params=PARAMS, version=1, claims=CLAIMS, check=check, exact=("*",)
)  # model behaviour, not wall-clock
def measure_preference(ctx: MeasureContext) -> list[MetricRecord]:
    params = merged_params(ctx, PARAMS)
    draws = int(params["draws"])
    weights = RewardWeights()
    model = ctx.variant.build()
    sr = int(model.sample_rate)
    if sr != dlg.SAMPLE_RATE:
        raise ValueError(
            f"the dialogue corpus is at {dlg.SAMPLE_RATE} Hz; the variant's codec runs at {sr} Hz"
        )
    sessions = dlg.dialogue_sessions("heldout", limit=int(params["sessions"]) or None)
    users = heldout_user_codes(sessions, getattr(model.codec, "checkpoint", None), model.n_user_codebooks)
    ref = reference_embedding() if weights.speaker > 0 else None
    seed = ctx.seed * 100_003 + 17  # the same seed for every variant: common random numbers
    mine = sample_rewards(model, sessions, users, draws, seed, weights, ref)
    base = model if ctx.variant.is_baseline else ctx.baseline.build()
    key = (
        ctx.suite,
        ctx.baseline.name,
        str(getattr(base.lm, "checkpoint", None)),
        len(sessions),
        draws,
        seed,
    )
    if ctx.variant.is_baseline:
        _BASELINE_CACHE[key] = mine
    if key not in _BASELINE_CACHE:
        _BASELINE_CACHE[key] = sample_rewards(base, sessions, users, draws, seed, weights, ref)
    theirs = _BASELINE_CACHE[key]
    wins: list[float] = []
    rows = []
    for j, (a, b) in enumerate(zip(mine, theirs)):
        win = 1.0 if a.total > b.total + 1e-9 else 0.0 if a.total < b.total - 1e-9 else 0.5
        wins.append(win)
        row = {"session": sessions[j // draws].id, "draw": j % draws, "reward": a.total, "win": win}
        rows.append(
            {**row, "baseline_reward": b.total, "correct": a.correct, "latency": a.latency,
             "speaker": a.speaker, "turns": a.turns}
        )  # fmt: skip
    ctx.add_samples(rows)
    data = {"dialogue_heldout": dlg.sessions_sha256(sessions), "recipe_hash": sessions[0].folder.name}
    extra = {
        "reward_weights": asdict(weights),
        "definition": "per session and draw: 0.6 correct + 0.3 latency score + 0.1 speaker similarity",
        "draws": draws,
        "against": ctx.baseline.name,
        "sampling": {"temp": model.spec.temp, "temp_text": model.spec.temp_text},
    }

    def record(metric: str, unit: str, values: list[float], **kw: Any) -> MetricRecord:
        base_kw = dict(suite=ctx.suite, variant=ctx.variant.name, metric=metric, unit=unit, data=data,
                       higher_is_better=True, statistic="mean")  # fmt: skip
        n = len(sessions) * draws
        if not values:
            return MetricRecord(
                value=None, n=0, status=FAILED, reason="nothing scored", extra=extra, **base_kw
            )
        a = np.asarray(values, np.float64)
        lo, hi = bootstrap_ci(a, "mean", seed=ctx.seed)
        ex = {**extra, "scored": len(values), "of": n, "scored_text": f"scored {len(values)} of {n}", **kw}
        return MetricRecord(value=float(a.mean()), n=len(values), ci_low=lo, ci_high=hi,
                            samples=[float(x) for x in a], extra=ex, **base_kw)  # fmt: skip

    out = [
        record("preference_reward", "reward", [r.total for r in mine]),
        record("preference_win_rate", "fraction", wins, note="1 win, 0.5 tie, 0 loss against the baseline"),
        record("preference_correct", "fraction", [r.correct for r in mine]),
        record("preference_latency_score", "score", [r.latency for r in mine]),
    ]
    if ref is not None:
        out.append(record("preference_speaker_similarity", "cosine", [r.speaker or 0.0 for r in mine]))
    return out
