"""Measurement kind ``prosody``: does the model's speech follow a requested prosody, and how natural is it
(enhancement 6.1, prosody conditioning)?

For each held-out session and each requested pitch offset of ``requests`` (semitones; the level request
is 0 dB), the variant's LM samples the conversation from the session's user codes (the dpo option's
generator; the same seed for every request and variant: common random numbers) with the request
fed as the ``prosody-cond`` option's conditioning (``streamer.condition = W [st / 4, 0]``, W from
``<checkpoint>.prosody.safetensors``; a checkpoint without that file has no prosody input and is
measured ignoring the request, which is what the plain model does). The model's decoded answers of the
session are concatenated and their F0 (YIN, librosa; frames above the clip's median RMS) compared with
the model voice's own reference recording: produced offset = 12 log2(median F0 / reference median F0).

- ``prosody_f0_error_st``: per session and request r != 0, |(produced(r) - produced(0)) - r|: the pitch
  change against the change asked for (the session's own request-0 answers are the anchor, so the
  codec's and the voice's own offset from the reference cancel); mean; lower is better.
- ``prosody_f0_slope``: least-squares slope of that change on the requested one (1 = follows the request
  exactly, 0 = ignores it), with a bootstrap interval over sessions.
- ``dnsmos_ovrl`` / ``dnsmos_sig``: DNSMOS of the answers at request 0 (the claim's "naturalness").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data import dialogue as dlg
from ..evaluators import EvaluatorError
from ..evaluators.dialogue_scoring import answers_audio
from ..records import FAILED, MetricRecord
from ..stats import bootstrap_ci
from . import MeasureContext, at_least, measurement, merged_params
from ._duplex import heldout_user_codes

PARAMS: dict[str, Any] = {
    "sessions": 6,  # held-out sessions (0: all 48)
    "requests": [-3, 0, 3],  # requested pitch offsets, semitones
}


def check(p: dict[str, Any]) -> None:
    at_least(p, "sessions", 0)
    if not isinstance(p["requests"], list) or not p["requests"] or 0 not in p["requests"]:
        raise ValueError(f"requests must be a list of semitone offsets including 0, got {p['requests']!r}")


def median_f0(audio: np.ndarray, sr: int) -> float:
    """Median YIN F0 (Hz) over the louder half of the frames; EvaluatorError without speech."""
    import librosa

    from ..data.audio import SILENCE_RMS

    if audio.size < sr // 4 or float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < SILENCE_RMS:
        raise EvaluatorError("no speech in the answers")
    f0 = librosa.yin(audio.astype(np.float32), fmin=60, fmax=400, sr=sr, frame_length=2048, hop_length=480)
    rms = librosa.feature.rms(y=audio.astype(np.float32), frame_length=2048, hop_length=480)[0][: f0.size]
    loud = rms[: f0.size] >= np.median(rms)
    return float(np.median(f0[: rms.size][loud]))


def _record(ctx, metric, unit, values, of, *, hib, extra, data, samples=None, value=None, ci=None):
    base = dict(suite=ctx.suite, variant=ctx.variant.name, metric=metric, unit=unit, data=data,
                higher_is_better=hib, statistic="mean")  # fmt: skip
    ex = {**extra, "scored": len(values), "of": of, "scored_text": f"scored {len(values)} of {of}"}
    if not values:
        return MetricRecord(
            value=None, n=0, status=FAILED, reason=f"nothing scored of {of}", extra=ex, **base
        )
    a = np.asarray(values, np.float64)
    lo, hi = ci if ci is not None else bootstrap_ci(a, "mean", seed=ctx.seed)
    v = float(a.mean()) if value is None else value
    kept = samples if samples is not None else [float(x) for x in a]
    return MetricRecord(value=v, n=len(values), ci_low=lo, ci_high=hi, samples=kept, extra=ex, **base)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / max((xc**2).sum(), 1e-12))


CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {"naturalness": [("dnsmos_ovrl", {})]}


@measurement("prosody", params=PARAMS, version=1, claims=CLAIMS, check=check, exact=("*",))
def measure_prosody(ctx: MeasureContext) -> list[MetricRecord]:
    from ..evaluators import dnsmos as dnsmos_ev
    from ..training.lm_options.dpo import sample_conversations
    from ..training.lm_options.prosody import features, load_projection

    params = merged_params(ctx, PARAMS)
    model = ctx.variant.build()
    lm, sr = model.lm, int(model.sample_rate)
    sessions = dlg.dialogue_sessions("heldout", limit=int(params["sessions"]) or None)
    users = heldout_user_codes(sessions, getattr(model.codec, "checkpoint", None), model.n_user_codebooks)
    W = load_projection(getattr(lm, "checkpoint", None))
    ref_f0 = median_f0(dlg.model_reference_audio(), dlg.SAMPLE_RATE)
    T = max(u.shape[1] for u in users)
    user = torch.full((len(users), users[0].shape[0], T), -1, dtype=torch.long)
    for i, u in enumerate(users):
        user[i, :, : u.shape[1]] = u
    requests = [float(r) for r in params["requests"]]
    S = len(sessions)
    # one batch of the sessions per request, each with the same seed (common random numbers: what
    # changes between requests is the request alone)
    grids_by_request = []
    for r in requests:
        ctx.progress(f"prosody: request {r:+g} st x {S} sessions")
        cond = None
        if W is not None:
            cond = (torch.tensor(features(r, 0.0)) @ W.T).view(1, 1, -1).expand(S, 1, -1)
        temps = (model.spec.temp, model.spec.temp_text)
        grids_by_request.append(sample_conversations(lm, user, 1, *temps, ctx.seed * 7919 + 3, cond))
    grids = torch.cat(grids_by_request)
    produced: dict[tuple[int, float], float] = {}
    failures, mos, rows = [], {"ovrl": [], "sig": []}, []
    for j, g in enumerate(grids):
        req, i = requests[j // S], j % S
        sess, n = sessions[i], users[i].shape[1]
        with torch.no_grad():
            audio = model.codec.decode(g[None, 1 : 1 + lm.dep_q, :n].clamp(min=0).to(model.device))
        speech = answers_audio(sess, audio[0, 0].float().cpu().numpy(), sr)
        try:
            produced[(i, req)] = float(12 * np.log2(median_f0(speech, sr) / ref_f0))
        except EvaluatorError as e:
            failures.append(f"{sess.id} request {req:+g}: {e}")
            continue
        rows.append({"session": sess.id, "requested_st": req, "produced_st": produced[(i, req)]})
        if req == 0:
            try:
                m = dnsmos_ev.dnsmos(speech, sr)
                mos["ovrl"].append(float(m["ovrl"]))
                mos["sig"].append(float(m["sig"]))
            except EvaluatorError as e:
                failures.append(f"{sess.id}: DNSMOS: {e}")
    # the change from the session's own request-0 pitch against the change asked for
    per_session: dict[int, list[tuple[float, float]]] = {i: [] for i in range(S)}
    errors = []
    for (i, req), st in produced.items():
        if req != 0 and (i, 0.0) in produced:
            change = st - produced[(i, 0.0)]
            per_session[i].append((req, change))
            errors.append(abs(change - req))
    ctx.add_samples(rows)
    data = {"dialogue_heldout": dlg.sessions_sha256(sessions), "recipe_hash": sessions[0].folder.name}
    extra = {"conditioned": W is not None, "requests_st": requests, "reference_f0_hz": ref_f0,
             "failures": failures[:5]}  # fmt: skip
    of = S * (len(requests) - 1)
    pairs = [p for ps in per_session.values() for p in ps]
    out = [_record(ctx, "prosody_f0_error_st", "semitones", errors, of, hib=False, extra=extra, data=data)]
    if len(pairs) >= 3:
        x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        rng = np.random.default_rng(ctx.seed)
        keys = [k for k, v in per_session.items() if v]
        boots = []
        for _ in range(1000):  # resample sessions
            pick = [p for k in rng.choice(keys, size=len(keys)) for p in per_session[int(k)]]
            bx, by = np.array([p[0] for p in pick]), np.array([p[1] for p in pick])
            if np.ptp(bx) > 0:
                boots.append(_slope(bx, by))
        ci = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))) if boots else (None, None)
        out.append(_record(ctx, "prosody_f0_slope", "st/st", list(y), of, hib=True, extra=extra, data=data,
                           value=_slope(x, y), ci=ci))  # fmt: skip
    for key, vals in mos.items():
        out.append(
            _record(ctx, f"dnsmos_{key}", "MOS", vals, len(sessions), hib=True, extra=extra, data=data)
        )
    return out
