"""``speculative=K``: speculative decoding of the audio tokens (draft K, verify in one parallel pass).

The algorithm lives in :mod:`reference_model.speculative`; this module only swaps the streamer's depth
stage and hangs the counters on it (``streamer.speculative_stats``).
"""

from __future__ import annotations

from . import FlagError, FlagSpec, register

DRAFT_LAYERS = 1  # depth layers the self-draft keeps (of 6 in Moshi 7B, 2 in the tiny preset)
MAX_K = 64


def _parse(value: str | None) -> int:
    k = int(value)  # ValueError -> FlagError with the flag's name, in parse_flags
    if not 1 <= k <= MAX_K:
        raise ValueError(f"K must be an integer in 1..{MAX_K}")
    return k


register(
    FlagSpec(
        name="speculative",
        module=__name__.rsplit(".", 1)[1],
        stage="runtime",
        summary=(
            "speculative decoding of the dep_q audio tokens: a self-draft (the depth transformer cut to its "
            f"first {DRAFT_LAYERS} layer, same heads) proposes K tokens, the full depth transformer checks "
            "them in one teacher-forced pass; greedy output identical to the baseline, sampled output "
            "distributed as the baseline (rejection sampling, same temperature and top-k)"
        ),
        parse=_parse,
        default="4",
    )
)


def apply(duplex, k: int, *, draft_layers: int = DRAFT_LAYERS) -> None:
    from ..speculative import CachedVerifier, SpecStats, TruncatedDraft, speculative_sample

    lm, streamer = duplex.lm, duplex.streamer
    if k > lm.dep_q:
        raise FlagError(
            f"speculative={k}: K must be at most dep_q = {lm.dep_q} (the audio tokens of a frame)"
        )
    try:
        draft = TruncatedDraft(lm, draft_layers, streamer.batch_size)
    except ValueError as exc:
        raise FlagError(f"speculative={k}: {exc}") from None
    stats = SpecStats(k=k)
    verifier = CachedVerifier(lm, streamer.batch_size)

    def depformer_sample(hidden, text_token):
        tokens, logits = speculative_sample(
            hidden,
            text_token,
            n_tokens=lm.dep_q,
            k=k,
            propose=draft.propose,
            parallel_logits=verifier,
            temp=streamer.temp,
            top_k=streamer.top_k,
            stats=stats,
        )
        streamer.last_audio_logits = logits
        return tokens

    streamer.depformer_sample = depformer_sample
    streamer.speculative_stats = stats
    streamer.speculative_draft = draft
