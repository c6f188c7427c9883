"""How much a quantized LM departs from its full-precision original, teacher-forced.

Free-running streams diverge after the first differing token and then share nothing, so a comparison of
sampled streams mostly measures chaos. Here both models see the SAME token history at every step: the
temporal transformer gets identical inputs (each with its own KV caches, so a compressed cache is measured
too), and the depth transformer is teacher-forced with the reference's greedy tokens. We report the share
of greedy text and audio tokens that agree and the largest logit difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reference_model.lm.kv_cache import StepPositions


@dataclass
class Agreement:
    text: float  # share of steps whose greedy text token agrees
    audio: float  # share of (step, codebook) greedy audio tokens that agree
    max_text_logit_diff: float
    max_audio_logit_diff: float
    steps: int


def _run(lm, tokens: torch.Tensor, audio_in: torch.Tensor | None):
    B, _, T = tokens.shape
    caches = [a.make_cache(B, lm.context, lm.device, lm.dtype) for a in lm.transformer.attentions()]
    text_logits, audio_logits = [], []
    for t in range(T):
        pos = torch.full((B,), t, dtype=torch.long, device=lm.device)
        step = StepPositions(pos, common=t, span=min(t + 1, lm.context))
        step.cos, step.sin = lm.transformer.rope_angles(pos[:, None])
        hidden, text = lm.forward_temporal(tokens[:, :, t : t + 1], step, caches)
        text_logits.append(text)
        if audio_in is None:  # the reference: teacher-force the depformer with its own greedy tokens
            prev, forced = text.argmax(-1), []
            for _ in range(lm.dep_q):
                forced.append(prev)
                logits = lm.depformer_forward_parallel(hidden, torch.stack(forced, dim=1))[:, -1]
                prev = logits.argmax(-1)
            tokens_in = torch.stack(forced, dim=1)
        else:
            tokens_in = audio_in[:, :, t]
        audio_logits.append((lm.depformer_forward_parallel(hidden, tokens_in), tokens_in))
    return torch.stack(text_logits, -1), audio_logits


@torch.no_grad()
def greedy_agreement(lm_ref, lm_test, steps: int = 24, batch: int = 2, seed: int = 0) -> Agreement:
    """Compare ``lm_test`` with ``lm_ref`` over ``steps`` frames of seeded random input tokens."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, lm_ref.text_card, (batch, 1, steps), generator=g)
    audio = torch.randint(0, lm_ref.card, (batch, lm_ref.n_q, steps), generator=g)
    tokens = torch.cat([text, audio], dim=1).to(lm_ref.device)
    ref_text, ref_audio = _run(lm_ref, tokens, None)
    forced = torch.stack([t for _, t in ref_audio], dim=-1)
    test_text, test_audio = _run(lm_test, tokens, forced)
    ra = torch.stack([lg for lg, _ in ref_audio], -1)
    ta = torch.stack([lg for lg, _ in test_audio], -1)
    return Agreement(
        text=float((ref_text.argmax(1) == test_text.argmax(1)).float().mean()),
        audio=float((ra.argmax(2) == ta.argmax(2)).float().mean()),
        max_text_logit_diff=float((ref_text - test_text).abs().max()),
        max_audio_logit_diff=float((ra - ta).abs().max()),
        steps=steps,
    )
