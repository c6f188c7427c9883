"""Fidelity: how far a variant's tokens and logits stray from the baseline's on the same weights and input.

Both models are built from the same seed (same weights: a flag transforms them, it never redraws them)
and decode greedily (temp 0), so every difference comes from the flag. Two protocols:

* **Free-running**: each model streams ``frames`` steps on the same seeded user codes and keeps its own
  tokens. Reported: the share of identical tokens (text and audio apart, and together) and the first
  step where they differ. This is what a user would see, but after the first difference the two models
  condition on different histories, so every later difference is partly a consequence of the first.
* **Teacher-forced**: the variant is run again on the same user codes, but after every step its token
  history is overwritten with the BASELINE's tokens (text and audio), and its depth transformer is fed the
  baseline's tokens too. Both models then see exactly the same history at every step, so the per-step
  KL divergence KL(baseline || variant) of the softmax of the logits (temperature 1, full vocabulary,
  so the divergence stays finite) and the top-1 agreement measure the flag's own effect, not an
  accumulation of earlier divergences.

The flags' own counters are reported beside: speculative decoding's acceptance rate and tokens per
verification pass, Mixture of Depths' processed share of tokens per layer and the matmul FLOPs of the
temporal layers per frame.

The input (``input``): ``"dialogue"`` (default), the user channel of held-out sessions of the dialogue
corpus (vemi_eval/data/dialogue/) encoded frame by frame by the baseline's streaming codec, so a
trained model listens and answers within the window; ``"random"``, seeded random user codes. On random
codes a trained model is confidently silent and every flag agrees with the baseline (int4 KL ~1e-6
measured), which says nothing about the flag: the records carry ``baseline_word_frames``, the frames in
which the baseline's text stream said a word, and ``text_top1_agreement_words`` is the teacher-forced
top-1 agreement on those frames only.

Parameters (suite table ``[fidelity]``): frames, n_boot, input; ``[fidelity.quick]`` overrides them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from reference_model.probes import layer_linear_flops, temporal_layers
from reference_model.report import ModReport, SpeculativeReport

from ..records import MetricRecord
from ..stats import bootstrap_ci
from . import MeasureContext, at_least, measurement, merged_params, one_of

PARAMS: dict[str, Any] = {"frames": 100, "n_boot": 1000, "input": "dialogue"}
INPUTS = ("dialogue", "random")


def _params(ctx: MeasureContext) -> dict[str, Any]:
    params = merged_params(ctx, PARAMS)
    try:  # the suite loader's rules, also for a caller that did not go through it
        check(params)
    except ValueError as exc:
        raise ValueError(f"[{ctx.kind}] {exc}") from None
    return params


def dialogue_user_codes(model, frames: int) -> tuple[list[torch.Tensor], dict[str, str]]:
    """The user channel of the first held-out dialogue sessions (as many as ``frames`` needs, end to end),
    encoded frame by frame by ``model``'s streaming codec: one [1, n_user, 1] tensor per frame. Returns
    the codes and the data hashes (the sessions' plan and the recipe)."""
    from ..data import dialogue as dlg

    sr, fs = int(model.sample_rate), int(model.frame_size)
    if sr != dlg.SAMPLE_RATE:
        raise ValueError(f"the dialogue corpus is at {dlg.SAMPLE_RATE} Hz; the codec runs at {sr} Hz")
    # the shortest prefix of the split that fills the window (a prefix plans, and synthesises, no more)
    k = 1
    while True:
        planned = dlg.dialogue_sessions("heldout", limit=k)
        ends = np.cumsum([-(-s.n_samples // fs) for s in planned])  # frames up to each session's end
        if ends[-1] >= frames or len(planned) < k:
            break
        k *= 2
    used = planned[: int(np.searchsorted(ends, frames)) + 1]
    audio = np.concatenate([s.user_audio() for s in used]).astype(np.float32)
    x = np.zeros(max(frames * fs, audio.size), np.float32)
    x[: audio.size] = audio
    model.reset()
    with torch.no_grad():
        codes = [
            model.encode_user(torch.from_numpy(x[i * fs : (i + 1) * fs]).view(1, 1, fs).to(model.device))
            for i in range(frames)
        ]
    model.reset()
    data = {"dialogue_heldout": dlg.sessions_sha256(used), "recipe_hash": used[0].folder.name}
    return codes, data


def user_codes(model, frames: int, seed: int) -> list[torch.Tensor]:
    """Seeded random user codes, one [1, n_user, 1] tensor per frame (the same for every variant)."""
    gen = torch.Generator().manual_seed(seed)
    card = model.lm.card
    return [
        torch.randint(0, card, (1, model.n_user_codebooks, 1), generator=gen).to(model.device)
        for _ in range(frames)
    ]


def free_run(model, codes: list[torch.Tensor]) -> torch.Tensor:
    """Stream the codes; returns the tokens each step generated, before the delays are undone,
    [frames, B, 1 + dep_q] (text first)."""
    streamer = model.streamer
    sample = streamer.depformer_sample
    generated: list[torch.Tensor] = []

    def recording(hidden, text_token):
        audio = sample(hidden, text_token)
        generated.append(torch.cat([text_token[:, None], audio], dim=1))
        return audio

    streamer.depformer_sample = recording
    try:
        for c in codes:
            model.lm_step(c)
    finally:
        streamer.depformer_sample = sample
    return torch.stack(generated)


@torch.no_grad()
def teacher_forced_logits(
    model, codes: list[torch.Tensor], forced: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the codes with the token history forced to ``forced`` [frames, B, 1 + dep_q].

    Returns text logits [frames, B, text_card] and audio logits [frames, B, dep_q, card] (the depth
    transformer in one teacher-forced pass on the forced text and audio tokens).
    """
    streamer, lm = model.streamer, model.lm
    sample = streamer.depformer_sample
    audio_logits: list[torch.Tensor] = []
    text_logits: list[torch.Tensor] = []
    t = 0

    def forced_depth(hidden, text_token):
        tokens_in = forced[t, :, : lm.dep_q]  # forced text token, then forced audio tokens 0..dep_q-2
        audio_logits.append(lm.depformer_forward_parallel(hidden, tokens_in).float())
        return forced[t, :, 1:]

    streamer.depformer_sample = forced_depth
    try:
        for t, c in enumerate(codes):  # noqa: B007 (forced_depth reads t)
            model.lm_step(c)
            # clone: under cuda-graphs this is the graph's static output buffer (and .float() of fp32 logits
            # is the same tensor), which the next frame overwrites
            text_logits.append(streamer.last_text_logits.float().clone())
            # The streamer wrote its own (sampled) text token; overwrite the column it just wrote with the
            # forced tokens so the next step conditions on the baseline's history.
            column = streamer.offsets % streamer.tokens.shape[2]
            index = column[:, None, None].expand(-1, lm.dep_q + 1, 1)
            streamer.tokens[:, : lm.dep_q + 1].scatter_(2, index, forced[t][:, :, None].to(streamer.tokens))
    finally:
        streamer.depformer_sample = sample
    return torch.stack(text_logits), torch.stack(audio_logits)


def kl_and_top1(reference: torch.Tensor, other: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-row KL(softmax(reference) || softmax(other)) in nats and top-1 agreement; rows = all but the last
    dimension, flattened."""
    ref = torch.log_softmax(reference.double(), dim=-1)
    oth = torch.log_softmax(other.double(), dim=-1)
    kl = (ref.exp() * (ref - oth)).sum(dim=-1).clamp(min=0.0)
    top1 = (reference.argmax(dim=-1) == other.argmax(dim=-1)).double()
    return kl.reshape(-1).cpu().numpy(), top1.reshape(-1).cpu().numpy()


def _first_divergence(base: torch.Tensor, var: torch.Tensor) -> int | None:
    differs = (base != var).reshape(base.shape[0], -1).any(dim=1)
    idx = torch.nonzero(differs)
    return int(idx[0, 0]) if idx.numel() else None


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fidelity": [("*token_agreement*", {})],
    "flops": [("flops*", {}), ("layers_executed*", {}), ("layer_share*", {})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    at_least(p, "frames", 2)
    at_least(p, "n_boot", 1)
    one_of(p, "input", INPUTS)


@measurement("fidelity", params=PARAMS, version=1, claims=CLAIMS, check=check, exact=("*",))
def measure_fidelity(ctx: MeasureContext) -> Iterable[MetricRecord]:
    params = _params(ctx)
    frames, n_boot = int(params["frames"]), int(params["n_boot"])
    greedy = {"temp": 0.0, "temp_text": 0.0}

    baseline = ctx.baseline.build(batch_size=1, **greedy)
    if params["input"] == "dialogue":
        codes, data = dialogue_user_codes(baseline, frames)
    else:
        codes, data = user_codes(baseline, frames, ctx.seed), {}
    ctx.progress(f"fidelity: baseline free run, {frames} frames")
    base_tokens = free_run(baseline, codes)
    baseline.reset()
    base_text, base_audio = teacher_forced_logits(baseline, codes, base_tokens)

    # fresh: the baseline against itself is then a rebuild from the seed, a check that builds reproduce
    variant = ctx.variant.build(batch_size=1, fresh=True, **greedy)
    variant.reset()
    _reset_counters(variant)
    ctx.progress(f"fidelity: {ctx.variant.name} free run")
    var_tokens = free_run(variant, codes)
    counters = _counters(variant)  # counters of the free run only (the teacher-forced pass bypasses them)
    variant.reset()
    ctx.progress(f"fidelity: {ctx.variant.name} teacher-forced")
    var_text, var_audio = teacher_forced_logits(variant, codes, base_tokens)

    text_same = (base_tokens[:, :, 0] == var_tokens[:, :, 0]).double().reshape(-1).cpu().numpy()
    audio_same = (base_tokens[:, :, 1:] == var_tokens[:, :, 1:]).double().reshape(frames, -1).mean(1).numpy()
    all_same = (base_tokens == var_tokens).double().reshape(frames, -1).mean(1).cpu().numpy()
    first = _first_divergence(base_tokens, var_tokens)
    text_kl, text_top1 = kl_and_top1(base_text, var_text)
    audio_kl, audio_top1 = kl_and_top1(base_audio, var_audio)
    audio_kl_step = audio_kl.reshape(frames, -1).mean(1)
    audio_top1_step = audio_top1.reshape(frames, -1).mean(1)

    ctx.add_samples(
        {
            "frame": t,
            "text_same": float(text_same[t]),
            "audio_same_share": float(audio_same[t]),
            "text_kl": float(text_kl[t]),
            "audio_kl": float(audio_kl_step[t]),
            "text_top1": float(text_top1[t]),
            "audio_top1_share": float(audio_top1_step[t]),
        }
        for t in range(frames)
    )

    dep_q = base_tokens.shape[2] - 1
    lm = baseline.lm
    base_text_tokens = base_tokens[:, 0, 0].cpu()
    words = (base_text_tokens >= 0) & (base_text_tokens != lm.text_padding_token_id)
    words &= base_text_tokens != lm.end_of_text_padding_id
    word_frames = int(words.sum())
    extra = {
        "frames": frames,
        "protocol": "greedy, same seed and user codes",
        "input": params["input"],
        "baseline_word_frames": word_frames,
    }

    def rec(metric: str, samples: np.ndarray, unit: str, higher: bool, n: int, **more: Any) -> MetricRecord:
        lo, hi = bootstrap_ci(samples, "mean", n_boot=n_boot, seed=ctx.seed)
        return MetricRecord(
            suite=ctx.suite,
            variant=ctx.variant.name,
            metric=metric,
            value=float(np.mean(samples)),
            unit=unit,
            n=n,
            ci_low=lo,
            ci_high=hi,
            higher_is_better=higher,
            extra={**extra, **more},
        )

    free = {"protocol_detail": "free-running: each model keeps its own tokens"}
    forced = {"protocol_detail": "teacher-forced on the baseline's tokens"}
    records = [
        rec("token_agreement", all_same, "share", True, frames * (1 + dep_q), **free),
        rec("text_token_agreement", text_same, "share", True, frames, **free),
        rec("audio_token_agreement", audio_same, "share", True, frames * dep_q, **free),
        MetricRecord(
            suite=ctx.suite,
            variant=ctx.variant.name,
            metric="first_divergence_step",
            value=float(frames if first is None else first),
            unit="frames",
            n=frames,
            higher_is_better=True,
            extra={**extra, **free, "diverged": first is not None},
        ),
        rec("text_kl", text_kl, "nats", False, frames, **forced),
        rec("audio_kl", audio_kl_step, "nats", False, frames * dep_q, **forced),
        rec("text_top1_agreement", text_top1, "share", True, frames, **forced),
        rec("audio_top1_agreement", audio_top1_step, "share", True, frames * dep_q, **forced),
    ]
    if word_frames:  # the frames where the baseline speaks: what a flag must not change
        at_words = text_top1[words.numpy()]
        records.append(rec("text_top1_agreement_words", at_words, "share", True, word_frames, **forced))
    records += _counter_records(ctx, counters, extra)
    for r in records:  # the counters come from the same free run, so from the same data
        r.data = {**r.data, **data}
    return records


def _reset_counters(model) -> None:
    report = model.report()
    for entry in (report.get(SpeculativeReport), report.get(ModReport)):
        if entry is not None:
            entry.stats.reset()


def _counters(model) -> dict[str, Any]:
    out: dict[str, Any] = {}
    report = model.report()
    spec = report.get(SpeculativeReport)
    if spec is not None:
        out["speculative"] = {**spec.stats.summary(), "per_frame": list(spec.stats.accepted_per_frame)}
    mod = report.get(ModReport)
    if mod is not None:
        stats = mod.stats
        out["mod"] = {
            **stats.summary(),
            "per_layer": stats.processed_share,
            "flops": stats.flops_executed / max(1, stats.seen[0]),
            "fit_r2": list(stats.fit_r2),
            "calibration": stats.calibration,
        }
    else:
        out["flops"] = float(sum(layer_linear_flops(layer) for layer in temporal_layers(model.lm)))
    return out


def _counter_records(
    ctx: MeasureContext, counters: dict[str, Any], extra: dict[str, Any]
) -> list[MetricRecord]:
    def rec(metric: str, value: float, unit: str, higher: bool | None, n: int, **more: Any) -> MetricRecord:
        return MetricRecord(
            suite=ctx.suite,
            variant=ctx.variant.name,
            metric=metric,
            value=float(value),
            unit=unit,
            n=n,
            higher_is_better=higher,
            extra={**extra, **more},
        )

    frames = extra["frames"]
    out = []
    spec = counters.get("speculative")
    if spec is not None:
        out.append(
            rec("speculative_acceptance_rate", spec["acceptance_rate"], "share", True, frames, k=spec["k"],
                per_frame=spec["per_frame"])
        )  # fmt: skip
        out.append(rec("speculative_tokens_per_round", spec["tokens_per_round"], "tokens", True, frames))
    mod = counters.get("mod")
    flops = mod["flops"] if mod is not None else counters["flops"]
    out.append(
        rec("flops_temporal_linear_per_frame", flops, "FLOP", False, frames,
            detail="matmul FLOPs of the temporal layers' linears per frame, routers included")
    )  # fmt: skip
    share = mod["processed_share"] if mod is not None else 1.0
    more = (
        {
            "per_layer": mod["per_layer"],
            "router_fit_r2": mod["fit_r2"],
            "routers_fitted_on": mod["calibration"],
        }
        if mod is not None
        else {}
    )
    out.append(rec("layer_share_processed", share, "share", None, frames, **more))
    return out
